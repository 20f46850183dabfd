"""The operator table at work: nan through min=/max= on every Triton write path, the semiring
check (a sparse operand's unstored entries must be the reduction's identity and annihilate the
operator that binds them), the (max, *) semiring over non-negative values, against the numpy
oracle on the reference, Numba and Triton-interpreter backends.

TRITON_INTERPRET must be set before a generated kernel is decorated (see test_triton_backend.py).
"""

import itertools
import os

os.environ["TRITON_INTERPRET"] = "1"

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import systec_gpu as sg  # noqa: E402
from systec_gpu.backends.triton_backend import run_triton, triton_source  # noqa: E402
from systec_gpu.ir.einsum_interpreter import interpret_einsum  # noqa: E402
from systec_gpu.runtime import bind, finish  # noqa: E402
from systec_gpu.schedule import DenseTriangleSchedule, RowBlockSchedule, SparseTileSchedule  # noqa: E402
from systec_gpu.storage import SymmetricTensor  # noqa: E402

# ---------------------------------------------------------------------------------------------
# nan propagates through min= and max= on every Triton write path (numpy's np.minimum does)

NAN_SCHEDULES = {
    "rows-store": RowBlockSchedule(rows_per_block=2, lanes_per_row=2, dense_block=2, row_write="store"),
    "rows-atomic": RowBlockSchedule(rows_per_block=2, lanes_per_row=2, dense_block=2, row_write="atomic"),
    "tiles-segmented": SparseTileSchedule(nnz_per_tile=4, dense_block=2, segmented=True),
    "tiles-scatter": SparseTileSchedule(nnz_per_tile=4, dense_block=2, segmented=False),
}


def _nan_matrix(dtype, sign: float) -> np.ndarray:
    """A symmetric 6x6 matrix with nan (of the given sign) on and off the diagonal, in a row of
    several entries and alone in a row, next to finite entries of both signs."""
    a = np.zeros((6, 6))
    rng = np.random.default_rng(3)
    for i, j in [(0, 0), (0, 2), (0, 4), (1, 3), (2, 2), (2, 5), (3, 4), (4, 4), (5, 5)]:
        a[i, j] = a[j, i] = rng.uniform(-2, 2)
    nan = np.copysign(np.nan, sign)
    for i, j in [(0, 2), (3, 3), (4, 5)]:
        a[i, j] = a[j, i] = nan
    return a.astype(dtype)


def _oracle(kernel, dense: dict) -> np.ndarray:
    return interpret_einsum(kernel.program.einsum, dense)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("sign", [1.0, -1.0], ids=["+nan", "-nan"])
@pytest.mark.parametrize("schedule", list(NAN_SCHEDULES))
@pytest.mark.parametrize("reduce", ["min=", "max="])
def test_nan_propagates_on_every_triton_write_path(reduce, schedule, sign, dtype):
    a = _nan_matrix(dtype, sign)
    fmt = "csr" if schedule.startswith("rows") else "coo"
    rng = np.random.default_rng(5)
    cases = [
        (f"y[i] {reduce} A[i,j] + x[j]", {"x": rng.uniform(-1, 1, 6).astype(dtype)}),
        (f"C[i,r] {reduce} A[i,j] + X[j,r]", {"X": rng.uniform(-1, 1, (6, 3)).astype(dtype)}),
        (f"y[] {reduce} x[i] + A[i,j] + x[j]", {"x": rng.uniform(-1, 1, 6).astype(dtype)}),
    ]
    for expr, dense in cases:
        for symmetry in (True, False):
            kernel = sg.compile(expr, symmetric={"A": "full"}, formats={"A": fmt}, backend="triton",
                                symmetry=symmetry)
            inputs = {"A": SymmetricTensor.from_dense(a, "full"), **dense}
            args = bind(kernel.loops, kernel.program, inputs)
            try:
                run_triton(kernel.loops, args, NAN_SCHEDULES[schedule])
            except sg.passes.lower_loops.ScheduleError:
                continue  # a schedule this program cannot take (e.g. row blocks of a scalar output)
            got = finish(args, kernel.loops, kernel.program).numpy()
            expected = _oracle(kernel, {"A": np.where(a == 0, np.inf if reduce == "min=" else -np.inf, a), **dense})
            np.testing.assert_array_equal(np.isnan(got), np.isnan(expected), err_msg=f"{expr} {symmetry}")
            np.testing.assert_allclose(got, expected, rtol=1e-6, err_msg=f"{expr} symmetry={symmetry}")


@pytest.mark.parametrize("reduce", ["min=", "max="])
def test_nan_propagates_through_dense_programs(reduce):
    """Owned writes (an accumulator per output element) and the dense triangle."""
    rng = np.random.default_rng(9)
    a = rng.uniform(-1, 1, (5, 4))
    a[1, 2] = np.nan
    a[3, 0] = -np.nan
    kernel = sg.compile(f"C[i,j] {reduce} A[i,k] + A[j,k]", backend="triton")
    args = bind(kernel.loops, kernel.program, {"A": a})
    run_triton(kernel.loops, args, DenseTriangleSchedule(block=16, k_block=16))
    got = finish(args, kernel.loops, kernel.program).numpy()
    expected = _oracle(kernel, {"A": a})
    assert np.isnan(expected).any() and not np.isnan(expected).all()
    np.testing.assert_array_equal(got, expected)


