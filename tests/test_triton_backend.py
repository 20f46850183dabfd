"""Triton backend under the CPU interpreter: every catalog kernel against the numpy oracle.

TRITON_INTERPRET must be set before a generated kernel is decorated: the backend loads its
kernels lazily, so setting it at import of this module is early enough.
"""

import os

os.environ["TRITON_INTERPRET"] = "1"

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from systec_gpu import compile as compile_kernel  # noqa: E402
from systec_gpu.backends.triton_backend import run_triton, triton_source  # noqa: E402
from systec_gpu.catalog import CATALOG, compile_catalog  # noqa: E402
from systec_gpu.ir.einsum_interpreter import interpret_einsum  # noqa: E402
from systec_gpu.ir.tile import SegmentedUpdate  # noqa: E402
from systec_gpu.passes.lower_loops import ScheduleError  # noqa: E402
from systec_gpu.runtime import bind, finish  # noqa: E402
from systec_gpu.schedule import DenseTriangleSchedule, SparseTileSchedule, apply_schedule  # noqa: E402
from systec_gpu.storage import SymmetricTensor  # noqa: E402

from .symdata import dense_for_oracle, symmetric_sparse  # noqa: E402

ORDER = {"ssymv": 2, "syprd": 2, "ssymm": 2, "bellman": 2, "ttm": 3, "mttkrp3": 3, "mttkrp4": 4, "mttkrp5": 5}


def inputs_for(name: str, case: str, rng, dtype=np.float64) -> dict:
    size, rank = 6, 3
    if name == "ssyrk":
        shape = {"empty": (0, 3), "single": (1, 1), "classes": (7, 3)}[case]
        return {"A": rng.uniform(-1, 1, shape).astype(dtype)}
    order = ORDER[name]
    if case == "empty":
        a = SymmetricTensor.from_canonical(np.zeros((order, 0), dtype=np.int64), np.zeros(0, dtype), (size,) * order,
                                           "full")
    elif case == "single":
        coords = np.array([[0] + [1] * (order - 1)]).T
        a = SymmetricTensor.from_canonical(coords, np.array([1.5], dtype), (size,) * order, "full")
    else:
        a = symmetric_sparse(order, size, rng, per_class=2, dtype=dtype)  # every diagonal class
    if name in ("ssymv", "syprd", "bellman"):
        return {"A": a, "x": rng.uniform(-1, 1, size).astype(dtype)}
    if name == "ssymm":
        return {"A": a, "X": rng.uniform(-1, 1, (size, rank)).astype(dtype)}
    return {"A": a, "B": rng.uniform(-1, 1, (size, rank)).astype(dtype)}


def oracle(kernel, inputs: dict) -> np.ndarray:
    symbol = kernel.program.einsum.reduce
    return interpret_einsum(kernel.program.einsum, {n: dense_for_oracle(v, symbol) for n, v in inputs.items()})


