"""Sparse symmetric outputs (Gram products as canonical nonzeros) against numpy/scipy, on the
reference (numpy expand-sort-compress), Numba and Triton-interpreter backends."""

import os
import re

os.environ["TRITON_INTERPRET"] = "1"

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import scipy.sparse as sp  # noqa: E402
import torch  # noqa: E402

import systec_gpu as sg  # noqa: E402
from systec_gpu.spgemm import SparseOutputError, SparseOutputKernel, gram_structure  # noqa: E402
from systec_gpu.storage import SparseTensor, SymmetricTensor  # noqa: E402

from .shared_data import require_data  # noqa: E402

BACKENDS = ["reference", "numba", "triton"]


def random_sparse(rows, cols, density, seed, empty_row=None) -> sp.csr_matrix:
    a = sp.random(rows, cols, density=density, random_state=seed, format="csr")
    if empty_row is not None:
        keep = np.ones(rows)
        keep[empty_row] = 0
        a = sp.csr_matrix(sp.diags(keep) @ a)
        a.eliminate_zeros()
    return a


def assert_canonical_sorted(c: SymmetricTensor) -> None:
    assert isinstance(c, SymmetricTensor) and c.groups == ((0, 1),)
    rows, cols = c.indices
    assert (rows <= cols).all()
    key = rows * c.shape[1] + cols
    assert (np.diff(key) > 0).all()
    c.validate("C")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    ("text", "formats", "reference"),
    [
        ("C[i,j] += A[i,k]*A[j,k]", {"A": "csr"}, lambda a, d: a @ a.T),
        ("C[i,j] += A[k,i]*A[k,j]", {}, lambda a, d: a.T @ a),
        ("C[i,j] += A[i,k]*d[k]*A[j,k]", {}, lambda a, d: a @ sp.diags(d) @ a.T),
        ("C[i,j] += 0.5*A[k,j]*d[k]*A[k,i]", {}, lambda a, d: 0.5 * a.T @ sp.diags(d) @ a),
    ],
)
def test_gram_forms_match_scipy(text, formats, reference, backend):
    a = random_sparse(9, 7, 0.3, seed=3, empty_row=4)
    d = np.linspace(0.5, 2.0, 9 if "k,i" in text or "k,j" in text else 7)
    k = sg.compile(text, formats={**formats, "C": "coo"}, backend=backend)
    assert isinstance(k, SparseOutputKernel)
    args = {"A": a, "d": d} if "d[k]" in text else {"A": a}
    c = k(**args)
    assert_canonical_sorted(c)
    want = np.asarray(reference(a, d).todense())
    np.testing.assert_allclose(c.to_dense(), want, rtol=1e-12, atol=1e-14)
    stats = k.stats
    assert stats["visited_points"] < stats["baseline_points"] and stats["stored_nonzeros"] == c.nnz


@pytest.mark.parametrize("backend", BACKENDS)
def test_symmetric_input_squared(backend):
    rng = np.random.default_rng(0)
    dense = rng.uniform(-1, 1, (6, 6)) * (rng.random((6, 6)) < 0.4)
    dense = dense + dense.T
    a = SymmetricTensor.from_dense(dense)
    k = sg.compile("C[i,j] += A[i,k]*A[k,j]", symmetric={"A": "full"}, formats={"C": "csr"}, backend=backend)
    c = k(A=a)
    assert_canonical_sorted(c)
    np.testing.assert_allclose(c.to_dense(), dense @ dense, atol=1e-14)


@pytest.mark.parametrize("backend", BACKENDS)
def test_edge_cases(backend):
    k = sg.compile("C[i,j] += A[i,k]*A[j,k]", formats={"C": "coo"}, backend=backend)
    empty = SparseTensor(np.zeros((2, 0), dtype=np.int64), np.zeros(0), (4, 3))
    c = k(A=empty)
    assert c.nnz == 0 and c.shape == (4, 4)
    single = SparseTensor(np.array([[2], [1]]), np.array([3.0]), (4, 3))
    c = k(A=single)
    assert c.indices.tolist() == [[2], [2]] and np.asarray(c.values).tolist() == [9.0]
    # a dense array is read as sparse; float32 stays float32
    a = np.array([[1.0, 0.0, 2.0], [0.0, 0.0, 0.0], [3.0, 4.0, 0.0]], dtype=np.float32)
    c = k(A=a)
    assert c.values.dtype == torch.float32
    np.testing.assert_allclose(c.to_dense(), a @ a.T)


@pytest.mark.parametrize("backend", ["numba", "reference"])
def test_repeat_calls_share_the_output_structure(backend):
    a = random_sparse(30, 20, 0.15, seed=1)
    tensor = SparseTensor.from_coo(np.array(a.nonzero()), a.data, a.shape)
    k = sg.compile("C[i,j] += A[i,k]*A[j,k]", formats={"C": "coo"}, backend=backend)
    rng = np.random.default_rng(2)
    first = k(A=tensor)
    for _ in range(2):
        values = rng.uniform(-1, 1, tensor.nnz)
        b = tensor.with_values(values)
        c = k(A=b)
        dense = b.to_dense()
        np.testing.assert_allclose(c.to_dense(), dense @ dense.T, atol=1e-14)
        assert gram_structure(b, False) is gram_structure(tensor, False)  # cached on the structure
        if backend == "numba":
            assert c.indices is first.indices and c._cache is first._cache  # symbolic phase not rerun


