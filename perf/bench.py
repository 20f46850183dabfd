"""`systec-gpu bench`: the symmetric kernels against their peers, same run, on real and generated data.

    python perf/bench.py [--quick] [--kernels ssymv,mttkrp3] [--data DIR] [--out DIR] [--device cpu|cuda]

For each (catalog kernel, data set) the symmetric kernel runs beside its peers: the symmetry=False
kernel of the same expression everywhere; on CPU scipy.sparse (SpMV, SpMM, SpGEMM) and pydata
`sparse.einsum`; on CUDA torch.sparse (cuSPARSE), cupyx.scipy.sparse when CuPy is installed and
torch.einsum on the dense tensor where it fits. Every peer's result is compared with the symmetric
kernel's (allclose) before it is timed; a peer that disagrees is reported with ok=false, not timed.
CPU times are medians after a warm-up call; CUDA times are triton.testing.do_bench medians.
Writes results.json, results.csv, results.md and speedup plots under <out>/<device>/.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime as dt
import json
import math
import platform
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import datasets  # noqa: E402
import plots  # noqa: E402
from timing import cpu_model, time_cpu, time_cuda  # noqa: E402

import systec_gpu as sg  # noqa: E402
from systec_gpu.catalog import CATALOG, compile_catalog  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
DENSE_LIMIT_BYTES = 2 << 30  # torch.einsum peer only where the dense tensor fits comfortably


@dataclass
class Case:
    kernel: str
    data: str
    load: Callable[[], object]  # -> SymmetricTensor (or a dense array for ssyrk)
    rank: int = 16


def _gen(order: int, n: int, nnz: int, seed: int) -> Callable[[], object]:
    return lambda: datasets.random_symmetric(order, n, nnz, seed=seed)


def plan(data_dir: Path, quick: bool) -> list[Case]:
    """The benchmark matrix: (kernel, data) pairs, small ones under --quick."""
    def real(stem: str) -> Callable[[], object]:
        return lambda: datasets.load(datasets.find_file(data_dir, stem))

    if quick:
        mats = ["bcsstk16"]
        mat_gen = [("gen n=20k 16/row", lambda: datasets.random_symmetric_matrix(20_000, 16, seed=1))]
        t3 = [("contact-high-school_sym3", real("contact-high-school_sym3")),
              ("gen3 n=300 nnz=5k", _gen(3, 300, 5000, 2))]
        t4 = [("email-Eu_sym4", real("email-Eu_sym4"))]
        t5 = [("gen5 n=300 nnz=2k", _gen(5, 300, 2000, 3))]
        dense = [("dense 400x32", lambda: datasets.dense_matrix(400, 32))]
    else:
        mats = ["bcsstk16", "EX5", "Q25FV47_P", "G3_circuit", "mdual"]
        mat_gen = [("gen n=200k 32/row", lambda: datasets.random_symmetric_matrix(200_000, 32, seed=1))]
        t3 = [("tags-math-sx_sym3", real("tags-math-sx_sym3")), ("threads-math-sx_sym3", real("threads-math-sx_sym3")),
              ("gen3 n=2000 nnz=100k", _gen(3, 2000, 100_000, 2))]
        t4 = [("email-Eu_sym4", real("email-Eu_sym4")), ("tags-math-sx_sym4", real("tags-math-sx_sym4"))]
        t5 = [("gen5 n=2000 nnz=20k", _gen(5, 2000, 20_000, 3))]
        dense = [("dense 1500x64", lambda: datasets.dense_matrix(1500, 64))]
    cases: list[Case] = []
    matrices = [(m, real(m)) for m in mats] + mat_gen
    for k in ("ssymv", "syprd", "ssymm", "bellman"):
        cases += [Case(k, label, load) for label, load in matrices]
    cases += [Case("ssyrk", label, load) for label, load in dense]
    # TTM's output is dense n x n x R: keep R small and skip the 201k-node tensor.
    cases += [Case("ttm", label, load, rank=4) for label, load in t3 if "threads" not in label]
    cases += [Case("mttkrp3", label, load) for label, load in t3]
    cases += [Case("mttkrp4", label, load) for label, load in t4]
    cases += [Case("mttkrp5", label, load) for label, load in t5]
    return cases


# ---------------------------------------------------------------------------------------------- inputs


def make_inputs(kernel: str, t, rank: int, seed: int = 7) -> dict:
    rng = np.random.default_rng(seed)
    if kernel == "ssyrk":
        return {"A": t}
    n = t.shape[0]
    if kernel in ("ssymv", "syprd", "bellman"):
        return {"A": t, "x": rng.random(n)}
    if kernel == "ssymm":
        return {"A": t, "X": rng.random((n, rank))}
    return {"A": t, "B": rng.random((n, rank))}


EINSUM = {  # numpy-style subscripts of each catalog kernel, for the einsum peers
    "ssymv": "ij,j->i", "syprd": "i,ij,j->", "ssymm": "ij,jr->ir", "ssyrk": "ik,jk->ij",
    "ttm": "kjl,ki->ijl", "mttkrp3": "ikl,lj,kj->ij", "mttkrp4": "iklm,kj,lj,mj->ij",
    "mttkrp5": "iklmn,kj,lj,mj,nj->ij",
}


def _einsum_operands(kernel: str, a, inputs: dict) -> list:
    if kernel == "syprd":
        return [inputs["x"], a, inputs["x"]]
    if kernel == "ssyrk":
        return [a, a]
    if kernel.startswith("mttkrp"):
        return [a] + [inputs["B"]] * (int(kernel[-1]) - 1)
    other = next(v for k, v in inputs.items() if k != "A")
    return [a, other]


def _scipy_full(t):
    import scipy.sparse as sp

    e = t.expanded()
    return sp.csr_matrix((np.asarray(e.values), (e.indices[0], e.indices[1])), shape=t.shape)


def cpu_peers(kernel: str, t, inputs: dict) -> dict[str, Callable[[], np.ndarray]]:
    """Peer implementations on CPU: name -> callable returning a numpy array."""
    peers: dict[str, Callable[[], np.ndarray]] = {}
    if kernel == "ssyrk":
        import scipy.sparse as sp

        a_csr = sp.csr_matrix(t)
        peers["scipy SpGEMM A@A.T"] = lambda: (a_csr @ a_csr.T).toarray()
        peers["numpy dense A@A.T"] = lambda: t @ t.T
        return peers
    if kernel in ("ssymv", "syprd", "ssymm"):
        csr = _scipy_full(t)
        if kernel == "ssymv":
            peers["scipy CSR SpMV"] = lambda: csr @ inputs["x"]
        elif kernel == "syprd":
            peers["scipy CSR SpMV+dot"] = lambda: np.asarray(inputs["x"] @ (csr @ inputs["x"]))
        else:
            peers["scipy CSR SpMM"] = lambda: csr @ inputs["X"]
    if kernel in EINSUM:
        try:
            import sparse
        except ImportError:
            sparse = None
        if sparse is not None:
            e = t.expanded()
            coo = sparse.COO(np.asarray(e.indices), np.asarray(e.values), shape=t.shape)
            ops = _einsum_operands(kernel, coo, inputs)
            sub = EINSUM[kernel]

            def run_sparse() -> np.ndarray:
                r = sparse.einsum(sub, *ops)
                return r.todense() if hasattr(r, "todense") else np.asarray(r)

            peers["pydata sparse.einsum"] = run_sparse
    return peers


def cuda_peers(kernel: str, t, inputs: dict) -> dict[str, Callable[[], object]]:
    """Peer implementations on CUDA: name -> callable returning a CUDA tensor / CuPy array."""
    import torch

    dev = torch.device("cuda")
    peers: dict[str, Callable[[], object]] = {}
    g = {k: torch.as_tensor(v, device=dev) for k, v in inputs.items() if k != "A"}
    if kernel == "ssyrk":
        a = torch.as_tensor(t, device=dev)
        a_sp = a.to_sparse_csr()
        peers["torch dense A@A.T (cuBLAS)"] = lambda: a @ a.T
        peers["torch.sparse SpGEMM (cuSPARSE)"] = lambda: torch.sparse.mm(a_sp, a_sp.t().to_sparse_csr()).to_dense()
        return peers
    e = t.expanded()
    idx = torch.as_tensor(np.asarray(e.indices), device=dev)
    vals = torch.as_tensor(np.asarray(e.values), device=dev)
    if kernel in ("ssymv", "syprd", "ssymm"):
        a_csr = torch.sparse_coo_tensor(idx, vals, t.shape).coalesce().to_sparse_csr()
        if kernel == "ssymv":
            peers["torch.sparse CSR SpMV (cuSPARSE)"] = lambda: a_csr @ g["x"]
        elif kernel == "syprd":
            peers["torch.sparse SpMV+dot (cuSPARSE)"] = lambda: g["x"] @ (a_csr @ g["x"])
        else:
            peers["torch.sparse CSR SpMM (cuSPARSE)"] = lambda: a_csr @ g["X"]
        try:
            import cupy
            import cupyx.scipy.sparse as csp

            c = csp.csr_matrix(_scipy_full(t))
            cx = {k: cupy.asarray(v) for k, v in inputs.items() if k != "A"}
            if kernel == "ssymv":
                peers["cupyx CSR SpMV"] = lambda: c @ cx["x"]
            elif kernel == "ssymm":
                peers["cupyx CSR SpMM"] = lambda: c @ cx["X"]
        except ImportError:
            pass
    if kernel in EINSUM and math.prod(t.shape) * vals.element_size() < DENSE_LIMIT_BYTES:
        dense = torch.zeros(t.shape, dtype=vals.dtype, device=dev)
        dense[tuple(idx)] = vals
        ops = _einsum_operands(kernel, dense, g)
        sub = EINSUM[kernel]
        peers["torch.einsum dense"] = lambda: torch.einsum(sub, *ops)
    return peers


# ------------------------------------------------------------------------------------------- running


def _to_numpy(y) -> np.ndarray:
    if hasattr(y, "detach"):
        return y.detach().cpu().numpy()
    if type(y).__module__.split(".")[0] == "cupy":
        return y.get()
    return np.asarray(y)


def close(a: np.ndarray, b: np.ndarray) -> bool:
    a, b = np.asarray(a, dtype=np.float64).reshape(-1), np.asarray(b, dtype=np.float64).reshape(-1)
    if a.shape != b.shape:
        return False
    finite = np.isfinite(b)
    scale = float(np.abs(b[finite]).max()) if finite.any() else 1.0
    return bool(np.allclose(a, b, rtol=1e-5, atol=1e-7 * max(scale, 1.0)))


def device_info(device: str) -> tuple[str, dict]:
    """(folder name, version record) of the device the run measures."""
    import numba
    import scipy
    import torch

    versions = {"python": platform.python_version(), "numpy": np.__version__, "scipy": scipy.__version__,
                "numba": numba.__version__, "torch": torch.__version__, "systec_gpu": sg.__version__}
    for mod in ("sparse", "triton", "cupy"):
        with contextlib.suppress(Exception):  # optional peer not installed
            versions[mod] = __import__(mod).__version__
    if device == "cuda":
        name = torch.cuda.get_device_name(0)
        versions["cuda"] = torch.version.cuda
    else:
        name = cpu_model()
        versions["threads"] = numba.get_num_threads()
    versions["device_name"] = name
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return (slug if device == "cuda" else f"cpu-{slug}"), versions


def run_case(case: Case, t, device: str, budget: float) -> list[dict]:
    """Rows for one (kernel, data): the symmetric kernel first, then its peers."""
    inputs = make_inputs(case.kernel, t, case.rank)
    backend = "numba" if device == "cpu" else "auto"
    timer = time_cpu if device == "cpu" else time_cuda
    if device == "cuda":
        import torch

        call_inputs = {k: (v if k == "A" and not isinstance(v, np.ndarray) else torch.as_tensor(v, device="cuda"))
                       for k, v in inputs.items()}
    else:
        call_inputs = inputs
    sym = compile_catalog(case.kernel, symmetry=True, backend=backend)
    methods: dict[str, Callable[[], object]] = {"systec symmetric": lambda: sym(check=False, **call_inputs)}
    nosym = compile_catalog(case.kernel, symmetry=False, backend=backend)
    methods["systec symmetry=False"] = lambda: nosym(check=False, **call_inputs)
    methods.update(cpu_peers(case.kernel, t, inputs) if device == "cpu" else cuda_peers(case.kernel, t, inputs))

    is_sparse = isinstance(t, sg.SparseTensor)
    base = {"kernel": case.kernel, "data": case.data, "shape": [int(s) for s in np.shape(t)],
            "nnz_canonical": int(t.nnz) if is_sparse else None,
            "nnz_expanded": int(t.n_expanded) if isinstance(t, sg.SymmetricTensor) else None,
            "rank": case.rank if case.kernel not in ("ssymv", "syprd", "bellman", "ssyrk") else None}
    ref = _to_numpy(methods["systec symmetric"]())  # compiles; the reference every peer must match
    rows = []
    for name, fn in methods.items():
        row = {**base, "method": name, "ok": True, "error": None, "median": None, "min": None, "max": None}
        try:
            if name != "systec symmetric":
                row["ok"] = close(_to_numpy(fn()), ref)
            if row["ok"]:
                row.update({k: v for k, v in timer(fn, budget_s=budget).items() if k != "runs"}
                           if device == "cpu" else timer(fn))
            else:
                row["error"] = "result differs from the symmetric kernel"
        except Exception as e:  # a peer that cannot run here is reported, not fatal
            row.update(ok=False, error=f"{type(e).__name__}: {e}"[:300])
        rows.append(row)
    sym_med = rows[0]["median"]
    for row in rows:
        ok = row["median"] is not None and sym_med
        row["speedup"] = row["median"] / sym_med if ok else None  # symmetric kernel over this method
    return rows


def write_outputs(rows: list[dict], meta: dict, out: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "results.json", "csv": out / "results.csv", "md": out / "results.md"}
    paths["json"].write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    fields = ["device", "versions", "kernel", "data", "shape", "nnz_canonical", "nnz_expanded", "rank", "method",
              "median", "min", "max", "speedup", "ok", "error"]
    with paths["csv"].open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for r in rows:
            w.writerow({**{k: r.get(k) for k in fields}, "device": meta["device"],
                        "versions": json.dumps(meta["versions"], sort_keys=True),
                        "shape": "x".join(map(str, r["shape"]))})
    paths["md"].write_text(markdown(rows, meta))
    paths.update(plots.speedup_plots(rows, out, title=meta["versions"]["device_name"]))
    return paths


def markdown(rows: list[dict], meta: dict) -> str:
    lines = [f"# systec-gpu bench on {meta['versions']['device_name']} ({meta['date']})", "",
             "speedup = method's median / symmetric kernel's median (>1: the symmetric kernel is faster)", "",
             "| kernel | data | nnz canon / expanded | method | median ms | min ms | speedup | ok |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        nnz = f"{r['nnz_canonical']:,} / {r['nnz_expanded']:,}" if r["nnz_expanded"] else "dense"
        med = "" if r["median"] is None else f"{r['median'] * 1e3:.3f}"
        lo = "" if r["min"] is None else f"{r['min'] * 1e3:.3f}"
        sp = "" if r["speedup"] is None else f"{r['speedup']:.2f}x"
        ok = "yes" if r["ok"] else f"NO ({r['error']})"
        lines.append(f"| {r['kernel']} | {r['data']} | {nnz} | {r['method']} | {med} | {lo} | {sp} | {ok} |")
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="systec-gpu bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small data only (about a minute on CPU)")
    ap.add_argument("--kernels", default=None, help=f"comma-separated subset of: {', '.join(CATALOG)}")
    ap.add_argument("--data", type=Path, default=None, help="data folder (default ../shared/data of the repo)")
    ap.add_argument("--out", type=Path, default=RESULTS, help="results folder; files go to <out>/<device>/")
    ap.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    ap.add_argument("--budget", type=float, default=None, help="seconds per CPU measurement (about)")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    kernels = list(CATALOG)
    if args.kernels:
        kernels = [k.strip() for k in args.kernels.split(",") if k.strip()]
        unknown = [k for k in kernels if k not in CATALOG]
        if unknown:
            print(f"systec-gpu bench: unknown kernel(s) {', '.join(unknown)}; known: {', '.join(CATALOG)}",
                  file=sys.stderr)
            return 2
    data_dir = args.data or datasets.default_data_dir()
    if not data_dir.is_dir():
        print(f"systec-gpu bench: data folder {data_dir} not found (pass --data DIR or set SYSTEC_DATA)",
              file=sys.stderr)
        return 2
    device = args.device
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    budget = args.budget if args.budget is not None else (0.2 if args.quick else 1.0)
    folder, versions = device_info(device)
    cases = [c for c in plan(data_dir, args.quick) if c.kernel in kernels]
    from tqdm import tqdm

    rows: list[dict] = []
    skipped: list[str] = []
    t_start = time.time()
    bar = tqdm(cases, desc="bench", unit="case", file=sys.stderr)
    for case in bar:
        bar.set_postfix_str(f"{case.kernel} on {case.data}")
        try:
            t = case.load()
        except FileNotFoundError as e:
            skipped.append(str(e))
            tqdm.write(f"skip: {e}", file=sys.stderr)
            continue
        rows.extend(run_case(case, t, device, budget))
    if not rows:
        print("systec-gpu bench: nothing ran (" + "; ".join(skipped or ["no case matches --kernels"]) + ")",
              file=sys.stderr)
        return 2
    meta = {"device": folder, "versions": versions, "date": dt.date.today().isoformat(), "quick": args.quick,
            "kernels": kernels, "data_dir": str(data_dir), "skipped": skipped, "elapsed_s": time.time() - t_start,
            "timing": "CPU: median after warm-up; CUDA: triton.testing.do_bench median"}
    paths = write_outputs(rows, meta, args.out / folder)
    print(markdown(rows, meta))
    print("wrote " + ", ".join(str(p) for p in paths.values()), file=sys.stderr)
    sym_failed = [r for r in rows if r["method"].startswith("systec") and not r["ok"]]
    return 1 if sym_failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
