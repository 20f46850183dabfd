"""Sparse symmetric output benchmark: C = A·Aᵀ as canonical nonzeros vs scipy and torch.sparse.

    /work/main/.venv/bin/python perf/spgemm.py [--data ../shared/data] [--rounds 7] [--quick]

The kernel: `sg.compile("C[i,j] += A[i,k]*A[j,k]", formats={"C": "coo"}, backend="numba")`, which
returns a SymmetricTensor of C's canonical nonzeros (i <= j), rows in order and columns sorted.
Peers: scipy `A @ A.T` (CSR, one thread, both halves, columns unsorted) and torch.sparse CSR
`A @ Aᵀ` (MKL, all threads, both halves). Four costs of ours are timed:

- new_matrix: a new storage object every call: coordinate validation (storage.check_coordinates),
  the CSR/CSC structure of A, the symbolic phase (count per row) and the numeric phase (fill);
- cold: A validated, its CSR/CSC structure dropped: structure + symbolic + numeric;
- first_product: A's structure cached (it belongs to A's storage), the output structure found
  again: symbolic + numeric, the kernel proper on a new sparsity pattern;
- repeat: the output structure kept from an earlier call on the same A structure (new values):
  the numeric phase alone, e.g. A·diag(d)·Aᵀ in every iteration of an interior-point method.

Each configuration runs with 1 thread and with all threads. The kernels and the peers are timed
round-robin (one run of each per round) and each round's ratio peer/ours is kept: the reported
ratio is the median of those same-round ratios (wall clock; process CPU time is recorded too, a
steadier measure of one-thread runs on a loaded machine). Before timing, ours is checked against
scipy.
Writes perf/results/spgemm-<host>-<date>.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "perf"))

from timing import cpu_model  # noqa: E402

import systec_gpu as sg  # noqa: E402
from systec_gpu.spgemm import gram_structure  # noqa: E402
from systec_gpu.storage import SparseTensor  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data"
# (file, rows kept: None = all) -- A is the full (expanded) matrix, or its first rows
MATRICES = [("bcsstk16.mtx.gz", None), ("EX5.mtx.gz", None), ("Q25FV47_P.mtx.gz", None),
            ("CVXQP3_L_P.mtx.gz", None), ("mdual.mtx.gz", None), ("G3_circuit.mtx.gz", 600_000)]


def load_rows(path: Path, rows: int | None) -> sp.csr_matrix:
    tensor = sg.load(path)
    if hasattr(tensor, "expanded"):
        tensor = tensor.expanded()
    idx, vals = tensor.indices, np.asarray(tensor.values, dtype=np.float64)
    shape = tensor.shape
    if rows is not None:
        keep = idx[0] < rows
        idx, vals, shape = idx[:, keep], vals[keep], (rows, shape[1])
    return sp.csr_matrix((vals, (idx[0], idx[1])), shape=shape)


def counts(a: sp.csr_matrix, structure) -> dict:
    """Operation and byte counts of ours and of the peer's computation."""
    full = a @ a.T
    canonical = int(sp.triu(full).nnz)
    return {
        "rows": a.shape[0], "cols": a.shape[1], "nnz": int(a.nnz),
        "products_full": structure.full_products, "products_canonical": structure.products,
        "output_nnz_full": int(full.nnz), "output_nnz_canonical": canonical,
        # written output: ours COO int64 row + col + float64 value; scipy CSR int32 col + float64 value
        "output_bytes_ours": canonical * 24, "output_bytes_scipy": int(full.nnz) * 12,
    }


def interleaved(functions: dict, rounds: int) -> tuple[dict, dict]:
    """Wall and process CPU times of each function, one run of each per round after a warm-up round."""
    for fn in functions.values():
        fn()
    wall = {name: [] for name in functions}
    cpu = {name: [] for name in functions}
    for _ in range(rounds):
        for name, fn in functions.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            fn()
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    return wall, cpu


