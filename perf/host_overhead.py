"""Host time of a repeat kernel call, per backend: what a solver loop pays in Python per call.

    python perf/host_overhead.py [--out DIR] [--repeats N]

Rows (SSYMV `y[i] += A[i,j]*x[j]`, A symmetric):
- numba, 8x8 matrix (kernel time ~0): the end-to-end call `k(A=A, x=x)`, and the generated
  function alone on arguments bound once (numba's dispatch included); the difference is the
  library's own overhead;
- triton with the launch made free (TRITON_INTERPRET=1, the generated kernel replaced by a no-op
  after its first real run): everything the call does on the host but the launch itself;
- each with A a prepared `SymmetricTensor` and with A a scipy CSR matrix (full storage) passed
  again, on an 8x8 and a 10k x 10k matrix (~30 nonzeros per row); the 10k numba row again with
  one numba thread (a parallel kernel on a VM whose cores other jobs share waits on them).
Timings are the median of `--repeats` batches of calls (per-call time of each batch), after a
warm-up; the calls of one row are timed in turn, batch by batch (same-run figures). For the 8x8
matrix, `steps_us_*` time each step of the prepared call alone (see `steps`).
Writes host-overhead-<host>-<date>.json under --out (default perf/results/); `--name` overrides
the file's stem.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("TRITON_INTERPRET", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402

import systec_gpu as sg  # noqa: E402


def interleaved(fns: dict, repeats: int, batch: int) -> tuple[dict, dict]:
    """Median over `repeats` batches of the mean time of one call in the batch (microseconds), for
    several functions, their batches taken in turn (same-run figures on a shared
    machine: a noisy moment hits all of them). Returns (wall-clock medians, CPU-time medians):
    the process's CPU time does not count the moments another process held the core, so on a
    busy machine it is the steadier figure of a single-threaded call's host work (a parallel
    kernel's CPU time counts every thread)."""
    for fn in fns.values():
        for _ in range(batch):
            fn()
    wall, cpu = {k: [] for k in fns}, {k: [] for k in fns}
    for _ in range(repeats):
        for key, fn in fns.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            for _ in range(batch):
                fn()
            cpu[key].append((time.process_time() - start_cpu) / batch)
            wall[key].append((time.perf_counter() - start) / batch)
    return ({k: float(np.median(v)) * 1e6 for k, v in wall.items()},
            {k: float(np.median(v)) * 1e6 for k, v in cpu.items()})


def matrix(n: int, per_row: int, rng) -> sp.csr_matrix:
    a = sp.random(n, n, density=min(1.0, per_row / n / 2), random_state=rng, format="csr")
    return sp.csr_matrix(a + a.T)


class _FreeLaunch:
    """Stands in for a loaded Triton kernel: `kernel[grid](**args)` does nothing."""

    def __getitem__(self, grid):
        return lambda *args, **kwargs: None


def free_triton_launch(kernel):
    """Replace every loaded Triton kernel by a no-op (after its first, real, interpreted run)."""
    from systec_gpu.backends import cache, triton_backend

    for path, module in cache._loaded.items():
        if path.name.startswith("triton_"):
            module.kernel = _FreeLaunch()
    for memo in ("_compiled", "_launch_plan"):  # the in-memory caches hold the kernels they loaded
        if hasattr(triton_backend, memo):
            getattr(triton_backend, memo).cache_clear()
    kernel._launches.clear()  # and so do the kernel's prepared launches


def steps(kernel, backend: str, tensors: dict, repeats: int, batch: int) -> dict:
    """Per-call time of each step of a prepared repeat call (runtime.Launch), each timed alone on
    the same inputs, in microseconds; `call layers` is what the end-to-end call adds to them
    (Kernel.__call__, call_direct, Launch.__call__ and their arguments)."""
    from systec_gpu import inputs, torch_ops

    launch = kernel.launch(backend)
    if not hasattr(launch, "_prepared"):
        return {}  # a tree before prepared calls (this script also times the commit it started from)
    signature_key = inputs.signature_key
    kernel(**tensors)
    kernel(**tensors)
    prepared = launch._prepared[signature_key(launch.plan, tensors, True)]
    args = prepared.bind(tensors)
    prepared.run(args)
    wall, cpu = interleaved({
        "call": lambda: kernel(**tensors),
        "needs_op (autograd/compile test)": lambda: torch_ops.needs_op(tensors),
        "signature_key": lambda: signature_key(launch.plan, tensors, True),
        "PreparedBind (match, bind)": lambda: prepared.bind(tensors),
        "run (backend, specialized)": lambda: prepared.run(args),
        "finish": lambda: prepared.finish(args, False),
    }, repeats, batch)
    for times in (wall, cpu):
        times["call layers (rest)"] = times["call"] - sum(v for k, v in times.items() if k != "call")
    return {"wall": wall, "cpu_time": cpu}