def test_nan_combines_are_spelled_by_the_table():
    kernel = sg.compile("y[i] min= A[i,j] + x[j]", symmetric={"A": "full"}, backend="triton")
    source = triton_source(kernel.loops, SparseTileSchedule(nnz_per_tile=4, dense_block=2))
    assert "propagate_nan=tl.PropagateNan.ALL" in source
    assert "tl.min(" not in source  # Triton's tl.min combines with tl.minimum's default: nan dropped
    assert 'float("-nan")' in source  # the nan operand of atomic_min keeps its place (algebra._NAN_STAYS)


# ---------------------------------------------------------------------------------------------
# Semirings: (max, *) over non-negative values, the refusals, the call-time check


def _dense_of(value) -> np.ndarray:
    """A dense array of an input: a sparse one's unstored entries hold 0, the zero of (max, *)
    over non-negative values (and of (+, *))."""
    if isinstance(value, sg.SparseTensor):
        dense = np.zeros(value.shape)
        stored = value.expanded() if isinstance(value, SymmetricTensor) else value
        dense[tuple(np.asarray(stored.indices))] = np.asarray(stored.values)
        return dense
    return np.asarray(value, dtype=np.float64)


def _nonnegative_symmetric(order: int, size: int, rng, empty_row: int | None = None) -> SymmetricTensor:
    """A symmetric tensor of values in [0, 2), about half of its canonical entries stored; none in
    `empty_row` (whose max over nothing is the zero, 0)."""
    canonical = [c for c in itertools.combinations_with_replacement(range(size), order)
                 if empty_row not in c and rng.random() < 0.5]
    coords = np.array(canonical, dtype=np.int64).T.reshape(order, -1)
    return SymmetricTensor.from_canonical(coords, rng.uniform(0.0, 2.0, coords.shape[1]), (size,) * order, "full")


MAX_TIMES = [
    ("y[i] max= A[i,j] * x[j]", 2, {"x": (6,)}),
    ("C[i,r] max= A[i,j] * X[j,r]", 2, {"X": (6, 3)}),
    ("y[] max= x[i] * A[i,j] * x[j]", 2, {"x": (6,)}),
    ("y[i] max= A[i,j,k] * x[j] * x[k]", 3, {"x": (6,)}),
]


@pytest.mark.parametrize("symmetry", [True, False], ids=["sym", "nosym"])
@pytest.mark.parametrize("backend", ["reference", "numba", "triton"])
@pytest.mark.parametrize(("expr", "order", "dense"), MAX_TIMES, ids=[m[0] for m in MAX_TIMES])
def test_max_times_over_nonnegative_values_matches_numpy(expr, order, dense, backend, symmetry):
    rng = np.random.default_rng(order + len(expr))
    inputs = {"A": _nonnegative_symmetric(order, 6, rng, empty_row=4),
              **{name: rng.uniform(0.0, 2.0, shape) for name, shape in dense.items()}}
    kernel = sg.compile(expr, symmetric={"A": "full"}, values="nonnegative", backend=backend, symmetry=symmetry)
    ring = kernel.program.einsum.semiring
    assert (ring.reduce.symbol, ring.combine.symbol, ring.zero) == ("max", "*", 0.0)
    expected = interpret_einsum(kernel.program.einsum, {n: _dense_of(v) for n, v in inputs.items()})
    got = kernel(**inputs).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=0)
    if expected.ndim:
        assert (expected == 0).any()  # the empty row: 0, not -inf


def test_max_times_over_reals_is_refused_naming_the_operators():
    with pytest.raises(sg.algebra.SemiringError, match=r"A is sparse.*-inf \* -2\.5 = inf.*\(max, \*\) is not a "
                       r"semiring over real values.*values='nonnegative'"):
        sg.compile("y[i] max= A[i,j] * x[j]", symmetric={"A": "full"})
    with pytest.raises(sg.algebra.SemiringError, match=r"\(min, \*\) is not a semiring over real values.*densely"):
        sg.compile("y[i] min= A[i,j] * x[j]", formats={"A": "coo"})
    # Dense operands have no unstored entries: max over products is plain arithmetic.
    kernel = sg.compile("y[i] max= A[i,j] * x[j]", backend="numba")
    a, x = np.array([[-1.0, 2.0], [3.0, -4.0]]), np.array([-1.0, 0.5])
    np.testing.assert_array_equal(kernel(A=a, x=x).numpy(), (a * x).max(axis=1))
    # A sparse operand in a sum under += holds 0, the identity of +: accepted as before.
    sg.compile("y[i] += A[i,j] + x[j]", formats={"A": "coo"})