def run_matrix(path: Path, rows: int | None, rounds: int, threads_list: list[int]) -> dict:
    import numba
    import torch

    a = load_rows(path, rows)
    a.sort_indices()
    coo = a.tocoo()
    indices = np.vstack([coo.row, coo.col]).astype(np.int64)
    order = np.lexsort((indices[1], indices[0]))
    indices, values = np.ascontiguousarray(indices[:, order]), np.ascontiguousarray(coo.data[order])
    kernel = sg.compile("C[i,j] += A[i,k]*A[j,k]", formats={"C": "coo"}, backend="numba")
    base = SparseTensor(indices, values, a.shape, check=False)
    structure = gram_structure(base, False)
    info = {"matrix": path.name.removesuffix(".mtx.gz"), **counts(a, structure)}

    got = kernel(A=base)  # correctness before timing
    want = sp.triu(a @ a.T).tocoo()
    dense_diff = abs(sp.coo_matrix((np.asarray(got.values), tuple(got.indices)), shape=got.shape) - want)
    info["max_abs_error_vs_scipy"] = float(dense_diff.max()) if dense_diff.nnz else 0.0
    info["max_abs_value"] = float(abs(want).max())
    assert info["max_abs_error_vs_scipy"] <= 1e-9 * max(info["max_abs_value"], 1.0), info

    rng = np.random.default_rng(0)
    new_values = base.with_values(rng.uniform(0.5, 1.5, values.shape[0]) * values)

    def new_matrix():
        kernel(A=SparseTensor(indices, values, a.shape, check=False))

    def cold():
        base._cache.pop(("gram_structure", False), None)
        kernel(A=base)

    def first_product():
        gram_structure(base, False)
        structure.outputs.pop("numba", None)  # the output structure: found again by the symbolic phase
        structure.outputs.pop("tensor", None)
        kernel(A=base)

    def repeat():
        kernel(A=new_values)

    torch_a = torch.sparse_csr_tensor(torch.from_numpy(a.indptr.astype(np.int64)),
                                      torch.from_numpy(a.indices.astype(np.int64)), torch.from_numpy(a.data),
                                      size=a.shape)

    def torch_peer():
        torch_a @ torch_a.t().to_sparse_csr()

    def scipy_peer():
        a @ a.T

    info["runs"] = {}
    for threads in threads_list:
        numba.set_num_threads(threads)
        wall, cpu = interleaved({"ours_new_matrix": new_matrix, "ours_cold": cold, "ours_first_product": first_product,
                                 "ours_repeat": repeat, "scipy": scipy_peer, "torch_sparse": torch_peer}, rounds)
        result = {name: {"median_s": statistics.median(t), "min_s": min(t), "max_s": max(t),
                         "cpu_median_s": statistics.median(cpu[name])} for name, t in wall.items()}
        for ours in OURS:
            for peer in ("scipy", "torch_sparse"):
                ratios = [p / o for p, o in zip(wall[peer], wall[ours], strict=True)]
                result[f"{peer}_over_{ours}"] = statistics.median(ratios)
                ratios = [p / o for p, o in zip(cpu[peer], cpu[ours], strict=True)]
                result[f"cpu_{peer}_over_{ours}"] = statistics.median(ratios)
        info["runs"][f"threads={threads}"] = result
    return info


OURS = ("ours_new_matrix", "ours_cold", "ours_first_product", "ours_repeat")


def table(results: list[dict]) -> str:
    lines = ["| matrix | nnz(A) | products full / canonical | threads | ours new / cold / first / repeat (ms) "
             "| scipy (ms) | torch (ms) | scipy ÷ ours new / cold / first / repeat | same, CPU time | torch ÷ ours "
             "first / repeat |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        for threads, run in r["runs"].items():
            ms = " / ".join(f"{run[k]['median_s'] * 1e3:.1f}" for k in OURS)
            wall = " / ".join(f"{run[f'scipy_over_{k}']:.2f}" for k in OURS)
            cpu = " / ".join(f"{run[f'cpu_scipy_over_{k}']:.2f}" for k in OURS)
            lines.append(
                f"| {r['matrix']} | {r['nnz']} | {r['products_full']} / {r['products_canonical']} | "
                f"{threads.split('=')[1]} | {ms} | {run['scipy']['median_s'] * 1e3:.1f} | "
                f"{run['torch_sparse']['median_s'] * 1e3:.1f} | {wall} | {cpu} | "
                f"{run['torch_sparse_over_ours_first_product']:.2f} / {run['torch_sparse_over_ours_repeat']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="two small matrices, 3 rounds")
    parser.add_argument("--out", type=Path, default=ROOT / "perf" / "results")
    args = parser.parse_args()
    import numba

    matrices = MATRICES[:2] if args.quick else MATRICES
    rounds = 3 if args.quick else args.rounds
    threads_list = sorted({1, numba.get_num_threads()})
    load_before = os.getloadavg()
    results = []
    for name, rows in matrices:
        path = args.data / name
        if not path.exists():
            print(f"skipping {name}: not in {args.data}", file=sys.stderr)
            continue
        results.append(run_matrix(path, rows, rounds, threads_list))
        print(table(results[-1:]).splitlines()[-len(threads_list):][0], file=sys.stderr)
    machine = {"host": platform.node(), "cpu": cpu_model(), "cores": os.cpu_count(),
               "numba_threads": threads_list[-1], "python": platform.python_version(),
               "load_average_before": load_before, "load_average_after": os.getloadavg(),
               "note": "shared VM: other processes ran during the measurements; ratios are same-round medians"}
    out = {"benchmark": "sparse symmetric SSYRK C = A·Aᵀ (canonical nonzeros)", "machine": machine,
           "date": datetime.date.today().isoformat(), "rounds": rounds, "results": results}
    args.out.mkdir(parents=True, exist_ok=True)
    target = args.out / f"spgemm-{platform.node() or 'host'}-{out['date']}.json"
    target.write_text(json.dumps(out, indent=1))
    print(table(results))
    print(f"\nwrote {target}")


if __name__ == "__main__":
    main()
