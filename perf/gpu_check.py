"""One command for a CUDA machine: correctness of every catalog kernel, then same-run timings.

    python perf/gpu_check.py [--data DIR] [--out DIR] [--tiny]

1. Every catalog kernel (symmetric and symmetry=False) against the float64 numpy oracle on
   small data with every diagonal class.
2. Timings (triton.testing.do_bench medians; time.perf_counter without CUDA) of the symmetric
   kernel, the symmetry=False kernel and the cuSPARSE peer through torch.sparse where one
   exists (SpMV for SSYMV/SYPRD, SpMM for SSYMM), on Matrix Market files from --data and on a
   generated 3-D 27-point stencil far larger than the 50 MB L2; each larger result is checked
   against the symmetry=False kernel or the torch peer. The symmetric kernel has three rows:
   sym_ms (kernel(..., check=False), as before), call_ms (the plain end-to-end call
   kernel(**inputs): binding, device-resident launch, finish) and launch_ms (run_triton on
   arguments bound once: the launch without binding or finish).
Writes gpu-<device>-<date>.json to --out (default perf/results/) and prints a table.
`--tiny` runs tiny sizes on CPU tensors (use TRITON_INTERPRET=1 there): a smoke test of this script.
Needs only torch, triton, numpy, scipy.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import systec_gpu as sg  # noqa: E402
from systec_gpu.catalog import CATALOG, compile_catalog  # noqa: E402
from systec_gpu.ir.einsum_interpreter import interpret_einsum  # noqa: E402
from systec_gpu.storage import SymmetricTensor  # noqa: E402

ORDER = {"ssymv": 2, "syprd": 2, "ssymm": 2, "bellman": 2, "ttm": 3, "mttkrp3": 3, "mttkrp4": 4, "mttkrp5": 5}


def class_tensor(order: int, size: int, rng, per_class: int = 2) -> SymmetricTensor:
    """Canonical coordinates with `per_class` points of every diagonal class."""
    import itertools

    points = []
    for equal in itertools.product((False, True), repeat=order - 1):
        ranks = np.concatenate([[0], np.cumsum([0 if e else 1 for e in equal])])
        if ranks[-1] + 1 > size:
            continue
        for _ in range(per_class):
            points.append(np.sort(rng.choice(size, int(ranks[-1]) + 1, replace=False))[ranks])
    coords = np.unique(np.array(points, dtype=np.int64).T, axis=1)
    return SymmetricTensor.from_canonical(coords, rng.uniform(0.5, 2.0, coords.shape[1]), (size,) * order, "full")


def small_inputs(name: str, rng) -> dict:
    size, rank = 6, 3
    if name == "ssyrk":
        return {"A": rng.uniform(-1, 1, (7, rank))}
    a = class_tensor(ORDER[name], size, rng)
    if name in ("ssymv", "syprd", "bellman"):
        return {"A": a, "x": rng.uniform(-1, 1, size)}
    return {"A": a, ("X" if name == "ssymm" else "B"): rng.uniform(-1, 1, (size, rank))}


def dense_oracle_inputs(inputs: dict, fill: float) -> dict:
    out = {}
    for n, v in inputs.items():
        if isinstance(v, SymmetricTensor):
            dense = np.full(v.shape, fill)
            e = v.expanded()
            dense[tuple(e.indices)] = np.asarray(e.values)
            out[n] = dense
        else:
            out[n] = np.asarray(v, dtype=np.float64)
    return out


def check_small(name: str, device) -> dict:
    import torch

    rng = np.random.default_rng(0)
    inputs = small_inputs(name, rng)
    row = {"kernel": name, "ok": True, "errors": {}}
    for symmetry in (True, False):
        kernel = compile_catalog(name, backend="triton", symmetry=symmetry)
        fill = np.inf if kernel.program.einsum.reduce == "min=" else 0.0
        expected = interpret_einsum(kernel.program.einsum, dense_oracle_inputs(inputs, fill))
        moved = {n: torch.from_numpy(v).to(device) if isinstance(v, np.ndarray) else v for n, v in inputs.items()}
        result = kernel(**moved).cpu().numpy()
        finite = np.isfinite(expected)
        same_inf = np.array_equal(np.isfinite(result), finite)
        err = float(np.max(np.abs(result[finite] - expected[finite]) / (1 + np.abs(expected[finite])), initial=0.0))
        row["errors"]["sym" if symmetry else "nosym"] = err
        row["ok"] = bool(row["ok"] and same_inf and err < 1e-10)
    return row


# ---------------------------------------------------------------------------------------------
# Larger cases


def stencil_27(n: int):
    """The 3-D 27-point stencil on an n^3 grid (symmetric, n^3 rows, ~27 n^3 nonzeros)."""
    import scipy.sparse as sp

    line = sp.diags([1.0, 2.0, 1.0], [-1, 0, 1], shape=(n, n))
    return sp.kron(sp.kron(line, line), line, format="coo")


def load_matrices(data: str | None, limit: int) -> list[tuple[str, object]]:
    if not data:
        return []
    import scipy.io

    found = []
    for path in sorted(Path(data).glob("*.mtx*"))[:limit]:
        matrix = scipy.io.mmread(str(path)).tocoo()  # lazily: only when --data is given
        if matrix.shape[0] == matrix.shape[1] and abs(matrix - matrix.T).max() == 0:
            found.append((path.name.split(".")[0], matrix))
    return found


def timer(fn, cuda: bool) -> float:
    """Median milliseconds."""
    if cuda:
        import triton.testing

        return float(triton.testing.do_bench(fn, return_mode="median"))
    times = []
    for _ in range(3):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return float(np.median(times))


def symmetric_rows(kernel, inputs: dict, cuda: bool) -> dict:
    """call_ms: the end-to-end call kernel(**inputs); launch_ms: run_triton on arguments bound once."""
    from systec_gpu.backends.triton_backend import run_triton
    from systec_gpu.runtime import bind

    args = bind(kernel.loops, kernel.program, inputs, device_tensors=True)
    return {"call_ms": timer(lambda: kernel(**inputs), cuda),
            "launch_ms": timer(lambda: run_triton(kernel.loops, args), cuda)}


def time_matrix(label: str, matrix, device, cuda: bool, rank: int) -> list[dict]:
    import torch

    rows = []
    n = matrix.shape[0]
    sym_a = SymmetricTensor.from_coo(np.vstack([matrix.row, matrix.col]), matrix.data.astype(np.float32),
                                     matrix.shape, "full", check=False)
    full_a = sym_a.expanded()
    csr = torch.sparse_csr_tensor(*(torch.from_numpy(a) for a in (
        matrix.tocsr().indptr.astype(np.int64), matrix.tocsr().indices.astype(np.int64),
        matrix.tocsr().data.astype(np.float32))), size=matrix.shape).to(device)
    rng = np.random.default_rng(1)
    x = torch.from_numpy(rng.uniform(-1, 1, n).astype(np.float32)).to(device)
    X = torch.from_numpy(rng.uniform(-1, 1, (n, rank)).astype(np.float32)).to(device)
    cases = {
        "ssymv": ({"x": x}, lambda: csr @ x),
        "syprd": ({"x": x}, lambda: torch.dot(x, csr @ x)),
        "ssymm": ({"X": X}, lambda: csr @ X),
    }
    for name, (dense, peer) in cases.items():
        sym = compile_catalog(name, backend="triton")
        nosym = compile_catalog(name, backend="triton", symmetry=False)
        run_sym = lambda k=sym, d=dense: k(A=sym_a, check=False, **d)  # noqa: E731
        run_nosym = lambda k=nosym, d=dense: k(A=full_a, check=False, **d)  # noqa: E731
        got, want, ref = run_sym().cpu(), run_nosym().cpu(), peer().reshape(-1).cpu()
        scale = float(ref.abs().max()) + 1.0
        ok = bool(torch.allclose(got.reshape(-1), ref, rtol=1e-3, atol=1e-3 * scale)
                  and torch.allclose(want.reshape(-1), ref, rtol=1e-3, atol=1e-3 * scale))
        row = {"kernel": name, "matrix": label, "rows": n, "nnz": int(matrix.nnz), "ok": ok,
               "sym_ms": timer(run_sym, cuda), "nosym_ms": timer(run_nosym, cuda), "peer": "torch.sparse CSR",
               "peer_ms": timer(peer, cuda), **symmetric_rows(sym, {"A": sym_a, **dense}, cuda)}
        row["speedup_vs_peer"] = row["peer_ms"] / row["sym_ms"]
        row["speedup_vs_nosym"] = row["nosym_ms"] / row["sym_ms"]
        rows.append(row)
    return rows


def time_tensor(name: str, size: int, nnz: int, rank: int, device, cuda: bool) -> dict:
    """MTTKRP-family kernels: symmetric vs symmetry=False on the expanded tensor (no vendor peer)."""
    import torch

    rng = np.random.default_rng(2)
    order = ORDER[name]
    coords = np.sort(rng.integers(0, size, (order, nnz)), axis=0)
    coords = np.unique(coords, axis=1)
    a = SymmetricTensor.from_canonical(coords, rng.uniform(0.5, 2.0, coords.shape[1]).astype(np.float32),
                                       (size,) * order, "full")
    full = a.expanded()
    b = torch.from_numpy(rng.uniform(-1, 1, (size, rank)).astype(np.float32)).to(device)
    sym = compile_catalog(name, backend="triton")
    nosym = compile_catalog(name, backend="triton", symmetry=False)
    run_sym = lambda: sym(A=a, B=b, check=False)  # noqa: E731
    run_nosym = lambda: nosym(A=full, B=b, check=False)  # noqa: E731
    got, want = run_sym().cpu(), run_nosym().cpu()
    ok = bool(torch.allclose(got, want, rtol=1e-3, atol=1e-3 * (float(want.abs().max()) + 1.0)))
    row = {"kernel": name, "matrix": f"random {order}-D size {size}", "nnz": int(a.nnz), "ok": ok,
           "sym_ms": timer(run_sym, cuda), "nosym_ms": timer(run_nosym, cuda), "peer": None, "peer_ms": None,
           **symmetric_rows(sym, {"A": a, "B": b}, cuda)}
    row["speedup_vs_nosym"] = row["nosym_ms"] / row["sym_ms"]
    return row


def main(argv=None) -> int:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="folder of Matrix Market files (.mtx / .mtx.gz)")
    parser.add_argument("--out", help="folder for the JSON (default perf/results/)")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes, CPU tensors allowed (TRITON_INTERPRET=1)")
    options = parser.parse_args(argv)

    cuda = torch.cuda.is_available() and not options.tiny
    device = torch.device("cuda") if cuda else torch.device("cpu")
    if not cuda and os.environ.get("TRITON_INTERPRET") != "1":
        print("no CUDA device: run with --tiny and TRITON_INTERPRET=1", file=sys.stderr)
        return 2
    names = ["ssymv", "ssyrk", "mttkrp3", "bellman"] if options.tiny else list(CATALOG)
    checks = [check_small(name, device) for name in names]

    timings: list[dict] = []
    stencil_n = 4 if options.tiny else 128  # 128^3 = 2.1M rows, ~55M nonzeros: far beyond L2
    matrices = [(f"stencil27 {stencil_n}^3", stencil_27(stencil_n))]
    matrices += load_matrices(options.data, limit=0 if options.tiny else 50)
    for label, matrix in matrices:
        timings += time_matrix(label, matrix, device, cuda, rank=4 if options.tiny else 16)
    for name, size, nnz in ([("mttkrp3", 8, 30)] if options.tiny else
                            [("mttkrp3", 100_000, 4_000_000), ("mttkrp4", 50_000, 1_000_000),
                             ("mttkrp5", 20_000, 300_000)]):
        timings.append(time_tensor(name, size, nnz, 4 if options.tiny else 32, device, cuda))

    device_name = torch.cuda.get_device_name() if cuda else f"cpu-interpreter-{platform.machine()}"
    report = {"device": device_name, "date": datetime.datetime.now().isoformat(timespec="seconds"),
              "torch": torch.__version__, "triton": __import__("triton").__version__, "systec_gpu": sg.__version__,
              "tiny": options.tiny, "checks": checks, "timings": timings,
              "ok": all(r["ok"] for r in checks + timings)}
    out_dir = Path(options.out) if options.out else Path(__file__).parent / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    slug = re.sub(r"[^A-Za-z0-9]+", "-", device_name).strip("-").lower()
    path = out_dir / f"gpu-{slug}-{datetime.date.today().isoformat()}.json"
    path.write_text(json.dumps(report, indent=2))

    print(f"{'kernel':<10} {'ok':<5} max rel error (sym, nosym)")
    for r in checks:
        print(f"{r['kernel']:<10} {r['ok']!s:<5} {r['errors']['sym']:.1e} {r['errors']['nosym']:.1e}")
    print(f"\n{'kernel':<10} {'data':<28} {'ok':<5} {'sym ms':>9} {'call ms':>9} {'launch ms':>9} {'nosym ms':>9} "
          f"{'peer ms':>9} {'x peer':>7}")
    for r in timings:
        peer = f"{r['peer_ms']:9.3f}" if r["peer_ms"] is not None else f"{'-':>9}"
        ratio = f"{r['speedup_vs_peer']:7.2f}" if r.get("speedup_vs_peer") else f"{'-':>7}"
        times = f"{r['sym_ms']:9.3f} {r['call_ms']:9.3f} {r['launch_ms']:9.3f} {r['nosym_ms']:9.3f}"
        print(f"{r['kernel']:<10} {r['matrix']:<28} {r['ok']!s:<5} {times} {peer} {ratio}")
    print(f"\nwrote {path}")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