def test_declared_values_are_checked_at_call_time():
    kernel = sg.compile("y[i] max= A[i,j] * x[j]", symmetric={"A": "full"}, values="nonnegative",
                        backend="numba")
    a = _nonnegative_symmetric(2, 4, np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"x: 1 value\(s\) outside the declared values='nonnegative'.*\(max, \*\)"):
        kernel(A=a, x=np.array([1.0, -0.5, 2.0, 0.0]))
    negative = SymmetricTensor.from_dense(-_dense_of(a), "full")
    with pytest.raises(ValueError, match=r"A: \d+ value\(s\) outside"):
        kernel(A=negative, x=np.ones(4))
    kernel(A=negative, x=np.ones(4), check=False)  # the user's word, as for declared symmetry
    with pytest.raises(ValueError, match="values='positive': unknown"):
        sg.compile("y[i] max= A[i,j] * x[j]", values="positive")


def test_a_table_row_that_is_no_semiring_is_refused_when_the_table_loads(monkeypatch):
    monkeypatch.setattr(sg.algebra, "SEMIRING_ROWS", (("max=", "max", "mul", "real"),))
    with pytest.raises(sg.algebra.SemiringError, match=r"SEMIRING_ROWS: max= \(max, \*\) over real values"):
        sg.algebra._semirings()


def test_the_parser_reads_its_tokens_from_the_table():
    from systec_gpu.frontend.parser import parse

    for symbol in sg.algebra.REDUCTIONS:
        assert parse(f"y[i] {symbol} A[i,j] * x[j]").reduce == symbol
    for name in sg.algebra.FUNCTIONS:
        assert parse(f"y[i] += {name}(A[i,j], x[j])").rhs.op == sg.algebra.FUNCTIONS[name]


def test_the_right_hand_side_and_the_values_pick_the_semiring():
    def ring(expr, values="real"):
        return sg.compile(expr, values=values, backend="reference").program.einsum.semiring

    # declaring non-negative values does not turn a (max, +) statement into (max, *)
    assert (ring("y[i] max= A[i,j] + x[j]", "nonnegative").combine.symbol, ring("y[i] max= A[i,j] + x[j]",
                                                                                 "nonnegative").zero) == ("+", -np.inf)
    assert ring("y[i] max= A[i,j] * x[j]", "nonnegative").zero == 0.0
    assert ring("y[i] max= A[i,j] * x[j]").combine.symbol == "+"  # over the reals: (max, +), refused if A is sparse
    assert ring("y[i] += A[i,j] * x[j]", "nonnegative").domain.name == "nonnegative"  # checked at call time


# (or, and) over booleans (0/1 values): reachability, added as one domain and one row in algebra.py

def _undirected_graph(size: int, rng) -> SymmetricTensor:
    """A symmetric 0/1 adjacency matrix with self-loops on some vertices and an isolated one."""
    canonical = [(i, j) for i in range(size) for j in range(i, size) if 3 not in (i, j) and rng.random() < 0.35]
    coords = np.array(canonical, dtype=np.int64).T.reshape(2, -1)
    return SymmetricTensor.from_canonical(coords, np.ones(coords.shape[1]), (size, size), "full")


@pytest.mark.parametrize("symmetry", [True, False], ids=["sym", "nosym"])
@pytest.mark.parametrize("backend", ["reference", "numba", "triton"])
def test_reachability_over_booleans_matches_numpy(backend, symmetry):
    rng = np.random.default_rng(12)
    a = _undirected_graph(7, rng)
    adjacency = _dense_of(a).astype(bool)
    frontier = np.zeros(7)
    frontier[[0, 5]] = 1.0
    step = sg.compile("y[i] |= A[i,j] * x[j]", symmetric={"A": "full"}, values="boolean", backend=backend,
                      symmetry=symmetry)
    two_hops = sg.compile("R[i,j] |= A[i,k] * A[k,j]", symmetric={"A": "full"}, values="boolean",
                          backend=backend, symmetry=symmetry)
    for kernel, inputs, truth in [
        (step, {"A": a, "x": frontier}, (adjacency & frontier.astype(bool)[None, :]).any(axis=1)),
        (two_hops, {"A": a}, (adjacency.astype(int) @ adjacency.astype(int)) > 0),
    ]:
        expected = interpret_einsum(kernel.program.einsum, {n: _dense_of(v) for n, v in inputs.items()})
        got = kernel(**inputs).numpy()
        np.testing.assert_array_equal(got, expected)
        np.testing.assert_array_equal(got, truth.astype(float))
    with pytest.raises(ValueError, match=r"x: 1 value\(s\) outside the declared values='boolean'"):
        step(A=a, x=np.array([1.0, 0.0, 0.5, 0.0, 0.0, 0.0, 1.0]))
    with pytest.raises(sg.algebra.SemiringError, match=r"\|= over real values: no such semiring.*values='boolean'"):
        sg.compile("y[i] |= A[i,j] * x[j]", symmetric={"A": "full"})
