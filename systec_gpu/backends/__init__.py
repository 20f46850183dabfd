"""Code generators and executors of the loop IR: reference (interpreter), numba, triton."""
