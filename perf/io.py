"""Load-time and peak-memory benchmark of systec_gpu.io against the usual readers.

Every (file, method) measurement runs in a fresh subprocess, so peak memory is that method's
alone: ``rss`` = peak resident set size minus the resident size just before the load (after
imports), ``traced`` = tracemalloc's peak (numpy buffers and Python objects, not fmm's C++
buffers) in a separate run. Timings are taken round-robin over the methods so that a noisy
machine hurts all methods alike: each round starts one subprocess per method that loads the file
three times; the first load is "cold" (a fresh process), the others "warm". The table shows
medians over the rounds (after one discarded round that warms the page cache).

    /work/venv/bin/python perf/io.py [--rounds 5] [--data ../shared/data]

Writes perf/results/io-<host>-<date>.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data"
FILES = ["G3_circuit.mtx.gz", "tags-math-sx_sym4.tns.gz", "threads-math-sx_sym3.tns.gz"]


# ----------------------------------------------------------------------------- methods
def _ours(path: str):
    import systec_gpu.io as sio

    return sio.load(path)


def _ours_general(path: str):
    import systec_gpu.io as sio

    return sio.load(path, symmetric=False)


def _fmm_read_coo(path: str):
    import fast_matrix_market as fmm

    return fmm.read_coo(path)  # generalize_symmetry=True: both triangles


def _fmm_read_coo_triangle(path: str):
    import fast_matrix_market as fmm

    return fmm.read_coo(path, generalize_symmetry=False)  # raw parse, no checks, one triangle


def _fmm_mmread(path: str):
    import fast_matrix_market as fmm

    return fmm.mmread(path)


def _scipy_mmread(path: str):
    import scipy.io

    return scipy.io.mmread(path)


def _np_loadtxt(path: str):
    import numpy as np

    return np.loadtxt(path)


def _np_fromstring(path: str):
    import gzip

    import numpy as np

    with gzip.open(path, "rb") as f:  # naive: all fields as float64, no validation at all
        raw = f.read()
    first = raw[: raw.index(b"\n")].split()
    return np.fromstring(raw, dtype=np.float64, sep=" ").reshape(-1, len(first))


METHODS = {
    "mtx": {
        "systec_gpu.io.load": _ours,
        "fmm.read_coo": _fmm_read_coo,
        "fmm.mmread": _fmm_mmread,
        "scipy.io.mmread": _scipy_mmread,
        "fmm.read_coo(triangle)": _fmm_read_coo_triangle,
    },
    "tns": {
        "systec_gpu.io.load": _ours,
        "systec_gpu.io.load(symmetric=False)": _ours_general,
        "np.fromstring(naive)": _np_fromstring,
        "np.loadtxt": _np_loadtxt,
    },
}


def _kind(path: str) -> str:
    return "mtx" if ".mtx" in path else "tns"


def _describe(out) -> str:
    if hasattr(out, "nnz") and hasattr(out, "shape"):
        if "systec" in type(out).__module__:
            return repr(out)
        return f"{type(out).__name__} nnz={out.nnz}"
    if isinstance(out, tuple):  # fmm triplet
        return f"COO triplet, {len(out[0][0])} entries"
    return f"array {getattr(out, 'shape', '?')}"


def _current_rss_kb() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() // 1024


# ----------------------------------------------------------------------------- worker
def worker(method: str, path: str, mode: str) -> None:
    fn = METHODS[_kind(path)][method]
    import fast_matrix_market  # noqa: F401 - imports are not part of a load
    import numpy  # noqa: F401
    import scipy.io  # noqa: F401
    import scipy.sparse  # noqa: F401

    import systec_gpu.io  # noqa: F401

    if mode.startswith("time"):
        times, described = [], ""
        for _ in range(int(mode[4:] or 1)):
            t0 = time.perf_counter()
            out = fn(path)
            times.append(time.perf_counter() - t0)
            described = described or _describe(out)
            del out  # not held across loads: each load starts from the same memory state
        result = {"seconds": times, "result": described}
    elif mode == "rss":
        before = _current_rss_kb()
        fn(path)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
        result = {"rss_peak_mb": (peak - before) / 1024}
    else:
        tracemalloc.start()
        fn(path)
        result = {"traced_peak_mb": tracemalloc.get_traced_memory()[1] / 2**20}
    print(json.dumps(result))


def run_worker(method: str, path: Path, mode: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--worker", method, str(path), mode],
                         capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(*args.worker)
        return
    started = time.time()
    results: dict[str, dict] = {}
    for name in FILES:
        path = args.data / name
        if not path.is_file():
            print(f"skip {name}: not found in {args.data}")
            continue
        methods = list(METHODS[_kind(name)])
        cold: dict[str, list[float]] = {m: [] for m in methods}
        warm: dict[str, list[float]] = {m: [] for m in methods}
        described: dict[str, str] = {}
        for r in range(args.rounds + 1):  # round 0 warms the page cache and is discarded
            for m in methods:
                slow = m == "np.loadtxt"  # ~10x slower than the rest: fewer loads suffice
                if slow and r > 2:
                    continue
                res = run_worker(m, path, "time1" if slow else "time3")
                described[m] = res["result"]
                if r:
                    cold[m].append(res["seconds"][0])
                    warm[m] += res["seconds"][1:]
        rows = {}
        for m in methods:
            mem = run_worker(m, path, "rss") | run_worker(m, path, "traced")
            rows[m] = {"cold_median_s": statistics.median(cold[m]),
                       "warm_median_s": statistics.median(warm[m] or cold[m]),
                       "min_s": min(cold[m] + warm[m]), "cold_s": cold[m], "warm_s": warm[m],
                       "result": described[m], **mem}
        results[name] = rows
        _print_table(name, rows)
    meta = {
        "host": platform.node(),
        "cpu": _cpu_model(),
        "cores": _cores(),
        "date": datetime.date.today().isoformat(),
        "python": platform.python_version(),
        "versions": _versions(),
        "git_commit": _git_commit(),
        "rounds": args.rounds,
        "elapsed_s": time.time() - started,
        "method": "round-robin over methods, one subprocess per method per round loading 3 "
                  "times (cold = first load in the process, warm = the others), medians; rss = "
                  "peak RSS minus RSS before the load; traced = tracemalloc peak (numpy and "
                  "Python allocations; excludes fmm's C++ buffers)",
    }
    out = ROOT / "perf" / "results" / f"io-{meta['host']}-{meta['date']}.json"
    out.write_text(json.dumps({"meta": meta, "results": results}, indent=1) + "\n")
    print(f"\nwrote {out.relative_to(ROOT)}")


def _print_table(name: str, rows: dict[str, dict]) -> None:
    print(f"\n{name}")
    head = (f"{'method':36s} {'cold s':>7s} {'warm s':>7s} {'min s':>7s} {'rss MB':>7s} "
            f"{'traced MB':>9s}")
    print(f"  {head}  result")
    for m, r in rows.items():
        print(f"  {m:36s} {r['cold_median_s']:7.3f} {r['warm_median_s']:7.3f} {r['min_s']:7.3f} "
              f"{r['rss_peak_mb']:7.1f} {r['traced_peak_mb']:9.1f}  {r['result']}")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _cores() -> int:
    import os

    return len(os.sched_getaffinity(0))


def _versions() -> dict[str, str]:
    import fast_matrix_market
    import numpy
    import scipy

    return {"numpy": numpy.__version__, "scipy": scipy.__version__,
            "fast_matrix_market": fast_matrix_market.__version__}


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                              cwd=ROOT, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


if __name__ == "__main__":
    main()
