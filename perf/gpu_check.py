"""One prepared command for a CUDA machine: correctness of every catalog kernel, then same-run
timings of the symmetric kernels against their peers (issue 11's target table).

    python perf/gpu_check.py [--data DIR] [--out DIR] [--budget-s 330] [--tiny]

1. checks: every catalog kernel, symmetric and symmetry=False, in fp64 (and the timed ones in
   fp32), against the float64 numpy oracle on small data holding every diagonal class.
2. timings, each larger result first checked against its peer (and the fp64 one where there is one):
   - SSYMV fp32 and fp64, SYPRD, Bellman, SSYMM at R = 16, 32, 64, 128 on a 27-point 3-D stencil
     (2.1M rows, 57M nonzeros) and SSYMV on a 5-point 2-D stencil (4.2M rows, ~5 per row), both far
     larger than the 50 MB L2; SSYMV/SYPRD/SSYMM on the real .mtx files of --data.
     Peers: cuSPARSE CSR SpMV / SpMM of the full matrix through torch.sparse (SYPRD: SpMV + dot).
   - SSYRK on dense A: cuBLAS through torch. torch has no SYRK: the peer is A @ A.T (a GEMM doing
     twice SYRK's work), fp32 without TF32 (torch's default), so the kernel's tl.dot runs at
     input_precision "ieee" to match.
   - TTM and MTTKRP 3-D/4-D/5-D on random symmetric tensors and the real .tns files of --data:
     symmetric vs symmetry=False on the expanded tensor, with the n! memory bound beside each
     (expanded / canonical nonzeros: the most a traffic-bound kernel gains by reading less).
   Columns: kernel_ms (the prepared launch alone: the same kernel, repeatedly, do_bench medians,
   L2 flushed between runs), call_ms (the end-to-end call kernel(**inputs, check=False): binding,
   launch, finish, with the SymmetricTensor on the host: coordinates and dense operands stay on the
   device across calls, but the values are uploaded every call, as inputs.py never caches values),
   call_device_ms (the same call with the SymmetricTensor moved to the GPU once, `A.to("cuda")`:
   what a GPU user's loop sees), call_device_host_us (host microseconds per such call, back to back,
   on matrices under 1M rows), gpu_plan (what call_* run: backends/plans.py; kernel_ms always times
   the generated symmetric kernel), nosym_ms, peer_ms, warm_*_ms (back-to-back runs without
   flushing L2: what an L2-resident matrix sees), speedup_vs_peer = peer_ms / kernel_ms, bandwidth
   of the bytes the symmetric kernel must move vs the device's copy bandwidth.
Writes gpu-<device>-<date>.json to --out (default perf/results/) after every row (a partial file
survives a timeout) and prints progress. Stops starting new sections past --budget-s seconds.
`--tiny` runs tiny sizes on CPU tensors (TRITON_INTERPRET=1): a smoke test of this script.
Needs only torch, triton, numpy (no scipy, no fast_matrix_market: files load through systec_gpu).
"""

from __future__ import annotations

import argparse
import datetime
import itertools
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
from systec_gpu.backends.plans import choose_plan  # noqa: E402
from systec_gpu.catalog import CATALOG, compile_catalog  # noqa: E402
from systec_gpu.ir.einsum_interpreter import interpret_einsum  # noqa: E402
from systec_gpu.storage import SymmetricTensor  # noqa: E402

ORDER = {"ssymv": 2, "syprd": 2, "ssymm": 2, "bellman": 2, "ttm": 3, "mttkrp3": 3, "mttkrp4": 4, "mttkrp5": 5}
STARTED = time.perf_counter()


def log(message: str) -> None:
    print(f"[{time.perf_counter() - STARTED:7.1f}s] {message}", flush=True)


# ---------------------------------------------------------------------------------------------
# Inputs


