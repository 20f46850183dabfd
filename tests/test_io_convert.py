"""Converters between our storage and numpy, torch, scipy.sparse, pydata sparse, binsparse."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import sparse
import torch

import systec_gpu.io as sio
from systec_gpu.storage import SparseTensor, SymmetricTensor

A = np.array([[1.0, 2.0, 0.0], [2.0, 0.0, 3.0], [0.0, 3.0, 4.0]])
B = np.array([[1.0, 2.0, 0.0], [5.0, 0.0, 3.0], [0.0, 3.0, 4.0]])


def canon(a=A):
    return SymmetricTensor.from_dense(a)


@pytest.mark.parametrize("fmt", ["csr", "csc", "coo", "lil", "dok", "bsr", "dia"])
@pytest.mark.parametrize("kind", ["array", "matrix"])
def test_from_scipy_every_format(fmt, kind):
    m = (sp.csr_array if kind == "array" else sp.csr_matrix)(A).asformat(fmt)
    s = sio.from_scipy(m, "full")
    assert isinstance(s, SymmetricTensor)
    np.testing.assert_array_equal(s.indices, canon().indices)
    t = sio.from_scipy(m)
    assert type(t) is SparseTensor and t.nnz == 6
    np.testing.assert_array_equal(t.to_dense(), A)


def test_from_scipy_duplicates_summed_and_explicit_zeros_kept():
    m = sp.coo_array(([1.0, 2.0, 0.0], ([0, 0, 1], [1, 1, 1])), shape=(2, 2))
    t = sio.from_scipy(m)
    assert t.indices.tolist() == [[0, 1], [1, 1]] and t.values.tolist() == [3.0, 0.0]
    with pytest.raises(ValueError, match=r"M is not symmetric in modes \(0, 1\): M\[0, 1\] = 2.0 "
                       r"but M\[1, 0\] = 5.0"):
        sio.from_scipy(sp.csr_array(B), "full", name="M")


@pytest.mark.parametrize("fmt", ["csr", "coo", "csc"])
def test_to_scipy_expands(fmt):
    m = sio.to_scipy(canon(), format=fmt)
    assert m.format == fmt and m.nnz == 6
    np.testing.assert_array_equal(m.toarray(), A)


def test_numpy_roundtrip_and_checks():
    s = sio.from_numpy(A, "full")
    assert isinstance(s, SymmetricTensor) and s.nnz == 4
    np.testing.assert_array_equal(sio.to_numpy(s), A)
    with pytest.raises(ValueError, match=r"A is not symmetric in modes \(0, 1\)"):
        sio.from_numpy(B, True)
    assert type(sio.from_numpy(B)) is SparseTensor
    assert sio.from_numpy(B, True, atol=3.0).nnz == 4


@pytest.mark.parametrize("coalesced", [True, False])
def test_from_torch_coo(coalesced):
    idx = torch.tensor([[0, 1, 1, 2, 0], [1, 0, 2, 1, 1]])
    vals = torch.tensor([1.0, 2.0, 3.0, 3.0, 1.0], dtype=torch.float32)
    x = torch.sparse_coo_tensor(idx, vals, (3, 3))
    if coalesced:
        x = x.coalesce()
    s = sio.from_torch(x, "full")  # the uncoalesced duplicate (0, 1) is summed to 2.0 first
    assert isinstance(s, SymmetricTensor) and s.dtype == np.float32
    assert s.indices.tolist() == [[0, 1], [1, 2]] and s.values.tolist() == [2.0, 3.0]


def test_from_torch_csr_csc_dense():
    x = torch.from_numpy(A)
    for y in (x.to_sparse_csr(), x.to_sparse_csc(), x, x.to_sparse_bsr((1, 1))):
        s = sio.from_torch(y, "full")
        np.testing.assert_array_equal(s.indices, canon().indices)
    with pytest.raises(ValueError, match=r"X is not symmetric"):
        sio.from_torch(torch.from_numpy(B).to_sparse_csr(), "full", name="X")


@pytest.mark.parametrize("layout", ["coo", "csr", "strided", torch.sparse_coo, torch.sparse_csr])
def test_to_torch_layouts(layout):
    x = sio.to_torch(canon(), layout)
    np.testing.assert_array_equal(x.to_dense().numpy(), A)
    if layout in ("coo", torch.sparse_coo):
        assert x.is_coalesced() and x._nnz() == 6


def test_to_torch_tensor_order3():
    s = sio.from_numpy(np.ones((2, 2, 2)), "full")
    x = sio.to_torch(s)
    assert x._nnz() == 8 and x.to_dense().sum().item() == 8
    with pytest.raises(ValueError, match="CSR needs a matrix"):
        sio.to_torch(s, "csr")


@pytest.mark.parametrize("fmt", ["coo", "gcxs"])
def test_pydata_both_ways(fmt):
    a = sio.to_pydata(canon(), fmt)
    assert a.format == fmt
    np.testing.assert_array_equal(a.todense(), A)
    back = sio.from_pydata(a, "full")
    np.testing.assert_array_equal(back.indices, canon().indices)
    d = sparse.DOK.from_numpy(B)
    assert sio.from_pydata(d).nnz == 6
    with pytest.raises(ValueError, match="nonzero fill value"):
        sio.from_pydata(sparse.COO.from_numpy(A, fill_value=1.0))


def test_binsparse_objects():
    bt, extra = sio.to_binsparse(canon())
    assert extra == {"structure": "symmetric_upper"}
    plain = sio.as_sparse_tensor(bt)  # an in-memory object carries no descriptor: no symmetry
    assert type(plain) is SparseTensor and plain.nnz == 4
    s = sio.from_binsparse(bt, header=extra)
    np.testing.assert_array_equal(s.indices, canon().indices)


def test_as_sparse_tensor_dispatch_and_regrouping():
    s = canon()
    assert sio.as_sparse_tensor(s) is s
    assert sio.as_sparse_tensor(s, "full") is s
    e = sio.as_sparse_tensor(s, False)
    assert type(e) is SparseTensor and e.nnz == 6
    for obj in (A, A.tolist(), torch.from_numpy(A), sp.csr_array(A), sparse.COO.from_numpy(A)):
        t = sio.as_sparse_tensor(obj, "full")
        assert isinstance(t, SymmetricTensor)
        np.testing.assert_array_equal(t.indices, s.indices)
    t3 = sio.as_sparse_tensor(np.ones((2, 2, 2)), "full")
    t01 = sio.as_sparse_tensor(t3, [(0, 1)])
    assert t01.groups == ((0, 1),) and t01.n_expanded == 8 and t01.nnz == 6
    with pytest.raises(ValueError, match=r"^C is not symmetric"):
        sio.as_sparse_tensor(SparseTensor.from_dense(B), "full", name="C")
    with pytest.raises(TypeError, match=r"D: cannot use a builtins.dict"):
        sio.as_sparse_tensor({}, name="D")
