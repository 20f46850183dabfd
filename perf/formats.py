"""COO vs CSF drivers on real symmetric order-3/4 tensors (Numba, this machine's CPU).

For each tensor of /work/shared/data (hypergraph adjacency tensors, canonical nonzeros) and each
kernel (MTTKRP, TTV-style contractions), the same expression is compiled with
`formats={"A": "coo"}` and `formats={"A": "csf"}`; the two kernels run interleaved (COO, CSF, COO,
...) so that both see the same machine load, and the report gives each one's median, the ratio of
medians and the median of the per-pair ratios (COO time / CSF time: > 1 means CSF is faster), the
structure bytes each reads (COO: one coordinate per mode and nonzero; CSF: one per fiber of each
level plus pointers), which one the default rule picks (formats/choice.py), and the largest
difference between the two results.

    python perf/formats.py [--data DIR] [--pairs 15] [--out perf/results/formats-vm-DATE.json]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

PERF = Path(__file__).resolve().parent
sys.path.insert(0, str(PERF))
sys.path.insert(0, str(PERF.parent))  # this checkout's package, not an installed one

import datasets  # noqa: E402
from timing import cpu_model  # noqa: E402

import systec_gpu as sg  # noqa: E402
from systec_gpu.formats import csf  # noqa: E402
from systec_gpu.formats.choice import read_as  # noqa: E402

TENSORS = (
    "contact-high-school_sym3", "contact-primary-school_sym3", "congress-bills_sym3", "tags-math-sx_sym3",
    "threads-math-sx_sym3", "email-Eu_sym4", "congress-bills_sym4", "tags-math-sx_sym4",
)
RANK = 16
# (name, expression, orders it applies to, largest mode size its output allows)
KERNELS = (
    ("mttkrp", {3: "C[i,r] += A[i,k,l]*B[l,r]*B[k,r]", 4: "C[i,r] += A[i,j,k,l]*B[j,r]*B[k,r]*B[l,r]"}, 1 << 30),
    ("ttv", {3: "y[i,j] += A[i,j,k]*x[k]"}, 4096),
    ("ttv_all_but_one", {3: "y[i] += A[i,j,k]*x[j]*x[k]", 4: "y[i] += A[i,j,k,l]*x[j]*x[k]*x[l]"}, 1 << 30),
)


def _inputs(text: str, tensor, n: int, rng) -> dict:
    inputs = {"A": tensor}
    if "B[" in text:
        inputs["B"] = rng.uniform(-1, 1, (n, RANK))
    if "x[" in text:
        inputs["x"] = rng.uniform(-1, 1, n)
    return inputs


def _timed(kernel, inputs) -> tuple[float, np.ndarray]:
    t0 = time.perf_counter()
    result = kernel(**inputs)
    return time.perf_counter() - t0, result.numpy()


def run_case(name: str, text: str, tensor, pairs: int, rng) -> dict:
    n = tensor.shape[0]
    inputs = _inputs(text, tensor, n, rng)
    kernels = {fmt: sg.compile(text, symmetric={"A": "full"}, formats={"A": fmt}, backend="numba")
               for fmt in ("coo", "csf")}
    default = sg.compile(text, symmetric={"A": "full"}, backend="numba")
    results = {}
    for fmt, kernel in kernels.items():  # warm-up: compile, build the structure (and CSF levels)
        kernel(**inputs)
        _, results[fmt] = _timed(kernel, inputs)
    times = {"coo": [], "csf": []}
    for k in range(pairs):
        order = ("coo", "csf") if k % 2 == 0 else ("csf", "coo")  # alternate who goes first
        for fmt in order:
            seconds, _ = _timed(kernels[fmt], inputs)
            times[fmt].append(seconds)
    default(**inputs)
    driver = default._last.driver
    chosen = "csf" if read_as(default._last_loops, driver) is not default._last_loops else "coo"
    levels = csf.fibers(driver)
    medians = {fmt: float(np.median(t)) for fmt, t in times.items()}
    ratios = np.asarray(times["coo"]) / np.asarray(times["csf"])
    scale = max(1.0, float(np.abs(results["coo"]).max()))
    return {
        "tensor": name,
        "kernel": text,
        "shape": list(tensor.shape),
        "canonical_nnz": int(tensor.nnz),
        "fibers_per_level": [int(len(c)) for c in levels.coords],
        "structure_bytes": {"coo": csf.coo_nbytes(driver), "csf": levels.nbytes()},
        "value_bytes": int(tensor.nnz * 8),
        "default_rule_picks": chosen,
        "seconds": {fmt: {"median": medians[fmt], "min": float(np.min(t)), "max": float(np.max(t)), "runs": len(t)}
                    for fmt, t in times.items()},
        "coo_over_csf_ratio_of_medians": medians["coo"] / medians["csf"],
        "coo_over_csf_median_pair_ratio": float(np.median(ratios)),
        "pair_ratio_min_max": [float(ratios.min()), float(ratios.max())],
        "max_abs_difference_over_scale": float(np.abs(results["coo"] - results["csf"]).max() / scale),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=datasets.default_data_dir())
    parser.add_argument("--pairs", type=int, default=15)
    parser.add_argument("--tensors", default=",".join(TENSORS))
    parser.add_argument("--threads", default="2,1", help="numba thread counts, one pass over every case each")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    import numba

    rng = np.random.default_rng(0)
    rows = []
    tensors = {name: datasets.load(datasets.find_file(args.data, name)) for name in args.tensors.split(",")}
    for threads in (int(t) for t in args.threads.split(",")):
        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
        for name, tensor in tensors.items():
            for kernel, texts, max_extent in KERNELS:
                text = texts.get(tensor.ndim)
                if text is None or tensor.shape[0] > max_extent:
                    continue
                row = run_case(name, text, tensor, args.pairs, rng)
                row["name"] = kernel
                row["numba_threads"] = numba.get_num_threads()
                rows.append(row)
                s = row["seconds"]
                print(f"t={row['numba_threads']} {name:30s} {kernel:16s} nnz={row['canonical_nnz']:8d} bytes coo/csf="
                      f"{row['structure_bytes']['coo'] / row['structure_bytes']['csf']:.2f} "
                      f"coo {s['coo']['median'] * 1e3:8.3f} ms  csf {s['csf']['median'] * 1e3:8.3f} ms  "
                      f"pair ratio {row['coo_over_csf_median_pair_ratio']:.2f} "
                      f"[{row['pair_ratio_min_max'][0]:.2f}, {row['pair_ratio_min_max'][1]:.2f}]  "
                      f"rule: {row['default_rule_picks']}", flush=True)
    report = {
        "what": "COO vs CSF driver, same Numba kernel otherwise; interleaved pairs, same run",
        "date": dt.date.today().isoformat(),
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version(),
                    "note": "shared 2-core VM: other jobs ran at the same time; see each row's pair-ratio spread"},
        "rank": RANK,
        "rows": rows,
    }
    if args.out:
        args.out.write_text(json.dumps(report, indent=1) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
