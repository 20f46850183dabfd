"""CPU benchmark (issue 2 item 10): symmetric vs symmetry=False Numba kernels, same run.

    python perf/cpu.py [--data DIR] [--quick] [--out perf/results]

For every catalog kernel on real data (../shared/data) and on generated tensors it times the
symmetric Numba kernel and the symmetry=False Numba kernel of the same expression, single-threaded
(numba.set_num_threads(1)) and on all cores, plus scipy's CSR SpMV of the full matrix beside SSYMV.
Times are medians of repeated calls after a warm-up call (the warm-up absorbs JIT compilation).
Writes perf/results/cpu-<host>-<date>.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import socket
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import datasets  # noqa: E402
from timing import cpu_model, time_cpu  # noqa: E402

import systec_gpu as sg  # noqa: E402
from systec_gpu.backends.numba_backend import run_numba  # noqa: E402
from systec_gpu.catalog import compile_catalog  # noqa: E402
from systec_gpu.runtime import bind  # noqa: E402

# SySTeC paper (CGO 2025), single core, symmetric over non-symmetric Finch kernel.
PAPER_TARGETS = {"ssymv": 1.4, "syprd": 1.9, "ttm": 1.3, "mttkrp3": 2.5, "mttkrp4": 5.0, "mttkrp5": 13.0}
SCIPY_TARGET = 1.3  # SSYMV over scipy CSR on FEM matrices, all cores


def _rng_dense(shape: tuple[int, ...], seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).random(shape)


def build_inputs(kernel: str, t, rank: int) -> dict:
    """Kernel inputs around the symmetric (or, for ssyrk, dense) tensor `t`."""
    if kernel == "ssyrk":
        return {"A": t}
    n = t.shape[0]
    if kernel in ("ssymv", "syprd", "bellman"):
        return {"A": t, "x": _rng_dense((n,))}
    if kernel == "ssymm":
        return {"A": t, "X": _rng_dense((n, rank))}
    return {"A": t, "B": _rng_dense((n, rank))}


def cases(data_dir: Path, quick: bool) -> list[tuple[str, str, object, int]]:
    """(kernel, data label, tensor loader, rank) in run order; loaders are lazy to bound memory."""
    fem = ["bcsstk16", "EX5", "Q25FV47_P"]
    graphs = [] if quick else ["G3_circuit", "mdual"]
    out: list[tuple[str, str, object, int]] = []

    def real(stem: str):
        return lambda: datasets.load(datasets.find_file(data_dir, stem))

    for stem in fem + graphs:
        for k in ("ssymv", "syprd", "ssymm", "bellman"):
            if k == "ssymm" and stem in graphs:
                continue  # keep the run under ~10 minutes on 2 cores
            out.append((k, stem, real(stem), 16))
    out.append(("ssymv", "gen n=200k 32/row", lambda: datasets.random_symmetric_matrix(200_000, 32, seed=3), 0))
    out.append(("ssyrk", "dense 1500x64", lambda: datasets.dense_matrix(1500, 64), 0))
    out.append(("ttm", "tags-math-sx_sym3", real("tags-math-sx_sym3"), 4))
    out.append(("ttm", "gen3 n=400 nnz=20k", lambda: datasets.random_symmetric(3, 400, 20_000, seed=4), 8))
    out.append(("mttkrp3", "tags-math-sx_sym3", real("tags-math-sx_sym3"), 16))
    if not quick:
        out.append(("mttkrp3", "threads-math-sx_sym3", real("threads-math-sx_sym3"), 16))
    out.append(("mttkrp3", "gen3 n=2000 nnz=100k", lambda: datasets.random_symmetric(3, 2000, 100_000, seed=5), 16))
    out.append(("mttkrp4", "email-Eu_sym4", real("email-Eu_sym4"), 16))
    if not quick:
        out.append(("mttkrp4", "tags-math-sx_sym4", real("tags-math-sx_sym4"), 16))
    out.append(("mttkrp5", "gen5 n=2000 nnz=20k", lambda: datasets.random_symmetric(5, 2000, 20_000, seed=6), 16))
    return out


def _close(a: np.ndarray, b: np.ndarray) -> bool:
    scale = float(np.nanmax(np.abs(b[np.isfinite(b)]))) if np.isfinite(b).any() else 1.0
    return bool(np.allclose(a, b, rtol=1e-6, atol=1e-9 * max(scale, 1.0), equal_nan=True))


def run_case(kernel: str, label: str, t, rank: int, threads: list[int], budget: float) -> list[dict]:
    import numba
    import scipy.sparse as sp

    inputs = build_inputs(kernel, t, rank)
    sym = compile_catalog(kernel, symmetry=True, backend="numba")
    nosym = compile_catalog(kernel, symmetry=False, backend="numba")
    # First calls compile (and cache the driver arrays); they also give the correctness check.
    y_sym = sym(**inputs).numpy()
    y_nosym = nosym(**inputs).numpy()
    ok = _close(y_sym, y_nosym)
    work = sym.stats["work_ratio"]
    csr = None
    if kernel == "ssymv":
        e = t.expanded()
        csr = sp.csr_matrix((np.asarray(e.values), (e.indices[0], e.indices[1])), shape=t.shape)
        ok = ok and _close(csr @ inputs["x"], y_sym)
    # Kernel-only timings: arguments bound once, so the Python binding of each call is excluded.
    sym_args = bind(sym.loops, sym.program, inputs, check=False)
    nosym_args = bind(nosym.loops, nosym.program, inputs, check=False)
    rows = []
    for th in threads:
        numba.set_num_threads(th)
        ts = time_cpu(lambda: sym(check=False, **inputs), budget_s=budget)
        tn = time_cpu(lambda: nosym(check=False, **inputs), budget_s=budget)
        ks = time_cpu(lambda: run_numba(sym.loops, sym_args, threads=th), budget_s=budget)  # noqa: B023
        kn = time_cpu(lambda: run_numba(nosym.loops, nosym_args, threads=th), budget_s=budget)  # noqa: B023
        row = {
            "kernel": kernel, "data": label, "threads": th, "shape": [int(s) for s in np.shape(t)],
            "nnz_canonical": None if kernel == "ssyrk" else int(t.nnz),
            "nnz_expanded": None if kernel == "ssyrk" else int(t.n_expanded),
            "rank": rank, "ok": ok, "work_ratio": work,
            "sym": ts, "nosym": tn, "speedup_vs_nosym": tn["median"] / ts["median"],
            "sym_kernel": ks, "nosym_kernel": kn, "kernel_speedup_vs_nosym": kn["median"] / ks["median"],
            "paper_target": PAPER_TARGETS.get(kernel),
        }
        if csr is not None:
            tsc = time_cpu(lambda: csr @ inputs["x"], budget_s=budget)  # noqa: B023 (used at once)
            row["scipy_csr"] = tsc
            row["speedup_vs_scipy"] = tsc["median"] / ts["median"]
            row["kernel_speedup_vs_scipy"] = tsc["median"] / ks["median"]
            row["bytes_model"] = datasets.bytes_model_spmv(t.shape[0], int(t.n_expanded), int(t.nnz))
        rows.append(row)
    return rows


def markdown(rows: list[dict]) -> str:
    head = ("| kernel | data | nnz canon / expanded | threads | sym ms | nosym ms | sym/nosym | kernel-only | paper | "
            "scipy ms | vs scipy | kernel-only | ok |")
    lines = [head, "|" + "---|" * 13]
    for r in rows:
        nnz = "dense" if r["nnz_canonical"] is None else f"{r['nnz_canonical']:,} / {r['nnz_expanded']:,}"
        sc = r.get("scipy_csr")
        target = "" if r["paper_target"] is None else f"{r['paper_target']}x"
        sc_ms = "" if sc is None else f"{sc['median'] * 1e3:.3f}"
        vs_sc = "" if sc is None else f"{r['speedup_vs_scipy']:.2f}x"
        k_sc = "" if sc is None else f"{r['kernel_speedup_vs_scipy']:.2f}x"
        lines.append(
            f"| {r['kernel']} | {r['data']} | {nnz} | {r['threads']} | {r['sym']['median'] * 1e3:.3f} | "
            f"{r['nosym']['median'] * 1e3:.3f} | {r['speedup_vs_nosym']:.2f}x | {r['kernel_speedup_vs_nosym']:.2f}x | "
            f"{target} | {sc_ms} | {vs_sc} | {k_sc} | "
            f"{'yes' if r['ok'] else 'NO'} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=datasets.default_data_dir())
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    ap.add_argument("--quick", action="store_true", help="skip the large graphs and tensors")
    ap.add_argument("--budget", type=float, default=1.0, help="seconds per timed measurement (about)")
    args = ap.parse_args(argv)
    import numba

    cores = os.cpu_count() or 1
    threads = sorted({1, numba.config.NUMBA_NUM_THREADS, cores})
    rows: list[dict] = []
    t_start = time.time()
    for kernel, label, loader, rank in cases(args.data, args.quick):
        t0 = time.time()
        try:
            t = loader()
        except FileNotFoundError as e:
            print(f"skip {kernel} on {label}: {e}", file=sys.stderr)
            continue
        new = run_case(kernel, label, t, rank, threads, args.budget)
        rows.extend(new)
        for r in new:
            print(f"{kernel:8s} {label:24s} threads={r['threads']} sym={r['sym']['median'] * 1e3:.3f}ms "
                  f"nosym={r['nosym']['median'] * 1e3:.3f}ms x{r['speedup_vs_nosym']:.2f} ok={r['ok']} "
                  f"({time.time() - t0:.1f}s)", file=sys.stderr, flush=True)
    host = socket.gethostname().split(".")[0]
    date = dt.date.today().isoformat()
    meta = {
        "host": host, "date": date, "cpu": cpu_model(), "cores": cores,
        "python": platform.python_version(), "numba": numba.__version__, "numpy": np.__version__,
        "systec_gpu": sg.__version__, "elapsed_s": time.time() - t_start,
        "timing": "median of repeated end-to-end kernel calls (check=False) after one warm-up call",
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"cpu-{host}-{date}.json"
    path.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    print(markdown(rows))
    print(f"\nwrote {path}", file=sys.stderr)
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
