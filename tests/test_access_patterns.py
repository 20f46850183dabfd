"""Accesses that repeat an index (A[i,i], A[i,j,i]), transposed accesses of a sparse operand
(A[j,i] stored by rows) and an operand read twice, on every backend, against the numpy oracle.

A sparse loop binds one coordinate per mode; a repeated index must only see the stored entries
whose repeated coordinates agree (before the fix, y[i] += A[i,i] summed the whole row i).
"""

import os

os.environ["TRITON_INTERPRET"] = "1"  # before any generated Triton kernel is loaded

import warnings  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import scipy.sparse as sp  # noqa: E402

import systec_gpu as sg  # noqa: E402
from systec_gpu.ir.einsum import accesses  # noqa: E402
from systec_gpu.ir.einsum_interpreter import interpret_einsum  # noqa: E402
from systec_gpu.ir.loop import Guard, SparseLoop  # noqa: E402
from systec_gpu.ir.traverse import walk  # noqa: E402
from systec_gpu.storage import SparseTensor, SymmetricTensor, normalize_groups  # noqa: E402

from .symdata import dense_for_oracle, random_symmetric_dense  # noqa: E402

BACKENDS = ("reference", "numba", "triton")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("fmt", ["coo", "csr"])
def test_diagonal_of_a_sparse_matrix_reads_only_the_diagonal(backend, fmt):
    # The reproduction: A[0,0] = 1, A[2,0] = 2 gives y = [1, 0, 0], not [3, 0, 0].
    a = sp.coo_matrix(([1.0, 2.0], ([0, 2], [0, 0])), shape=(3, 3))
    kernel = sg.compile("y[i] += A[i,i]", formats={"A": fmt}, backend=backend)
    np.testing.assert_array_equal(kernel(A=a).numpy(), [1.0, 0.0, 0.0])
    np.testing.assert_array_equal(kernel(A=a.tocsr()).numpy(), [1.0, 0.0, 0.0])


def test_sparse_loop_binds_one_distinct_index_per_mode():
    kernel = sg.compile("C[i,j] += A[i,j,i]*x[j]", formats={"A": "coo"})
    (loop,) = [n for n in walk(kernel.loops.body) if isinstance(n, SparseLoop)]
    assert len(set(loop.indices)) == len(loop.indices) == 3
    copy = loop.indices[2]
    guards = {(g.lhs.name, g.rhs.name) for g in walk(loop.body) if isinstance(g, Guard)}
    assert {("i", copy.name), (copy.name, "i")} <= guards
    assert f"for (i, j, {copy.name}) in" in kernel.explain()


def test_copy_of_a_repeated_index_does_not_clash_with_a_user_index():
    kernel = sg.compile("y[i] += A[i,i]*B[i_1,i]", formats={"A": "coo"}, backend="reference")
    (loop,) = [n for n in walk(kernel.loops.body) if isinstance(n, SparseLoop)]
    assert loop.indices[1].name not in ("i", "i_1")
    rng = np.random.default_rng(0)
    a, b = rng.uniform(-1, 1, (3, 3)), rng.uniform(-1, 1, (3, 3))
    expected = interpret_einsum(kernel.program.einsum, {"A": a, "B": b})
    np.testing.assert_allclose(kernel(A=SparseTensor.from_dense(a), B=b).numpy(), expected, rtol=1e-12)


# (expression, order of A, symmetric groups of A or None); other operands: x vector, B matrix.
CASES = [
    ("y[i] += A[i,i]", 2, None),
    ("y[] += A[i,i]*x[i]", 2, None),
    ("y[i] min= A[i,i] + x[i]", 2, None),
    ("C[i,j] += A[i,j,i]", 3, None),
    ("y[i] += A[i,i,i]", 3, None),
    ("y[j] += A[i,j]*x[i]", 2, None),  # transposed: the output is the column index
    ("y[i] += A[j,i]*x[j]", 2, None),  # A[j,i] of a row-major A
    ("C[i,k] += A[i,j]*A[j,k]", 2, None),  # read twice
    ("C[i,j] += A[i,j]*A[j,i]", 2, None),  # read twice, once transposed
    ("y[i] += A[i,i]", 2, "full"),
    ("y[i] += A[i,j]*A[j,j]", 2, "full"),
    ("y[j] += A[i,i,j]", 3, "full"),
    ("C[i,j] += A[i,i,j]*x[j]", 3, "full"),
    ("C[i,j] += A[i,j,i]", 3, "full"),
    ("y[] max= A[i,i,i] + x[i]", 3, "full"),
    ("C[i,j] += A[i,j,i]", 3, [(0, 1)]),
    ("y[j] += A[i,i,j,j]", 4, "full"),
    ("C[i,j] += A[i,i,j,k]*x[k]", 4, "full"),
    ("C[i,k] += A[i,j,i,k]*x[j]", 4, [(0, 1), (2, 3)]),
    ("C[i,j] += A[i,j,k]*A[k,k,j]", 3, "full"),
    ("y[i] += A[j,k,i]*B[j,k]", 3, "full"),
]


