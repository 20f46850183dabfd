"""systec_gpu: a compiler for einsums over sparse and symmetric tensors."""

__version__ = "0.1.0"