def measure(backend: str, threads: int | None, csr, prepared, x, repeats: int, batch: int) -> dict:
    """One row: the prepared-storage and scipy calls (and numba's generated function alone),
    timed in turn; with `threads`, numba runs with that many threads."""
    import numba

    n = csr.shape[0]
    saved = numba.get_num_threads()
    if threads is not None:
        numba.set_num_threads(threads)
    try:
        kernel = sg.compile("y[i] += A[i,j]*x[j]", symmetric={"A": "full"}, backend=backend)
        expected = csr @ x
        for a in (prepared, csr):
            np.testing.assert_allclose(kernel(A=a, x=x).numpy(), expected, rtol=1e-10, atol=1e-10)
        if backend == "triton":
            free_triton_launch(kernel)
        row = {"backend": backend, "n": n, "nnz": int(csr.nnz), "numba_threads": numba.get_num_threads()}
        fns = {"call_us_SymmetricTensor": lambda k=kernel, a=prepared, v=x: k(A=a, x=v),
               "call_us_scipy": lambda k=kernel, a=csr, v=x: k(A=a, x=v)}
        if backend == "numba":
            from systec_gpu.backends import numba_backend
            from systec_gpu.backends.parameters import argument_values
            from systec_gpu.inputs import bind

            # the generated function alone, on arguments bound once, as the call runs it
            launch = kernel.launch("numba")
            args = bind(launch.loops, kernel.program, {"A": prepared, "x": x}, plan=launch.plan)
            serial = numba_backend.estimated_points(launch.loops, args) < numba_backend.SERIAL_BELOW
            numba_backend._allocate(args, launch.loops, 1 if serial else numba.get_num_threads(), False)
            module, params = numba_backend._launcher(launch.loops)
            function = module.kernel_serial if serial else module.kernel
            values = argument_values(params, args)
            fns["generated_function_us"] = lambda f=function, v=values: f(*v)
        wall, cpu = interleaved(fns, repeats, batch)
        row.update(wall)
        row["scipy_over_prepared"] = row["call_us_scipy"] / row["call_us_SymmetricTensor"]
        if backend == "numba":
            row["overhead_us"] = row["call_us_SymmetricTensor"] - row["generated_function_us"]
        row["cpu_time"] = cpu
        row["cpu_time"]["scipy_over_prepared"] = cpu["call_us_scipy"] / cpu["call_us_SymmetricTensor"]
        if backend == "numba":
            row["cpu_time"]["overhead_us"] = cpu["call_us_SymmetricTensor"] - cpu["generated_function_us"]
        if n <= 8:
            row["steps_us_SymmetricTensor"] = steps(kernel, backend, {"A": prepared, "x": x}, repeats, batch)
            row["steps_us_scipy"] = steps(kernel, backend, {"A": csr, "x": x}, repeats, batch)
        return row
    finally:
        numba.set_num_threads(saved)


def run(repeats: int) -> dict:
    rng = np.random.default_rng(0)
    rows = []
    for n, per_row in ((8, 8), (10_000, 30)):
        csr = matrix(n, per_row, rng)
        prepared = sg.SymmetricTensor.from_coo(np.vstack(csr.nonzero()), csr.data, csr.shape)
        x = rng.uniform(-1, 1, n)
        variants = [("numba", None), ("triton", None)]
        if n > 8:
            variants.insert(1, ("numba", 1))  # one thread: no parallel kernel to share the VM's cores
        for backend, threads in variants:
            rows.append(measure(backend, threads, csr, prepared, x, repeats, 2000 if n <= 8 else 20))
            print(json.dumps(rows[-1]))
    return {"rows": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--name", default=None, help="file stem (default host-overhead-<host>-<date>)")
    args = parser.parse_args(argv)
    result = run(args.repeats)
    result["machine"] = {"host": platform.node(), "cpu": platform.processor() or platform.machine(),
                         "cores": os.cpu_count(), "python": platform.python_version(),
                         "load_average": os.getloadavg()}
    result["date"] = datetime.date.today().isoformat()
    stem = args.name or f"host-overhead-{platform.node() or 'host'}-{result['date']}"
    out = Path(args.out) / f"{stem}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