def _inputs(text, order, groups, rng, size=3):
    shape = (size,) * order
    normalized = normalize_groups(groups, shape) if groups else ()
    dense = random_symmetric_dense(shape, normalized, rng) if groups else random_symmetric_dense(shape, (), rng)
    inputs = {"A": dense}
    if "x[" in text:
        inputs["x"] = rng.uniform(-1, 1, size)
    if "B[" in text:
        inputs["B"] = rng.uniform(-1, 1, (size, size))
    return inputs, normalized


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("text,order,groups", CASES, ids=[f"{t} {g}" for t, _, g in CASES])
def test_access_pattern_matches_the_oracle(text, order, groups, backend):
    rng = np.random.default_rng(7)
    inputs, normalized = _inputs(text, order, groups, rng)
    symmetric = {"A": groups} if groups else None
    formats = ["coo", "dense"] + (["csr"] if order == 2 else [])
    for fmt in formats:
        a = inputs["A"]
        if fmt != "dense":
            a = SymmetricTensor.from_dense(a, normalized) if groups else SparseTensor.from_dense(a)
        call = {**inputs, "A": a}
        for symmetry in (True, False):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                kernel = sg.compile(text, symmetric=symmetric, formats={"A": fmt}, symmetry=symmetry,
                                    backend=backend)
            reduce = kernel.program.einsum.reduce
            expected = interpret_einsum(kernel.program.einsum,
                                        {n: dense_for_oracle(v, reduce) for n, v in call.items()})
            result = kernel(**call).numpy()
            np.testing.assert_allclose(result, expected, rtol=1e-12, atol=1e-12,
                                       err_msg=f"{text} {fmt} symmetry={symmetry} {backend}")
            assert kernel.stats["work_ratio"] <= 1.0 + 1e-12


def test_symmetric_diagonal_reads_canonical_storage():
    # Every diagonal entry is canonical: no expansion needed.
    kernel = sg.compile("y[i] += A[i,i]", symmetric={"A": "full"})
    (loop,) = [n for n in walk(kernel.loops.body) if isinstance(n, SparseLoop)]
    assert not loop.expanded
    # A[i,i,j] reads entries whose sorted coordinates need not start with the repeat: expanded.
    kernel = sg.compile("y[j] += A[i,i,j]", symmetric={"A": "full"})
    (loop,) = [n for n in walk(kernel.loops.body) if isinstance(n, SparseLoop)]
    assert loop.expanded
    # A[i,i,j,j] is invariant under swapping i and j: a permutable set, canonical storage.
    kernel = sg.compile("y[j] += A[i,i,j,j]", symmetric={"A": "full"})
    assert [s.indices for s in kernel.symmetrized.sets] == [(sg.ir.einsum.Index("i"), sg.ir.einsum.Index("j"))]
    (loop,) = [n for n in walk(kernel.loops.body) if isinstance(n, SparseLoop)]
    assert not loop.expanded


# ---------------------------------------------------------------------------------------------
# nan and inf meeting the entries a sparse operand does not store (defects once recorded here as
# strict xfails, each fixed and kept as a test).


def _nan_min_max_cases():
    a = np.array([[1.0, np.nan, 5.0], [np.nan, 2.0, 2.0], [5.0, 2.0, 3.0]])
    x = np.array([1.0, 2.0, -np.inf])
    for reduce in ("min=", "max="):
        for symmetric in (None, {"A": "full"}):
            for fmt in ("dense", "coo"):
                yield reduce, symmetric, fmt, a, x


@pytest.mark.parametrize("backend", ["reference", "numba", "triton"])
def test_nan_propagates_through_min_and_max(backend):
    # min(1 + nan, ...) is nan in numpy (the oracle) and in the reference backend.
    for reduce, symmetric, fmt, a, x in _nan_min_max_cases():
        kernel = sg.compile(f"y[i] {reduce} A[i,j] + x[j]", symmetric=symmetric, formats={"A": fmt},
                            backend=backend)
        if fmt == "dense":
            operand = a
        else:
            operand = SymmetricTensor.from_dense(a, "full") if symmetric else SparseTensor.from_dense(a)
        expected = interpret_einsum(kernel.program.einsum, {"A": a, "x": x})
        np.testing.assert_array_equal(kernel(A=operand, x=x).numpy(), expected,
                                      err_msg=f"{reduce} {symmetric} {fmt}")