def class_tensor(order: int, size: int, rng, per_class: int = 2) -> SymmetricTensor:
    """Canonical coordinates with `per_class` points of every diagonal class."""
    points = []
    for equal in itertools.product((False, True), repeat=order - 1):
        ranks = np.concatenate([[0], np.cumsum([0 if e else 1 for e in equal])])
        if ranks[-1] + 1 > size:
            continue
        for _ in range(per_class):
            points.append(np.sort(rng.choice(size, int(ranks[-1]) + 1, replace=False))[ranks])
    coords = np.unique(np.array(points, dtype=np.int64).T, axis=1)
    return SymmetricTensor.from_canonical(coords, rng.uniform(0.5, 2.0, coords.shape[1]), (size,) * order, "full")


def small_inputs(name: str, rng, dtype) -> dict:
    size, rank = 6, 3
    if name == "ssyrk":
        return {"A": rng.uniform(-1, 1, (7, rank)).astype(dtype)}
    a = class_tensor(ORDER[name], size, rng, per_class=3)
    a = a.with_values(np.asarray(a.values).astype(dtype))
    if name in ("ssymv", "syprd", "bellman"):
        return {"A": a, "x": rng.uniform(-1, 1, size).astype(dtype)}
    return {"A": a, ("X" if name == "ssymm" else "B"): rng.uniform(-1, 1, (size, rank)).astype(dtype)}


def dense_oracle_inputs(inputs: dict, fill: float) -> dict:
    out = {}
    for n, v in inputs.items():
        if isinstance(v, SymmetricTensor):
            dense = np.full(v.shape, fill)
            e = v.expanded()
            dense[tuple(e.indices)] = np.asarray(e.values, dtype=np.float64)
            out[n] = dense
        else:
            out[n] = np.asarray(v, dtype=np.float64)
    return out


def stencil(shape: tuple[int, ...], reach: int, dtype=np.float32) -> SymmetricTensor:
    """The symmetric stencil matrix of a grid of `shape` (every neighbour within `reach` in each
    dimension for reach 1 in 3-D: 27 points; reach 0 means axis neighbours only: 5 points in 2-D),
    built directly as canonical (upper-triangle) coordinates, sorted by row."""
    n = int(np.prod(shape))
    strides = np.cumprod((1, *shape[:0:-1]))[::-1]
    if reach:
        offsets = [o for o in itertools.product((-1, 0, 1), repeat=len(shape))]
    else:
        offsets = [tuple(int(d == a) for d in range(len(shape))) for a in range(len(shape))] + [(0,) * len(shape)]
    offsets = [o for o in offsets if int(np.dot(o, strides)) >= 0]  # the canonical half (and the diagonal)
    grid = np.indices(shape).reshape(len(shape), -1)
    rows, cols, vals = [], [], []
    for o in offsets:
        moved = grid + np.array(o)[:, None]
        ok = np.all((moved >= 0) & (moved < np.array(shape)[:, None]), axis=0)
        r = np.flatnonzero(ok)
        rows.append(r)
        cols.append(r + int(np.dot(o, strides)))
        vals.append(np.full(len(r), 2.0 ** -sum(abs(x) for x in o) * (len(offsets) if not any(o) else 1), dtype))
    rows, cols, vals = np.concatenate(rows), np.concatenate(cols), np.concatenate(vals)
    order = np.lexsort((cols, rows))
    return SymmetricTensor(np.vstack([rows[order], cols[order]]), vals[order], (n, n), "full", check=False)


def random_tensor(order: int, size: int, nnz: int, seed: int, dtype=np.float32) -> SymmetricTensor:
    """`nnz` (about) canonical nonzeros of a random symmetric tensor, diagonals included."""
    rng = np.random.default_rng(seed)
    coords = np.sort(rng.integers(0, size, (order, nnz)), axis=0)
    coords = coords[:, np.lexsort(coords[::-1])]
    keep = np.concatenate([[True], np.any(np.diff(coords, axis=1) != 0, axis=0)])
    coords = coords[:, keep]
    return SymmetricTensor(coords, rng.uniform(0.5, 2.0, coords.shape[1]).astype(dtype), (size,) * order, "full",
                           check=False)


def load_npz(path: Path) -> SymmetricTensor:
    """A fully symmetric tensor saved by `perf/gpu_data.py` (canonical indices, values, shape): the
    device machine has no fast_matrix_market, so the .mtx/.tns files travel converted."""
    with np.load(path) as z:
        return SymmetricTensor.from_canonical(z["indices"], z["values"], tuple(z["shape"]), "full")


