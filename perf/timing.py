"""Timing helpers: medians after warm-up on CPU, triton.testing.do_bench on CUDA."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np


def time_cpu(fn: Callable[[], object], repeats: int = 7, budget_s: float = 2.0, warmup: int = 1) -> dict:
    """Median/min/max seconds of `fn` after `warmup` calls (which absorb JIT compile and caches).

    The repeat count shrinks so one measurement stays near `budget_s`; at least 3 runs are kept
    so the median is a median.
    """
    for _ in range(warmup):
        fn()
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    n = int(max(3, min(repeats, budget_s / max(first, 1e-9))))
    times = [first]
    for _ in range(n - 1):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    arr = np.asarray(times)
    return {"median": float(np.median(arr)), "min": float(arr.min()), "max": float(arr.max()), "runs": len(times)}


def time_cuda(fn: Callable[[], object]) -> dict:
    """do_bench quantiles (ms -> s); do_bench flushes L2 between runs, so the matrix comes from HBM."""
    from triton.testing import do_bench

    med, lo, hi = do_bench(fn, quantiles=[0.5, 0.0, 1.0], return_mode="median")
    return {"median": med * 1e-3, "min": lo * 1e-3, "max": hi * 1e-3, "runs": None}


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (platform.processor() is often empty on Linux)."""
    import platform

    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
