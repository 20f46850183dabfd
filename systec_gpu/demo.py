"""`systec-gpu demo`: the catalog on real data shipped in the package, checked against numpy.

Runs on the GPU (Triton) when one is present, else on the CPU (Numba). Prints, per kernel, the
time of the symmetric kernel and of the same expression compiled without symmetry (same run),
then the explained program and generated source of one kernel.
"""

from __future__ import annotations

import time

import numpy as np

from .catalog import CATALOG, compile_catalog
from .dense_symmetry import mirror_canonical
from .ir.einsum_interpreter import interpret_einsum
from .storage import SymmetricTensor

TENSOR_NODES = 120  # the demo keeps the sub-hypergraph of the first nodes: its dense oracle stays small


def demo_inputs(rng: np.random.Generator) -> dict[str, dict]:
    """Inputs of each catalog kernel: real data where the package ships it."""
    from . import example_path
    from .io import load

    matrix = load(example_path("bcsstk01.mtx.gz"))  # a real symmetric stiffness matrix (SuiteSparse)
    # a real hypergraph: canonical entries of a symmetric tensor
    hyper = load(example_path("contact-high-school_sym3_canonical.tns.gz"), symmetric=True)
    keep = np.all(hyper.indices < TENSOR_NODES, axis=0)
    tensor3 = SymmetricTensor.from_canonical(hyper.indices[:, keep], np.asarray(hyper.values)[keep],
                                             (TENSOR_NODES,) * 3, "full")
    n = matrix.shape[0]

    def random_symmetric(order: int, size: int, nnz: int) -> SymmetricTensor:
        # Generated (no real 4-D/5-D data ships with the package): random canonical entries.
        dense = np.zeros((size,) * order)
        coords = np.sort(rng.integers(0, size, (nnz, order)), axis=1)  # canonical: sorted
        dense[tuple(coords.T)] = rng.random(nnz)
        return SymmetricTensor.from_dense(mirror_canonical(dense, [tuple(range(order))]), "full")

    x = rng.random(n)
    return {
        "ssymv": {"A": matrix, "x": x},
        "syprd": {"A": matrix, "x": x},
        "ssymm": {"A": matrix, "X": rng.random((n, 16))},
        "ssyrk": {"A": rng.random((200, 16))},
        "ttm": {"A": tensor3, "B": rng.random((TENSOR_NODES, 8))},
        "mttkrp3": {"A": tensor3, "B": rng.random((TENSOR_NODES, 8))},
        "mttkrp4": {"A": random_symmetric(4, 16, 300), "B": rng.random((16, 8))},
        "mttkrp5": {"A": random_symmetric(5, 10, 200), "B": rng.random((10, 8))},
        "bellman": {"A": matrix.with_values(np.abs(np.asarray(matrix.values))), "x": rng.random(n)},
    }


def dense_oracle(kernel, inputs: dict) -> np.ndarray:
    from . import algebra

    reduce = kernel.program.einsum.semiring.reduce
    arrays = {}
    for name, value in inputs.items():
        if isinstance(value, SymmetricTensor):
            dense = np.full(value.shape, algebra.fill_value(reduce))
            expanded = value.expanded()
            dense[tuple(expanded.indices)] = np.asarray(expanded.values)
            arrays[name] = dense
        else:
            arrays[name] = np.asarray(value)
    return interpret_einsum(kernel.program.einsum, arrays)


def paired_times(first, second, budget: float = 0.4, rounds: tuple[int, int] = (15, 201)):
    """Per-round times of two calls, interleaved (first, second, first, ...) so that drift of a
    shared machine hits both alike: at least rounds[0] rounds, more while `budget` seconds last."""
    first(), second()  # warm-up: compilation and caches
    a, b = [], []
    start = time.perf_counter()
    while len(a) < rounds[1] and (len(a) < rounds[0] or time.perf_counter() - start < budget):
        for fn, out in ((first, a), (second, b)):
            t = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t)
    return np.array(a), np.array(b)


def speedup_text(t_sym: np.ndarray, t_base: np.ndarray) -> str:
    """Median of the per-round ratios with its interquartile range; a ratio whose range holds 1
    is not a speedup and is printed as such."""
    ratios = t_base / t_sym
    low, mid, high = np.percentile(ratios, [25, 50, 75])
    text = f"{mid:.2f}x [{low:.2f}-{high:.2f}]"
    return text + " ~1 (noise)" if low <= 1.0 <= high else text


def run_demo(show: str = "mttkrp3") -> int:
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    rng = np.random.default_rng(2025)
    inputs = demo_inputs(rng)
    if device == "cuda":
        inputs = {k: {n: torch.as_tensor(v, device="cuda") if isinstance(v, np.ndarray) else v
                      for n, v in d.items()} for k, d in inputs.items()}
    print(f"systec_gpu demo on {device} ({'Triton' if device == 'cuda' else 'Numba'} backend)")
    header = (f"{'kernel':<9} {'data':<34} {'max rel err':>11} {'symmetric':>11} {'no symmetry':>12} "
              f"{'speedup [IQR]':>26} {'work':>6}")
    print(header)
    print("-" * len(header))
    failures = 0
    for name in CATALOG:
        data = inputs[name]
        symmetric = compile_catalog(name)
        baseline = compile_catalog(name, symmetry=False)
        result = symmetric(**data).cpu().numpy()
        expected = dense_oracle(symmetric, {k: v.cpu().numpy() if hasattr(v, "cpu") else v for k, v in data.items()})
        finite = np.isfinite(expected)
        scale = max(np.abs(expected[finite]).max(initial=0.0), 1e-300)
        error = float(np.abs(result[finite] - expected[finite]).max(initial=0.0) / scale)
        same_inf = bool(np.array_equal(np.isfinite(result), finite))
        ok = error < 1e-10 and same_inf
        failures += not ok
        t_sym, t_base = paired_times(lambda s=symmetric, d=data: s(**d), lambda b=baseline, d=data: b(**d))
        a = data["A"]
        described = f"{'x'.join(map(str, a.shape))}, {getattr(a, 'nnz', a.size if hasattr(a, 'size') else '')} stored"
        print(f"{name:<9} {described:<34} {error:>11.1e} {np.median(t_sym) * 1e3:>9.3f}ms "
              f"{np.median(t_base) * 1e3:>10.3f}ms {speedup_text(t_sym, t_base):>26} "
              f"{symmetric.stats['work_ratio']:>6.3f}" + ("" if ok else "  MISMATCH"))
    print("\nspeedup: median of same-run, interleaved per-round ratios [interquartile range]; '~1 (noise)' where"
          " the range holds 1.\nwork: points visited / points of the non-symmetric kernel.")
    print("These inputs are tiny (they ship in the package): `systec-gpu bench` measures at scale.\n")
    kernel = compile_catalog(show)
    print(f"== {show}: explained program ==")
    print(kernel.explain())
    print(f"== {show}: generated {'Triton' if device == 'cuda' else 'Numba'} source ==")
    print(kernel.source("triton" if device == "cuda" else "numba"))
    if failures:
        print(f"{failures} kernel(s) disagreed with numpy")
    return 1 if failures else 0