def load_files(data: str | None, pattern: str, limit: int):
    """(label, fully symmetric float32 SymmetricTensor) of the files of `data` matching `pattern`,
    loaded one at a time as the caller reaches them (at most `limit`, smallest files first)."""
    if not data:
        return
    paths = sorted(Path(data).glob(pattern), key=lambda p: p.stat().st_size)[:limit]
    for path in paths:
        try:
            t = load_npz(path) if path.suffix == ".npz" else sg.io.load(path)
        except Exception as error:  # a file the reader refuses: say so, go on
            log(f"skip {path.name}: {type(error).__name__}: {error}")
            continue
        if isinstance(t, SymmetricTensor) and t.groups == (tuple(range(t.ndim)),):
            vals = np.asarray(t.values, dtype=np.float32)
            yield path.name.split(".")[0], t.with_values(vals if np.any(vals) else np.ones_like(vals))
        else:
            log(f"skip {path.name}: not fully symmetric")


# ---------------------------------------------------------------------------------------------
# Timing


def timer(fn, cuda: bool) -> float:
    """Median milliseconds: do_bench on CUDA (L2 flushed between runs), perf_counter otherwise."""
    if cuda:
        import triton.testing

        return float(triton.testing.do_bench(fn, warmup=10, rep=60, return_mode="median"))
    start = time.perf_counter()  # the CPU interpreter (--tiny): one run, a smoke test, not a timing
    fn()
    return (time.perf_counter() - start) * 1e3


def warm_timer(fn, cuda: bool, runs: int = 50) -> float:
    """Mean milliseconds of back-to-back runs (L2 stays warm: the L2-resident case)."""
    if not cuda:
        return timer(fn, cuda)
    import torch

    fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(runs):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / runs


def host_us(fn, cuda: bool, calls: int = 200) -> float:
    """Microseconds of host time per call of `fn`, back to back (the GPU queue absorbs the
    launches while it keeps up: on a small input this is the call's Python cost)."""
    import torch

    fn()
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    elapsed = time.perf_counter() - start
    if cuda:
        torch.cuda.synchronize()
    return elapsed / calls * 1e6


def plan_of(kernel) -> str:
    """The plan the Triton backend runs for `kernel` (backends/plans.py): kernel_ms times the
    generated symmetric kernel, call_ms and call_device_ms what the plan runs."""
    return choose_plan(kernel.program, kernel.loops, "triton").name