def test_numba_parallel_and_serial_agree():
    from systec_gpu.backends.sparse_output_numba import gram_canonical

    a = random_sparse(200, 120, 0.05, seed=7)
    tensor = SparseTensor.from_coo(np.array(a.nonzero()), a.data, a.shape)
    structure = gram_structure(tensor, False)
    values, weight = np.asarray(tensor.values), np.ones(structure.m)
    serial = gram_canonical(structure, values, weight, threads=1)
    structure.outputs.clear()
    parallel = gram_canonical(structure, values, weight, threads=2)
    np.testing.assert_array_equal(serial[0], parallel[0])
    np.testing.assert_allclose(serial[1], parallel[1])
    repeat = gram_canonical(structure, values, weight, threads=2)  # numeric phase only
    np.testing.assert_allclose(repeat[1], serial[1])
    want = (a @ a.T).toarray()
    got = np.zeros_like(want)
    got[tuple(serial[0])] = serial[1]
    np.testing.assert_allclose(np.triu(want), got)


@pytest.mark.parametrize(
    ("text", "symmetric", "reason"),
    [
        ("C[i,j] += A[i,k]*B[k,j]", {}, "does not read one matrix exactly twice"),
        ("C[i,j] += A[i,k]*A[k,j]", {}, "not symmetric"),
        ("C[i,j] min= A[i,k]+A[j,k]", {}, "its reduction is min=, not +="),
        ("C[i,j,l] += A[i,k]*A[j,k]*x[l]", {}, "has 3 modes, not 2"),
        ("C[i,j] += A[i,k]*A[j,k]*x[i]", {}, "is not a vector over the reduction index k"),
        ("C[i,j] += A[i,k]*A[j,k] + B[i,j]", {}, "not a product"),
    ],
)
def test_sparse_output_refused_with_a_reason(text, symmetric, reason):
    with pytest.raises(SparseOutputError, match=re.escape(reason)):
        sg.compile(text, symmetric=symmetric, formats={"C": "coo"})


def test_sparse_output_refuses_out_gradients_and_no_symmetry():
    k = sg.compile("C[i,j] += A[i,k]*A[j,k]", formats={"C": "coo"})
    with pytest.raises(ValueError, match="out= cannot receive the sparse output C"):
        k(A=np.eye(3), out=torch.zeros(3, 3))
    with pytest.raises(NotImplementedError, match="sparse output"):
        k(A=torch.eye(3, requires_grad=True))
    with pytest.raises(SparseOutputError, match="symmetry=True"):
        sg.compile("C[i,j] += A[i,k]*A[j,k]", formats={"C": "coo"}, symmetry=False)
    with pytest.raises(ValueError, match="size mismatch for index k"):
        sg.compile("C[i,j] += A[i,k]*d[k]*A[j,k]", formats={"C": "coo"})(A=np.eye(3), d=np.ones(4))


def test_explain_states_the_phases():
    text = sg.compile("C[i,j] += A[i,k]*A[j,k]", formats={"A": "csr", "C": "coo"}).explain()
    assert "sparse output C [coo]: canonical nonzeros (i <= j) as a SymmetricTensor" in text
    assert "symbolic:" in text and "numeric:" in text
    assert "permutable (i, j): C is symmetric in modes (0, 1) (found" in text


@pytest.mark.parametrize("backend", ["numba", "triton"])
def test_real_matrix_rows(backend):
    data = require_data("bcsstk01.mtx.gz")
    a = sg.load(data / "bcsstk01.mtx.gz").expanded()
    rows = a.indices[0] < 24  # keep it small for the Triton interpreter
    part = SparseTensor(a.indices[:, rows], np.asarray(a.values)[rows], (24, a.shape[1]))
    c = sg.compile("C[i,j] += A[i,k]*A[j,k]", formats={"C": "coo"}, backend=backend)(A=part)
    dense = part.to_dense()
    np.testing.assert_allclose(c.to_dense(), dense @ dense.T, rtol=1e-12)
    assert c.nnz < (dense @ dense.T != 0).sum()  # half (plus the diagonal) is stored


@pytest.mark.parametrize("threads", [1, 2])
def test_numba_orders_rows_every_way(threads):
    """Rows ordered by insertion (short, wide span), by a sort (long, wide span) and through the
    bitmap (long, narrow span) all come out sorted and equal to scipy's."""
    from systec_gpu.backends.sparse_output_numba import gram_canonical

    n = 40_000
    wide_long = np.arange(0, n, 1000)  # 40 entries over the whole range: sorted
    wide_short = np.arange(7, n, 4000)  # 10 entries: insertion
    narrow_long = np.arange(100, 160)  # 60 adjacent entries: bitmap
    rows = np.concatenate([wide_long, wide_short, narrow_long])
    cols = np.concatenate([np.zeros(40), np.ones(10), np.full(60, 2)]).astype(np.int64)
    vals = np.random.default_rng(0).uniform(-1, 1, rows.shape[0])
    a = sp.csr_matrix((vals, (rows, cols)), shape=(n, 3))
    coo = a.tocoo()
    tensor = SparseTensor.from_coo(np.vstack([coo.row, coo.col]), coo.data, a.shape)
    structure = gram_structure(tensor, False)
    indices, values, _ = gram_canonical(structure, np.asarray(tensor.values), np.ones(3), threads=threads)
    c = SymmetricTensor(indices, values, (n, n), [(0, 1)], check=True)
    assert_canonical_sorted(c)
    want = sp.triu(a @ a.T).tocoo()
    got = sp.coo_matrix((values, tuple(indices)), shape=(n, n))
    assert abs(got - want).max() < 1e-12 and got.nnz == want.nnz