@pytest.mark.parametrize("symmetry", [True, False], ids=["sym", "nosym"])
@pytest.mark.parametrize("case", ["classes", "single", "empty"])
@pytest.mark.parametrize("name", list(CATALOG))
def test_catalog_kernel_matches_numpy_fp64(name, case, symmetry):
    rng = np.random.default_rng(11)
    kernel = compile_catalog(name, backend="triton", symmetry=symmetry)
    inputs = inputs_for(name, case, rng)
    result = kernel(**inputs)
    expected = oracle(kernel, inputs)
    assert result.dtype == torch.float64 and result.shape == expected.shape
    np.testing.assert_allclose(result.numpy(), expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", ["ssymv", "ssymm", "ssyrk", "mttkrp3", "bellman"])
def test_catalog_kernel_fp32(name):
    rng = np.random.default_rng(3)
    kernel = compile_catalog(name, backend="triton")
    inputs = inputs_for(name, "classes", rng, dtype=np.float32)
    result = kernel(**inputs)
    assert result.dtype == torch.float32
    np.testing.assert_allclose(result.numpy(), oracle(kernel, inputs), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["ssymv", "mttkrp4", "ttm"])
def test_many_small_tiles(name):
    """Tiles of 4 nonzeros and dense blocks of 2 lanes: several tiles, ragged last tiles and columns."""
    rng = np.random.default_rng(5)
    kernel = compile_catalog(name, backend="triton")
    inputs = inputs_for(name, "classes", rng)
    inputs["A"] = symmetric_sparse(ORDER[name], 6, rng, per_class=3)
    args = bind(kernel.loops, kernel.program, inputs)
    assert args.driver.nnz > 4  # at least two tiles
    run_triton(kernel.loops, args, SparseTileSchedule(nnz_per_tile=4, dense_block=2))
    result = finish(args, kernel.loops, kernel.program).numpy()
    np.testing.assert_allclose(result, oracle(kernel, inputs), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("symmetry", [True, False], ids=["sym", "nosym"])
@pytest.mark.parametrize("n", [1, 4, 7, 9])
def test_ssyrk_owned_store_writes_every_element(n, symmetry):
    """SSYRK stores (does not accumulate): poison the output first; blocks of 4 on n up to 9
    give diagonal, off-diagonal and ragged blocks. Only canonical blocks are launched, yet they
    store both halves: every element is written by the kernel, the host mirrors nothing."""
    rng = np.random.default_rng(n)
    kernel = compile_catalog("ssyrk", backend="triton", symmetry=symmetry)
    inputs = {"A": rng.uniform(-1, 1, (n, 3))}
    args = bind(kernel.loops, kernel.program, inputs)
    run_triton(kernel.loops, args, DenseTriangleSchedule(block=4, dot=False), poison=np.nan)
    assert args.output_mirrored == symmetry
    expected = inputs["A"] @ inputs["A"].T
    # The kernel's own output, before finish(): complete, both halves.
    np.testing.assert_allclose(args.partial[0], expected, rtol=1e-10, atol=1e-10)
    result = finish(args, kernel.loops, kernel.program).numpy()
    np.testing.assert_allclose(result, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("precision", ["ieee", "tf32"])
@pytest.mark.parametrize("symmetry", [True, False], ids=["sym", "nosym"])
@pytest.mark.parametrize("n,k", [(1, 1), (16, 16), (17, 5), (40, 33)])
def test_ssyrk_tl_dot_stores_every_element(n, k, symmetry, precision):
    """tl.dot over blocks of 16 (k steps of 16): diagonal, off-diagonal and ragged blocks, a
    ragged last k step; poisoned output, so every element must be stored by the kernel. (The
    interpreter multiplies in the input dtype whatever the precision; on a GPU "tf32" rounds.)"""
    rng = np.random.default_rng(n * 100 + k)
    kernel = compile_catalog("ssyrk", backend="triton", symmetry=symmetry)
    inputs = {"A": rng.uniform(-1, 1, (n, k))}
    args = bind(kernel.loops, kernel.program, inputs)
    schedule = DenseTriangleSchedule(block=16, k_block=16, input_precision=precision)
    assert "tl.dot(" in triton_source(kernel.loops, schedule)
    run_triton(kernel.loops, args, schedule, poison=np.nan)
    expected = inputs["A"] @ inputs["A"].T
    np.testing.assert_allclose(args.partial[0], expected, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(finish(args, kernel.loops, kernel.program).numpy(), expected, rtol=1e-10, atol=1e-10)


def test_ssyrk_canonical_output_keeps_the_identity_below_the_diagonal():
    """canonical_output asks for the canonical part only: the mirror half the kernel stored is cleared."""
    a = np.random.default_rng(4).uniform(-1, 1, (9, 2))
    kernel = compile_catalog("ssyrk", backend="triton")
    result = kernel(A=a, canonical_output=True).numpy()
    np.testing.assert_allclose(result, np.triu(a @ a.T), rtol=1e-10, atol=1e-10)
    assert (result[np.tril_indices(9, -1)] == 0).all()


SPARSE = [name for name in CATALOG if name != "ssyrk"]


@pytest.mark.parametrize("segmented", [True, False], ids=["segmented", "scatter"])
@pytest.mark.parametrize("name", SPARSE)
def test_catalog_kernel_segmented_on_and_off(name, segmented):
    """Tiles of 4 nonzeros, dense blocks of 2: several runs of the leading index per tile, runs
    crossing tile edges, ragged last tiles and columns; both write paths against the oracle."""
    rng = np.random.default_rng(17)
    kernel = compile_catalog(name, backend="triton")
    inputs = inputs_for(name, "classes", rng)
    inputs["A"] = symmetric_sparse(ORDER[name], 6, rng, per_class=12 if ORDER[name] == 2 else 3)
    schedule = SparseTileSchedule(nnz_per_tile=4, dense_block=2, segmented=segmented)
    tiles = apply_schedule(kernel.loops, schedule)
    segments = [s for lv in tiles.levels for s in lv.stmts if isinstance(s, SegmentedUpdate)]
    assert bool(segments) == (segmented and name != "ttm")  # TTM's outputs never use the leading index
    args = bind(kernel.loops, kernel.program, inputs)
    assert args.driver.nnz > 8  # three or more tiles
    run_triton(kernel.loops, args, schedule)
    result = finish(args, kernel.loops, kernel.program).numpy()
    np.testing.assert_allclose(result, oracle(kernel, inputs), rtol=1e-10, atol=1e-10)


def _runs_matrix(rng, lengths, size):
    """A symmetric sparse matrix whose canonical row i holds lengths[i] nonzeros (columns >= i)."""
    rows, cols = [], []
    for i, length in enumerate(lengths):
        picked = rng.choice(np.arange(i, size), length, replace=False)
        rows += [i] * length
        cols += sorted(picked.tolist())
    coords = np.array([rows, cols])
    return SymmetricTensor.from_canonical(coords, rng.uniform(-2, 2, len(rows)), (size, size), "full")


# 1-D and 2-D outputs indexed by the leading index, and outputs without a lane index; + min= max=
SEGMENTED_EXPRESSIONS = [
    "y[i] += A[i,j] * x[j]",
    "y[i] min= A[i,j] + x[j]",
    "y[i] max= A[i,j] + x[j]",
    "C[i,r] += A[i,j] * X[j,r]",
    "C[i,r] max= A[i,j] + X[j,r]",
    "z[r] min= A[i,j] + X[j,r]",  # no lane index in the output: one write per tile and column
    "z[r] += A[i,j] * X[j,r]",
]


@pytest.mark.parametrize("per_tile", [4, 8])
@pytest.mark.parametrize("expr", SEGMENTED_EXPRESSIONS)
def test_segmented_runs_across_tiles(expr, per_tile):
    """Rows of 1 to 9 nonzeros: tiles holding several runs, runs longer than a tile and runs cut
    by tile edges; for min=/max= x holds infinities, against the oracle with both write paths."""
    rng = np.random.default_rng(per_tile)
    size = 12
    a = _runs_matrix(rng, [1, 5, 2, 9, 1, 1, 3, 4, 2, 1, 2], size)  # 31 nonzeros: ragged last tile
    inputs = {"A": a, "x": rng.uniform(-1, 1, size), "X": rng.uniform(-1, 1, (size, 3))}
    kernel = compile_kernel(expr, symmetric={"A": [(0, 1)]}, backend="triton")
    if "min=" in expr or "max=" in expr:
        # The reduction's identity (absent entries are +inf for min=, -inf for max=): inf + -inf
        # would be nan in the oracle itself, so x takes the one of the same sign.
        inf = np.inf if "min=" in expr else -np.inf
        inputs["x"][[3, 7]] = inf
        inputs["X"][[5, 3], [1, 0]] = inf
    inputs = {n: v for n, v in inputs.items() if f"{n}[" in expr}
    expected = oracle(kernel, inputs)
    for segmented in (True, False):
        schedule = SparseTileSchedule(nnz_per_tile=per_tile, dense_block=2, segmented=segmented)
        tiles = apply_schedule(kernel.loops, schedule)
        assert any(isinstance(s, SegmentedUpdate) for lv in tiles.levels for s in lv.stmts) == segmented
        args = bind(kernel.loops, kernel.program, inputs)
        rows = args.driver.pointers
        assert rows is not None and (np.diff(rows) > per_tile).any()  # a run longer than a tile
        run_triton(kernel.loops, args, schedule)
        result = finish(args, kernel.loops, kernel.program).numpy()
        np.testing.assert_allclose(result, expected, rtol=1e-10, atol=1e-10)


def test_segmented_coo_driver_with_uint32_coordinates():
    """COO-driven MTTKRP (rows as coordinates, not pointers): the run flags read the neighbours' rows."""
    rng = np.random.default_rng(8)
    kernel = compile_catalog("mttkrp3", backend="triton")
    inputs = inputs_for("mttkrp3", "classes", rng)
    args = bind(kernel.loops, kernel.program, inputs)
    assert args.driver.pointers is None
    args.driver.structure.coords = tuple(c.astype(np.uint32) for c in args.driver.coords)
    run_triton(kernel.loops, args, SparseTileSchedule(nnz_per_tile=4, dense_block=2))
    result = finish(args, kernel.loops, kernel.program).numpy()
    np.testing.assert_allclose(result, oracle(kernel, inputs), rtol=1e-10, atol=1e-10)


def test_bellman_with_unreachable_and_infinite_entries():
    """min= with +inf in x: masked atomics, never 0 * inf."""
    rng = np.random.default_rng(2)
    inputs = inputs_for("bellman", "classes", rng)
    inputs["x"][[1, 4]] = np.inf
    kernel = compile_catalog("bellman", backend="triton")
    np.testing.assert_array_equal(kernel(**inputs).numpy(), oracle(kernel, inputs))


def test_ssymv_with_infinite_x_keeps_zero_factors_out():
    """The i=j class has factor 0 for the transposed update: inf * 0 must not leak a nan."""
    coords = np.array([[2], [2]])
    a = SymmetricTensor.from_canonical(coords, np.array([1.0]), (4, 4), "full")
    x = np.array([1.0, 2.0, np.inf, 3.0])
    result = compile_catalog("ssymv", backend="triton")(A=a, x=x).numpy()
    np.testing.assert_array_equal(result, [0.0, 0.0, np.inf, 0.0])


EXPRESSIONS = [
    ("C[i,j] += A[i,k]*B[k,j]", {}, {"A": (5, 4), "B": (4, 6)}),
    ("y[] += x[i]*z[i]", {}, {"x": (7,), "z": (7,)}),
    ("C[i,j] max= A[i,k] + B[k,j]", {}, {"A": (5, 3), "B": (3, 4)}),
    ("y[i] += A[i,j,k]*x[j]*x[k]", {"A": [(1, 2)]}, {"A": (4, 5, 5), "x": (5,)}),
    ("C[i,j] += A[i,j]*B[i,j]", {"C": "full"}, {"A": (5, 5), "B": (5, 5)}),
]


@pytest.mark.parametrize("expr,symmetric,shapes", EXPRESSIONS, ids=[e[0] for e in EXPRESSIONS])
def test_other_expressions(expr, symmetric, shapes):
    rng = np.random.default_rng(9)
    inputs = {}
    for name, shape in shapes.items():
        array = rng.uniform(-1, 1, shape)
        if name in symmetric and name != "C":
            from systec_gpu.dense_symmetry import mirror_canonical

            array = mirror_canonical(array, symmetric[name])
        inputs[name] = array
    if "C" in symmetric:  # declared output symmetry needs symmetric inputs
        inputs = {n: (a + a.T) / 2 for n, a in inputs.items()}
    for symmetry in (True, False):
        kernel = compile_kernel(expr, symmetric=symmetric, backend="triton", symmetry=symmetry)
        np.testing.assert_allclose(kernel(**inputs).numpy(), oracle(kernel, inputs), rtol=1e-10, atol=1e-10)


def _random_products(seed: int, count: int):
    """Products of 2-3 dense operands over indices i, j, k with a random output: a fixed-seed
    generator of expressions (dense path: grid axes, scalar loops, owned or atomic writes)."""
    rng = np.random.default_rng(seed)
    letters = ["i", "j", "k"]
    found = []
    while len(found) < count:
        operands = []
        for t in range(rng.integers(2, 4)):
            idx = list(rng.choice(letters, rng.integers(1, 3), replace=False))
            operands.append((f"T{t}", idx))
        used = sorted({i for _, idx in operands for i in idx})
        out = [i for i in used if rng.random() < 0.5]
        reduce = rng.choice(["+=", "max="])
        join = " * " if reduce == "+=" else " + "
        expr = f"C[{','.join(out)}] {reduce} " + join.join(f"{t}[{','.join(idx)}]" for t, idx in operands)
        found.append((expr, {t: tuple(3 + letters.index(i) for i in idx) for t, idx in operands}))
    return found


@pytest.mark.parametrize("expr,shapes", _random_products(4, 6), ids=[e for e, _ in _random_products(4, 6)])
def test_random_dense_expressions(expr, shapes):
    rng = np.random.default_rng(1)
    inputs = {name: rng.uniform(-1, 1, shape) for name, shape in shapes.items()}
    kernel = compile_kernel(expr, backend="triton")
    # Every operand has an index, so every kernel has loops: a refusal here is a failure.
    result = kernel(**inputs).numpy()
    np.testing.assert_allclose(result, oracle(kernel, inputs), rtol=1e-10, atol=1e-10)


def test_source_is_readable_and_deterministic():
    kernel = compile_catalog("mttkrp3")
    source = triton_source(kernel.loops)
    assert source == triton_source(compile_catalog("mttkrp3").loops)
    assert "@triton.jit" in source and "tl.atomic_add" in source and "mult" in source
    compile(source, "<triton>", "exec")  # valid Python


def test_scalar_output_without_loops_is_refused():
    kernel = compile_kernel("y[] += a[] * b[]", backend="triton")
    with pytest.raises(ScheduleError, match="no loops"):
        kernel(a=np.ones(()), b=np.ones(()))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("name", list(CATALOG))
def test_catalog_on_cuda(name):
    rng = np.random.default_rng(0)
    kernel = compile_catalog(name, backend="triton")
    inputs = inputs_for(name, "classes", rng)
    cuda = {n: torch.from_numpy(v).cuda() if isinstance(v, np.ndarray) else v for n, v in inputs.items()}
    result = kernel(**cuda)
    assert result.device.type == "cuda"
    np.testing.assert_allclose(result.cpu().numpy(), oracle(kernel, inputs), rtol=1e-10, atol=1e-10)