def copy_bandwidth(device, cuda: bool) -> float | None:
    """Device-to-device copy bandwidth in GB/s (read + write) of a 1 GiB buffer."""
    if not cuda:
        return None
    import torch

    src = torch.empty(2**28, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    ms = timer(lambda: dst.copy_(src), cuda)
    return 2 * src.numel() * 4 / (ms * 1e-3) / 1e9


class Prepared:
    """A kernel's launch, prepared once on arguments bound once: kernel_ms times only the kernel."""

    def __init__(self, kernel, inputs: dict):
        from systec_gpu.backends.triton_launch import prepare_launch
        from systec_gpu.runtime import bind

        self.args = bind(kernel.loops, kernel.program, inputs, check=False, device_tensors=True)
        self.launch = prepare_launch(kernel.loops, self.args)

    def __call__(self):
        launch = self.launch
        if not launch.empty:
            launch.kernel[launch.grid](**launch.values, num_warps=launch.num_warps)


def close(got, want, rtol: float = 1e-3) -> tuple[bool, float]:
    import torch

    got, want = got.double().reshape(-1), want.double().reshape(-1)
    finite = torch.isfinite(want)
    if not torch.equal(torch.isfinite(got), finite):
        return False, float("inf")
    scale = float(want[finite].abs().max()) if bool(finite.any()) else 1.0
    err = float((got[finite] - want[finite]).abs().max() / (scale + 1e-30)) if bool(finite.any()) else 0.0
    return err <= rtol, err


# ---------------------------------------------------------------------------------------------
# Sections


class Report:
    def __init__(self, path: Path, header: dict):
        self.path, self.data = path, {**header, "checks": [], "host": [], "timings": [], "skipped": [],
                                      "errors": []}
        self.write()

    def add(self, section: str, row: dict) -> None:
        self.data[section].append(row)
        self.write()

    def write(self) -> None:
        rows = self.data["checks"] + self.data["host"] + self.data["timings"]
        self.data["ok"] = all(r.get("ok") for r in rows) and not self.data["errors"]
        self.data["elapsed_s"] = round(time.perf_counter() - STARTED, 1)
        self.path.write_text(json.dumps(self.data, indent=2, default=str))


def check_small(name: str, device, dtype) -> dict:
    import torch

    rng = np.random.default_rng(0)
    inputs = small_inputs(name, rng, dtype)
    row = {"kernel": name, "dtype": np.dtype(dtype).name, "ok": True, "errors": {}}
    tol = 1e-10 if dtype == np.float64 else 1e-5
    for symmetry in (True, False):
        kernel = compile_catalog(name, backend="triton", symmetry=symmetry)
        fill = np.inf if kernel.program.einsum.reduce == "min=" else 0.0
        expected = interpret_einsum(kernel.program.einsum, dense_oracle_inputs(inputs, fill))
        moved = {n: torch.from_numpy(v).to(device) if isinstance(v, np.ndarray) else v for n, v in inputs.items()}
        ok, err = close(kernel(**moved).cpu(), torch.from_numpy(np.asarray(expected)), tol)
        row["errors"]["sym" if symmetry else "nosym"] = err
        row["ok"] = bool(row["ok"] and ok)
    return row


def csr_of(a: SymmetricTensor, device, dtype, full=None):
    """The full matrix (`full`: a.expanded(), if already made) in `dtype` and as a torch CSR tensor
    on `device` (the cuSPARSE peer's input)."""
    import torch

    full = a.expanded() if full is None else full
    full = full.with_values(np.asarray(full.values).astype(dtype))
    rows, cols = np.asarray(full.indices[0]), np.asarray(full.indices[1])
    pointers = np.zeros(a.shape[0] + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=a.shape[0]), out=pointers[1:])
    tensors = [torch.from_numpy(pointers), torch.from_numpy(cols.astype(np.int64)),
               torch.from_numpy(np.asarray(full.values).astype(dtype))]
    return torch.sparse_csr_tensor(*tensors, size=a.shape).to(device), full


