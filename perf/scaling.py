"""Storage that scales: time and peak memory of building and first-call work against size.

Every (tree, operation, size) runs in a fresh subprocess (so that one measurement's freed
memory and caches do not flatter the next) with `PYTHONPATH` set to the tree under test, so a
baseline checkout (`--tree before=/path/to/main`) and this one (`--tree after=.`) are measured
in the same run, interleaved size by size. Inputs are made before measuring. Per measurement:

- `time_s`: median wall time of `repeats` runs (1 at 1e7 entries and above);
- `peak_bytes`: tracemalloc's peak over one more run: every numpy buffer the operation
  allocates, its result included (numpy reports its buffers to tracemalloc); the inputs are
  allocated before tracing starts. torch buffers are not traced: the `*_torch` operations
  report `rss_delta_bytes`, the growth of the process's peak RSS (ru_maxrss) over its RSS
  before the operation, instead;
- `raw_bytes`: the coordinates (int64) and values (float64) the operation is given, or for the
  first-call operations the canonical storage's; ratios are against it.

Operations: `coo` (SparseTensor.from_coo, shuffled, ~1% duplicates), `sym_full` (SymmetricTensor
.from_coo of both triangles, shuffled, checked), `sym_one` (one arrangement per entry, shuffled),
`sym3_one` (3-D), `dense` (SymmetricTensor.from_dense of a dense symmetric matrix at density 0.5;
the peer `np.nonzero(np.triu(a))` is timed in the same process), `first_ssymv` (the first
symmetric SSYMV call's driver: kernel coordinates and pointers; against a repeat call),
`expand_ssymv` / `expand_mttkrp3` (the first `symmetry=False` call's expanded driver, against a
repeat call), `save_gz` (io.save of a symmetric matrix as .mtx.gz, against a plain .mtx write),
`coo_torch` / `sym_full_torch` (the same builds from CPU torch tensors).

Sizes count canonical nonzeros (`n`). Log-log slopes of time and peak against `n` are fitted
over the sizes from 1e5 up. Results: `perf/results/scaling-<host>-<date>.json` and a markdown
table on stdout.

    python perf/scaling.py --tree before=/work/main --tree after=.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

SIZES = (10_000, 100_000, 1_000_000, 10_000_000, 30_000_000)
# The largest size each operation runs at on a 23 GiB machine (the baseline's peaks set them).
CAPS = {"expand_mttkrp3": 10_000_000, "save_gz": 3_000_000, "sym3_one": 10_000_000}
OPS = ("coo", "sym_full", "sym_one", "sym3_one", "dense", "first_ssymv", "expand_ssymv", "expand_mttkrp3",
       "save_gz", "coo_torch", "sym_full_torch")


# ----------------------------------------------------------------------------- inputs
def canonical_pairs(n: int, rng) -> tuple[np.ndarray, int]:
    """n distinct canonical (i <= j) coordinates of a matrix with about 8 per row, sorted."""
    side = max(n // 8, 16)
    keys = np.unique(rng.integers(0, side * side, int(n * 1.3) + 64))
    rows, cols = np.divmod(keys, side)
    pairs = np.unique(np.minimum(rows, cols) * side + np.maximum(rows, cols))[:n]
    rng.shuffle(pairs)
    pairs = np.sort(pairs[:n])
    return np.stack(np.divmod(pairs, side)), side


def canonical_triples(n: int, rng) -> tuple[np.ndarray, int]:
    side = max(int(round((6 * n) ** (1 / 3) * 4)), 16)
    triples = np.sort(rng.integers(0, side, (3, int(n * 1.3) + 64)), axis=0)
    keys = np.unique(triples.T @ np.array([side * side, side, 1]))
    keys = np.sort(rng.permutation(keys)[:n])
    i, rest = np.divmod(keys, side * side)
    return np.stack([i, *np.divmod(rest, side)]), side


def storage(ndim: int, n: int, rng):
    from systec_gpu.storage import SymmetricTensor

    coords, side = canonical_pairs(n, rng) if ndim == 2 else canonical_triples(n, rng)
    return SymmetricTensor(coords, rng.uniform(0.5, 2.0, coords.shape[1]), (side,) * ndim, check=False)


def operation(op: str, n: int, rng):
    """(the operation, raw bytes, extras: name -> a second operation timed beside it)."""
    from systec_gpu.storage import SparseTensor, SymmetricTensor

    if op in ("coo", "coo_torch"):
        coords, side = canonical_pairs(n, rng)
        dup = rng.integers(0, coords.shape[1], coords.shape[1] // 100)
        idx = np.concatenate([coords, coords[::-1], coords[:, dup]], axis=1)[:, : n]
        idx = np.ascontiguousarray(idx[:, rng.permutation(idx.shape[1])])
        vals = rng.uniform(0.5, 2.0, idx.shape[1])
        if op == "coo_torch":
            import torch

            idx, vals = torch.from_numpy(idx), torch.from_numpy(vals)
        return (lambda: SparseTensor.from_coo(idx, vals, (side, side))), 24 * n, {}
    if op in ("sym_full", "sym_full_torch", "sym_one", "sym3_one"):
        ndim = 3 if op == "sym3_one" else 2
        coords, side = canonical_pairs(n, rng) if ndim == 2 else canonical_triples(n, rng)
        values = rng.uniform(0.5, 2.0, coords.shape[1])
        if op.startswith("sym_full"):
            off = coords[0] != coords[1]
            idx = np.concatenate([coords, coords[::-1, off]], axis=1)
            vals = np.concatenate([values, values[off]])
        else:
            idx = np.take_along_axis(coords, np.argsort(rng.random(coords.shape), axis=0), axis=0)  # any arrangement
            vals = values
        order = rng.permutation(idx.shape[1])
        idx, vals = np.ascontiguousarray(idx[:, order]), vals[order]
        stored = "full" if op.startswith("sym_full") else "one"
        if op == "sym_full_torch":
            import torch

            idx, vals = torch.from_numpy(idx), torch.from_numpy(vals)
        raw = idx.shape[1] * (8 * ndim + 8)
        return (lambda: SymmetricTensor.from_coo(idx, vals, (side,) * ndim, stored=stored)), raw, {}
    if op == "dense":
        side = int(math.sqrt(4 * n))  # canonical nonzeros of a half-full symmetric matrix: about side**2 / 4
        a = rng.uniform(0.5, 2.0, (side, side))
        a[rng.random((side, side)) < 0.5] = 0.0
        a = np.triu(a) + np.triu(a, 1).T
        return (lambda: SymmetricTensor.from_dense(a)), a.nbytes, {"peer_triu_nonzero": lambda: np.nonzero(np.triu(a))}
    if op in ("first_ssymv", "expand_ssymv", "expand_mttkrp3"):
        from systec_gpu.formats import COO, CSR
        from systec_gpu.inputs import driver_arrays

        ndim = 3 if op == "expand_mttkrp3" else 2
        fmt = COO if ndim == 3 else CSR
        expanded = op.startswith("expand")
        t = storage(ndim, n, rng)
        raw = t.nnz * (8 * ndim + 8)

        def first():
            t._cache.clear()  # a new structure: what the first call builds
            driver = driver_arrays("A", t, expanded, fmt, np.dtype(np.float64))
            # the coordinates a Numba kernel reads (CSR: the pointers and the columns)
            return driver, [driver.coords[m] for m in range(1 if fmt.row_pointers else 0, ndim)]

        def repeat():
            return driver_arrays("A", t, expanded, fmt, np.dtype(np.float64))

        return first, raw, {"repeat_call": repeat}
    if op == "save_gz":
        from systec_gpu.io import save

        t = storage(2, n, rng)
        folder = tempfile.mkdtemp()
        return (lambda: save(os.path.join(folder, "a.mtx.gz"), t)), t.nnz * 24, \
            {"plain_write": lambda: save(os.path.join(folder, "a.mtx"), t)}
    raise ValueError(f"unknown operation {op}")


# ----------------------------------------------------------------------------- measuring
def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def measure(op: str, n: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    run, raw, extras = operation(op, n, rng)
    repeats = 5 if n <= 100_000 else 3 if n <= 1_000_000 else 1
    if op.endswith("_torch"):
        import torch

        # One thread: on this shared 2-core VM torch's two OpenMP threads make every
        # elementwise op ~40x slower than one thread (spin-waiting on a loaded machine).
        torch.set_num_threads(1)
        before = _rss()
        run()
        rss_delta = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    else:
        run() if repeats > 1 else None  # warm-up (imports, first-touch of code paths)
    times = {}
    for name, fn in {"time_s": run, **extras}.items():
        samples = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - start)
        times[name] = statistics.median(samples)
    row = {"op": op, "n": n, "raw_bytes": raw, **times}
    if op.endswith("_torch"):
        row["rss_delta_bytes"] = rss_delta
        row["rss_ratio"] = rss_delta / raw
    else:
        tracemalloc.start()
        run()
        row["peak_bytes"] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        row["peak_ratio"] = row["peak_bytes"] / raw
    for name in extras:
        row[f"ratio_to_{name}"] = row["time_s"] / row[name]
    return row


def machine() -> dict:
    cpuinfo, meminfo = Path("/proc/cpuinfo").read_text(), Path("/proc/meminfo").read_text()
    cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")), "?")
    mem = next((int(line.split()[1]) * 1024 for line in meminfo.splitlines() if line.startswith("MemTotal")), 0)
    import torch

    return {"host": platform.node(), "cpu": cpu, "cores": os.cpu_count(), "memory_bytes": mem,
            "python": platform.python_version(), "numpy": np.__version__, "torch": torch.__version__,
            "note": "shared 2-core VM: other jobs ran at the same time; timings are noisy, peaks are not"}


def slopes(rows: list[dict]) -> dict:
    out = {}
    for key in sorted({(r["tree"], r["op"]) for r in rows}):
        pts = [r for r in rows if (r["tree"], r["op"]) == key and r["n"] >= 100_000]
        if len(pts) < 2:
            continue
        x = np.log([r["n"] for r in pts])
        fit = {"time": float(np.polyfit(x, np.log([r["time_s"] for r in pts]), 1)[0])}
        memory = "peak_bytes" if "peak_bytes" in pts[0] else "rss_delta_bytes"
        if all(r[memory] > 0 for r in pts):
            fit["memory"] = float(np.polyfit(x, np.log([r[memory] for r in pts]), 1)[0])
        out[f"{key[0]}:{key[1]}"] = fit
    return out


def table(rows: list[dict]) -> str:
    lines = ["| op | n | tree | time (s) | peak / raw | vs peer |", "|---|---|---|---|---|---|"]
    for r in rows:
        ratio = r.get("peak_ratio", r.get("rss_ratio"))
        peer = ", ".join(f"{k.removeprefix('ratio_to_')} {v:.2f}x" for k, v in r.items() if k.startswith("ratio_to_"))
        lines.append(f"| {r['op']} | {r['n']:.0e} | {r['tree']} | {r['time_s']:.4g} | {ratio:.2f} | {peer} |")
    return "\n".join(lines)


def write(out: str | None, trees: dict, rows: list[dict]) -> dict:
    result = {"machine": machine(), "date": datetime.date.today().isoformat(), "trees": trees,
              "method": __doc__, "results": rows, "loglog_slopes": slopes(rows)}
    out = out or Path(__file__).parent / "results" / f"scaling-{platform.node()}-{result['date']}.json"
    Path(out).write_text(json.dumps(result, indent=1))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", action="append", default=[], help="label=path of a checkout (repeatable)")
    parser.add_argument("--ops", default=",".join(OPS))
    parser.add_argument("--sizes", default=",".join(str(s) for s in SIZES))
    parser.add_argument("--out", default=None)
    parser.add_argument("--child", nargs=3, metavar=("OP", "N", "SEED"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child[0], int(args.child[1]), int(args.child[2]))))
        return
    trees = dict(t.split("=", 1) for t in args.tree) or {"this": str(Path(__file__).resolve().parents[1])}
    rows = []
    for op in args.ops.split(","):
        for n in (int(float(s)) for s in args.sizes.split(",")):
            if n > CAPS.get(op, n):
                continue
            for label, tree in trees.items():  # interleaved: the trees see the same machine state
                env = {**os.environ, "PYTHONPATH": str(Path(tree).resolve())}
                done = subprocess.run([sys.executable, __file__, "--child", op, str(n), "0"], env=env,
                                      capture_output=True, text=True, cwd=str(Path(tree).resolve()))
                if done.returncode != 0:
                    print(f"{label} {op} {n}: failed\n{done.stderr[-2000:]}", file=sys.stderr)
                    continue
                row = {"tree": label, **json.loads(done.stdout.strip().splitlines()[-1])}
                rows.append(row)
                print(table([row]).splitlines()[-1], flush=True)
                write(args.out, trees, rows)  # after every measurement: a cut run keeps its rows
    result = write(args.out, trees, rows)
    print(table(rows))
    print(json.dumps(result["loglog_slopes"], indent=1))


if __name__ == "__main__":
    main()