@pytest.mark.parametrize("backend", ["reference", "numba", "triton"])
@pytest.mark.parametrize("symmetry", [True, False])
def test_infinity_meeting_an_unstored_entry_does_not_depend_on_symmetry(symmetry, backend):
    # A[1,1] = inf is stored, A[1,0] is not: the point (1, 0) contributes nothing when unstored
    # entries are skipped (as the sparse loop skips them), nan when they are read as 0. The
    # kernel without symmetry drives A[i,i] and reads A[i,j] densely: its membership guards it.
    a = np.array([[0.0, 0.0, 1.0], [0.0, np.inf, 0.0], [1.0, 0.0, 2.0]])
    kernel = sg.compile("y[] += A[i,i]*A[i,j]", symmetric={"A": "full"}, symmetry=symmetry, backend=backend)
    einsum = kernel.program.einsum
    stored = a != 0
    expected = interpret_einsum(einsum, {"A": a}, stored={access: stored for access in einsum.rhs.args})
    assert expected == np.inf
    np.testing.assert_array_equal(kernel(A=SymmetricTensor.from_dense(a, "full")).numpy(), expected)


@pytest.mark.parametrize("backend", ["reference", "numba", "triton"])
def test_a_special_meeting_an_unstored_entry_of_a_second_access(backend):
    # found by the property tests: Y[] += A[i,j]*A[j,i], A general COO with a nan at a stored
    # (1, 0) whose mirror (0, 1) is unstored: the term contributes nothing (the symmetric kernel
    # never visits it; the one without symmetry reads A[j,i] densely, guarded by its membership)
    a = np.array([[1.0, 0.0, 2.0], [np.nan, 3.0, 0.0], [0.5, 0.0, 1.0]])
    results = [float(sg.compile("Y[] += A[i,j]*A[j,i]", formats={"A": "coo"}, symmetry=symmetry,
                                backend=backend)(A=a)) for symmetry in (True, False)]
    einsum = sg.compile("Y[] += A[i,j]*A[j,i]", formats={"A": "coo"}, backend="reference").program.einsum
    expected = interpret_einsum(einsum, {"A": a},
                                stored={access: a != 0 for access in einsum.rhs.args})
    assert float(expected) == 13.0
    assert results == [13.0, 13.0]


@pytest.mark.parametrize("backend", ["reference", "numba", "triton"])
def test_a_special_meeting_an_unstored_factor_under_a_sum(backend):
    # A is a factor of the term A[i,j]*x[j] only, not of the whole update: where A is unstored the
    # term is 0 (a Select on A's membership), not 0 * inf; B under the sum is read as its fill
    a = np.array([[0.0, 1.0], [2.0, 0.0]])
    b = np.array([[1.0, 0.0], [0.0, 1.0]])
    x = np.array([np.inf, 1.0])
    kernel = sg.compile("y[i] += A[i,j]*x[j] + B[i,j]", formats={"A": "coo", "B": "coo"}, backend=backend)
    expected = [1.0 + 1.0 * 1.0, np.inf]  # the term A[0,0]*x[0] is absent: B[0,0] + A[0,1]*x[1]
    einsum = kernel.program.einsum
    oracle = interpret_einsum(einsum, {"A": a, "B": b, "x": x},
                              stored={acc: {"A": a, "B": b}[acc.tensor] != 0 for acc in accesses(einsum.rhs)
                                      if acc.tensor in "AB"})
    np.testing.assert_array_equal(oracle, expected)
    np.testing.assert_array_equal(kernel(A=a, B=b, x=x).numpy(), expected)


@pytest.mark.xfail(strict=True, reason=(
    "a sum of sparse operands as a factor ((A[i,j] + B[i,j])*x[j]): where neither stores the entry "
    "the sum is read as 0 and meets x[j] = inf (nan); sparse semantics make the product absent (the "
    "oracle's stored=). A select would need the union of the memberships (stored(A) or stored(B))"))
@pytest.mark.parametrize("backend", ["reference", "numba", "triton"])
def test_a_special_meeting_a_sum_of_unstored_factors(backend):
    a = np.array([[0.0, 1.0], [2.0, 0.0]])
    b = np.array([[1.0, 0.0], [0.0, 0.0]])
    x = np.array([1.0, np.inf])
    kernel = sg.compile("y[i] += (A[i,j] + B[i,j])*x[j]", formats={"A": "coo", "B": "coo"}, backend=backend)
    einsum = kernel.program.einsum
    expected = interpret_einsum(einsum, {"A": a, "B": b, "x": x},
                                stored={acc: {"A": a, "B": b}[acc.tensor] != 0 for acc in accesses(einsum.rhs)
                                        if acc.tensor in "AB"})
    np.testing.assert_array_equal(expected, [np.inf, 2.0])  # (1,1): neither A nor B stores it
    np.testing.assert_array_equal(kernel(A=a, B=b, x=x).numpy(), expected)