def time_matrix(report: Report, label: str, a: SymmetricTensor, device, cuda: bool, kernels, ranks,
                bandwidth: float | None, dtype=np.float32, full=None) -> None:
    import torch

    n = a.shape[0]
    a = a.with_values(np.asarray(a.values).astype(dtype))
    csr, full = csr_of(a, device, dtype, full)
    tdtype = torch.float64 if dtype == np.float64 else torch.float32
    rng = np.random.default_rng(1)
    x = torch.from_numpy(rng.uniform(-1, 1, n)).to(device, tdtype)
    cases = []
    for name in kernels:
        if name == "ssymv":
            cases.append((name, None, {"x": x}, lambda: csr @ x, "cuSPARSE SpMV (torch.sparse CSR)"))
        elif name == "syprd":
            cases.append((name, None, {"x": x}, lambda: torch.dot(x, csr @ x), "cuSPARSE SpMV + dot"))
        elif name == "bellman":
            cases.append((name, None, {"x": x}, None, None))
        elif name == "ssymm":
            for rank in ranks:
                X = torch.from_numpy(rng.uniform(-1, 1, (n, rank))).to(device, tdtype)
                cases.append((name, rank, {"X": X}, lambda X=X: csr @ X, "cuSPARSE SpMM (torch.sparse CSR)"))
    # the bytes half storage must move: canonical column index + value, row pointers, x read, y written
    item = np.dtype(dtype).itemsize
    a_device = a.to(device) if cuda else a  # a user's matrix kept on the GPU: no upload per call
    for name, rank, dense, peer, peer_name in cases:
        log(f"{name} {label} {np.dtype(dtype).name}" + (f" R={rank}" if rank else ""))
        sym = compile_catalog(name, backend="triton")
        nosym = compile_catalog(name, backend="triton", symmetry=False)
        run_sym = lambda k=sym, d=dense: k(A=a, check=False, **d)  # noqa: E731
        run_nosym = lambda k=nosym, d=dense: k(A=full, check=False, **d)  # noqa: E731
        got, want = run_sym(), run_nosym()
        ok, err_nosym = close(got, want)
        row = {"kernel": name, "matrix": label, "dtype": np.dtype(dtype).name, "rank": rank, "rows": n,
               "nnz": int(full.nnz), "canonical_nnz": int(a.nnz), "nnz_per_row": full.nnz / n,
               "error_vs_nosym": err_nosym}
        if peer is not None:
            ref = peer()
            ok_peer, err_peer = close(got, ref)
            ok = ok and ok_peer
            row["error_vs_peer"] = err_peer
        prepared = Prepared(sym, {"A": a, **dense})
        row["kernel_ms"] = timer(prepared, cuda)
        row["call_ms"] = timer(run_sym, cuda)
        run_device = lambda k=sym, d=dense: k(A=a_device, check=False, **d)  # noqa: E731
        row["gpu_plan"], row["call_device_ms"] = plan_of(sym), timer(run_device, cuda)
        if cuda and n < 1_000_000:  # small enough that the host's time per call shows
            row["call_device_host_us"] = host_us(run_device, cuda)
        row["nosym_ms"] = timer(Prepared(nosym, {"A": full, **dense}), cuda)
        row["schedule"] = repr(prepared.launch.tiles.rows or prepared.launch.tiles.sparse)
        row["num_warps"] = prepared.launch.num_warps
        row["peer"], row["peer_ms"] = peer_name, (timer(peer, cuda) if peer is not None else None)
        if peer is not None:
            row["speedup_vs_peer"] = row["peer_ms"] / row["kernel_ms"]
        row["speedup_vs_nosym"] = row["nosym_ms"] / row["kernel_ms"]
        if full.nnz * (4 + item) < 40e6:  # fits in L2: back-to-back runs keep it there
            row["warm_kernel_ms"] = warm_timer(prepared, cuda)
            if peer is not None:
                row["warm_peer_ms"] = warm_timer(peer, cuda)
                row["warm_speedup_vs_peer"] = row["warm_peer_ms"] / row["warm_kernel_ms"]
        width = rank or 1
        moved = a.nnz * (4 + item) + (n + 1) * 4 + 2 * n * width * item
        row["bytes_moved"] = moved
        row["bandwidth_gbs"] = moved / (row["kernel_ms"] * 1e-3) / 1e9
        if bandwidth:
            row["fraction_of_copy_bandwidth"] = row["bandwidth_gbs"] / bandwidth
        row["ok"] = bool(ok)
        report.add("timings", row)
        del prepared


def time_host(report: Report, device, cuda: bool) -> None:
    """Host microseconds per back-to-back call of SSYMV on an 8x8 (stencil 2^3) matrix: the full
    call with the SymmetricTensor on the device, with it on the host (values uploaded), the
    prepared Triton launch alone (Triton's own launcher: the floor), and torch's CSR SpMV."""
    import torch

    log("host time per call, SSYMV 8x8")
    a = stencil((2, 2, 2), 1)
    a_device = a.to(device)
    csr, _ = csr_of(a, device, np.float32)
    x = torch.ones(a.shape[0], device=device)
    kernel = compile_catalog("ssymv", backend="triton")
    prepared = Prepared(kernel, {"A": a, "x": x})
    row = {"section": "host", "kernel": "ssymv", "matrix": "stencil27 2^3 (8x8)",
           "call_device_host_us": host_us(lambda: kernel(A=a_device, x=x), cuda),
           "call_device_nocheck_host_us": host_us(lambda: kernel(A=a_device, x=x, check=False), cuda),
           "call_host_values_host_us": host_us(lambda: kernel(A=a, x=x, check=False), cuda),
           "launch_only_host_us": host_us(prepared, cuda),
           "torch_csr_spmv_host_us": host_us(lambda: csr @ x, cuda)}
    got, want = kernel(A=a_device, x=x), csr @ x
    ok, err = close(got, want)
    row.update(ok=bool(ok), error_vs_peer=err)
    report.add("host", row)
    log("  " + ", ".join(f"{k} {v:.1f}" for k, v in row.items() if k.endswith("_us")))


def time_ssyrk(report: Report, n: int, k: int, device, cuda: bool, dtype=np.float32) -> None:
    import torch

    log(f"ssyrk {n}x{k} {np.dtype(dtype).name}")
    tdtype = torch.float64 if dtype == np.float64 else torch.float32
    a = torch.from_numpy(np.random.default_rng(3).uniform(-1, 1, (n, k))).to(device, tdtype)
    sym = compile_catalog("ssyrk", backend="triton")
    nosym = compile_catalog("ssyrk", backend="triton", symmetry=False)
    peer = lambda: a @ a.T  # noqa: E731
    got = sym(A=a, check=False)
    ok, err = close(got, peer(), 1e-4 if dtype == np.float32 else 1e-10)
    prepared = Prepared(sym, {"A": a})
    row = {"kernel": "ssyrk", "matrix": f"dense {n}x{k}", "dtype": np.dtype(dtype).name, "error_vs_peer": err,
           "kernel_ms": timer(prepared, cuda), "call_ms": timer(lambda: sym(A=a, check=False), cuda),
           "nosym_ms": timer(Prepared(nosym, {"A": a}), cuda),
           "peer": "cuBLAS GEMM A @ A.T through torch (torch has no SYRK; TF32 off, as torch's default)",
           "peer_ms": timer(peer, cuda), "schedule": repr(prepared.launch.tiles.levels[-1].header),
           "num_warps": prepared.launch.num_warps, "input_precision": "ieee", "gpu_plan": plan_of(sym)}
    row["speedup_vs_peer"] = row["peer_ms"] / row["kernel_ms"]
    row["speedup_vs_nosym"] = row["nosym_ms"] / row["kernel_ms"]
    row["tflops_syrk_work"] = n * n * k / (row["kernel_ms"] * 1e-3) / 1e12  # n(n+1)/2 * k * 2 flops
    row["ok"] = bool(ok)
    report.add("timings", row)


def time_tensor(report: Report, name: str, label: str, a: SymmetricTensor, rank: int, device, cuda: bool) -> None:
    """TTM / MTTKRP: symmetric vs symmetry=False on the expanded tensor (no vendor peer)."""
    import torch

    log(f"{name} {label} nnz={a.nnz}")
    size = a.shape[0]
    b = torch.from_numpy(np.random.default_rng(2).uniform(-1, 1, (size, rank))).to(device, torch.float32)
    full = a.expanded()
    sym = compile_catalog(name, backend="triton")
    nosym = compile_catalog(name, backend="triton", symmetry=False)
    run_sym = lambda: sym(A=a, B=b, check=False)  # noqa: E731
    got, want = run_sym(), nosym(A=full, B=b, check=False)
    ok, err = close(got, want)
    prepared = Prepared(sym, {"A": a, "B": b})
    a_device = a.to(device) if cuda else a
    row = {"kernel": name, "matrix": label, "dtype": "float32", "rank": rank, "canonical_nnz": int(a.nnz),
           "nnz": int(full.nnz), "error_vs_nosym": err, "kernel_ms": timer(prepared, cuda),
           "call_ms": timer(run_sym, cuda), "nosym_ms": timer(Prepared(nosym, {"A": full, "B": b}), cuda),
           "gpu_plan": plan_of(sym), "call_device_ms": timer(lambda: sym(A=a_device, B=b, check=False), cuda),
           "peer": None, "peer_ms": None, "schedule": repr(prepared.launch.tiles.sparse),
           "num_warps": prepared.launch.num_warps,
           # the n! memory bound: expanded over canonical nonzeros (what reading less can gain at most)
           "memory_bound": full.nnz / max(a.nnz, 1)}
    row["speedup_vs_nosym"] = row["nosym_ms"] / row["kernel_ms"]
    row["ok"] = bool(ok)
    report.add("timings", row)


# ---------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="folder of .mtx / .tns files (plain or .gz)")
    parser.add_argument("--out", help="folder for the JSON (default perf/results/)")
    parser.add_argument("--budget-s", type=float, default=330.0,
                        help="start no new section after this many seconds (default 330: the whole run stays "
                             "near 6 minutes on an H100, inside a 15-minute device session with a rerun's room)")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes, CPU tensors allowed (TRITON_INTERPRET=1)")
    options = parser.parse_args(argv)

    cuda = torch.cuda.is_available() and not options.tiny
    device = torch.device("cuda") if cuda else torch.device("cpu")
    if not cuda and os.environ.get("TRITON_INTERPRET") != "1":
        print("no CUDA device: run with --tiny and TRITON_INTERPRET=1", file=sys.stderr)
        return 2
    os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    tiny = options.tiny
    device_name = torch.cuda.get_device_name() if cuda else f"cpu-interpreter-{platform.machine()}"
    out_dir = Path(options.out) if options.out else Path(__file__).parent / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    slug = re.sub(r"[^A-Za-z0-9]+", "-", device_name).strip("-").lower()
    path = out_dir / f"gpu-{slug}-{datetime.date.today().isoformat()}.json"
    bandwidth = copy_bandwidth(device, cuda)
    report = Report(path, {
        "device": device_name, "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "torch": torch.__version__, "triton": __import__("triton").__version__, "systec_gpu": sg.__version__,
        "tiny": tiny, "copy_bandwidth_gbs": bandwidth,
        "capability": "sm_{}{}".format(*torch.cuda.get_device_capability()) if cuda else None})
    log(f"{device_name}: copy bandwidth {bandwidth and round(bandwidth)} GB/s; writing {path}")

    def over_budget(section: str) -> bool:
        if time.perf_counter() - STARTED > options.budget_s:
            report.data["skipped"].append(section)
            report.write()
            log(f"budget spent: skipping {section}")
            return True
        return False

    def section(name: str, run) -> None:
        """Run one section within the budget; an exception is recorded (the run fails) and the
        next section still runs: a device lease is too short to lose the rest to one error."""
        if over_budget(name):
            return
        try:
            run()
        except Exception as error:  # noqa: BLE001 (recorded with its traceback, then the run goes on)
            import traceback

            report.data["errors"].append({"section": name, "error": f"{type(error).__name__}: {error}",
                                          "traceback": traceback.format_exc()})
            report.write()
            log(f"ERROR in {name}: {type(error).__name__}: {error}")

    # 1. correctness against the float64 oracle: every kernel in fp64, the timed ones in fp32 too
    every = ["ssymv", "ssyrk", "mttkrp3", "bellman"] if tiny else list(CATALOG)
    timed_fp32 = every if tiny else ["ssymv", "syprd", "ssymm", "ssyrk", "mttkrp3"]
    for dtype, names in ((np.float64, every), (np.float32, timed_fp32)):
        for name in names:
            section(f"check {name} {np.dtype(dtype).name}",
                    lambda name=name, dtype=dtype: report.add("checks", check_small(name, device, dtype)))
            if report.data["checks"]:
                log(f"check {name} {np.dtype(dtype).name}: ok={report.data['checks'][-1]['ok']}")

    # 2a. the host's time per call on a tiny matrix (the kernel costs ~nothing): issue 10 on a GPU
    if cuda:
        section("host", lambda: time_host(report, device, cuda))

    # 2. matrices (CSR row blocks) larger than L2, most important first
    matrix_kernels = ["ssymv", "syprd", "ssymm", "bellman"]
    ranks = [4] if tiny else [16, 32, 64, 128]
    label, a = ("stencil27 3^3", stencil((3, 3, 3), 1)) if tiny else ("stencil27 128^3", stencil((128, 128, 128), 1))
    full = a.expanded()  # made once: the peer's matrix and the symmetry=False driver, both dtypes
    section(f"matrix {label}", lambda a=a, full=full: time_matrix(report, label, a, device, cuda, matrix_kernels,
                                                                  ranks, bandwidth, full=full))
    section(f"matrix {label} fp64", lambda a=a, full=full: time_matrix(report, label, a, device, cuda, ["ssymv"],
                                                                       ranks, bandwidth, dtype=np.float64, full=full))
    del a, full
    label, a = ("stencil5 5^2", stencil((5, 5), 0)) if tiny else ("stencil5 2048^2", stencil((2048, 2048), 0))
    section(f"matrix {label}", lambda a=a: time_matrix(report, label, a, device, cuda, ["ssymv"], ranks, bandwidth))
    del a

    # 3. dense SSYRK
    for n, k, dtype in ([(40, 24, np.float32)] if tiny else [(8192, 2048, np.float32), (4096, 1024, np.float64)]):
        section(f"ssyrk {n}x{k}", lambda n=n, k=k, dtype=dtype: time_ssyrk(report, n, k, device, cuda, dtype))

    # 4. tensors: TTM and MTTKRP, symmetric vs expanded
    if tiny:
        tensors = [("mttkrp3", "random 3-D size 8", lambda: random_tensor(3, 8, 30, 4), 4)]
    else:
        tensors = [("mttkrp3", "random 3-D size 100k", lambda: random_tensor(3, 100_000, 2_000_000, 5), 32),
                   ("mttkrp4", "random 4-D size 50k", lambda: random_tensor(4, 50_000, 500_000, 6), 32),
                   ("mttkrp5", "random 5-D size 20k", lambda: random_tensor(5, 20_000, 100_000, 7), 32),
                   ("ttm", "random 3-D size 3000", lambda: random_tensor(3, 3000, 2_000_000, 4), 32)]
    for name, label, make, rank in tensors:
        section(f"{name} {label}", lambda name=name, label=label, make=make, rank=rank:
                time_tensor(report, name, label, make(), rank, device, cuda))

    # 5. real files: matrices (SSYMV, SYPRD, SSYMM R=32 vs cuSPARSE), then tensors (MTTKRP)
    for label, a in load_files(options.data, "*.mtx*", 0 if tiny else 4):
        section(f"matrix {label}", lambda label=label, a=a: time_matrix(report, label, a, device, cuda,
                                                                          ["ssymv", "syprd", "ssymm"], [32], bandwidth))
    for label, a in load_files(options.data, "*.tns*", 0 if tiny else 3):
        name = {3: "mttkrp3", 4: "mttkrp4", 5: "mttkrp5"}.get(a.ndim)
        if name:
            section(f"{name} {label}", lambda name=name, label=label, a=a: time_tensor(report, name, label, a, 32,
                                                                                      device, cuda))

    report.write()
    print(f"\n{'kernel':<10} {'ok':<5} max rel error (sym, nosym)")
    for r in report.data["checks"]:
        print(f"{r['kernel']:<10} {r['dtype']:<8} {r['ok']!s:<5} {r['errors']['sym']:.1e} {r['errors']['nosym']:.1e}")
    print(f"\n{'kernel':<8} {'data':<24} {'dtype':<8} {'R':>4} {'ok':<5} {'kernel':>9} {'call':>9} {'call dev':>9} "
          f"{'nosym':>9} {'peer':>9} {'x peer':>7} {'x nosym':>7} {'bound':>6} plan")
    for r in report.data["timings"]:
        peer = f"{r['peer_ms']:9.3f}" if r.get("peer_ms") is not None else f"{'-':>9}"
        ratio = f"{r['speedup_vs_peer']:7.2f}" if r.get("speedup_vs_peer") else f"{'-':>7}"
        bound = f"{r['memory_bound']:6.1f}" if r.get("memory_bound") else f"{'-':>6}"
        print(f"{r['kernel']:<8} {r['matrix'][:24]:<24} {r['dtype']:<8} {r.get('rank') or '':>4} {r['ok']!s:<5} "
              f"{r['kernel_ms']:9.3f} {r['call_ms']:9.3f} {r.get('call_device_ms', r['call_ms']):9.3f} "
              f"{r['nosym_ms']:9.3f} {peer} {ratio} {r['speedup_vs_nosym']:7.2f} {bound} {r.get('gpu_plan', '')}")
    if report.data["skipped"]:
        print(f"skipped (budget): {', '.join(report.data['skipped'])}")
    print(f"\nwrote {path} in {time.perf_counter() - STARTED:.0f}s")
    return 0 if report.data["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
