"""save -> load is exact for random tensors of orders 1..5 in every format (hypothesis)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import systec_gpu.io as sio
from systec_gpu.storage import SparseTensor, SymmetricTensor

SUFFIXES = [".tns", ".tns.gz", ".npz", ".h5", ".mtx", ".mtx.gz"]


@st.composite
def tensors(draw, symmetric: bool):
    ndim = draw(st.integers(1, 5))
    if symmetric and ndim == 1:
        ndim = 2
    n = draw(st.integers(1, 4))
    shape = (n,) * ndim if symmetric else tuple(draw(st.integers(1, 4)) for _ in range(ndim))
    dtype = draw(st.sampled_from([np.float64, np.float32, np.int64]))
    count = draw(st.integers(0, 12))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    idx = np.stack([rng.integers(0, s, count) for s in shape]) if count else np.zeros((ndim, 0))
    if dtype == np.int64:
        vals = rng.integers(-(2**62), 2**62, count)
    else:  # awkward floats: huge/tiny exponents, subnormals, NaN, inf, negative zero
        with np.errstate(over="ignore"):  # float32 overflows to inf: fine, inf is a case too
            vals = rng.standard_normal(count) * 10.0 ** rng.integers(-300, 300, count)
            vals = vals.astype(dtype)
        special = np.array([np.nan, np.inf, -np.inf, -0.0, 5e-324, 0.1], dtype=dtype)
        pick = rng.random(count) < 0.3
        vals[pick] = rng.choice(special, int(pick.sum()))
    t = SparseTensor.from_coo(idx.astype(np.int64), vals.astype(dtype), shape,
                              sum_duplicates=True)
    if symmetric:
        groups = "full" if draw(st.booleans()) or ndim < 3 else [(0, ndim - 1)]
        t = t.symmetrize("upper", groups)
    return t


def _check(t: SparseTensor, path) -> None:
    if path.name.startswith("x.mtx") and t.ndim != 2:
        with pytest.raises(sio.FormatError, match="Matrix Market stores matrices"):
            sio.save(path, t)
        return
    sio.save(path, t)
    sym = t.groups if isinstance(t, SymmetricTensor) else False
    back = sio.load(path, symmetric=sym) if ".tns" in path.name else sio.load(path)
    assert type(back) is type(t) and back.shape == t.shape
    assert getattr(back, "groups", None) == getattr(t, "groups", None)
    np.testing.assert_array_equal(back.indices, t.indices)
    # exact (NaN == NaN; the sign of zeros kept); text formats read floats back as float64
    want = t.values.astype(np.float64) if t.dtype == np.float32 and ".npz" not in path.name \
        and ".h5" not in path.name else t.values
    if t.nnz or ".tns" not in path.name:  # an empty .tns file has no values to type
        assert back.dtype == want.dtype
    np.testing.assert_array_equal(back.values, want)
    if want.dtype.kind == "f":
        real = ~np.isnan(want)
        np.testing.assert_array_equal(np.signbit(back.values[real]), np.signbit(want[real]))


@pytest.mark.parametrize("suffix", SUFFIXES)
@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(t=tensors(symmetric=False))
def test_roundtrip_sparse(tmp_path, suffix, t):
    _check(t, tmp_path / f"x{suffix}")


@pytest.mark.parametrize("suffix", SUFFIXES)
@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(t=tensors(symmetric=True))
def test_roundtrip_symmetric(tmp_path, suffix, t):
    _check(t, tmp_path / f"x{suffix}")


def test_int_values_stay_integers(tmp_path):
    t = SparseTensor.from_coo([[0, 2]], np.array([2**63 - 1, -(2**63)], dtype=np.int64), (3,))
    for suffix in (".tns", ".npz"):
        sio.save(tmp_path / f"i{suffix}", t)
        back = sio.load(tmp_path / f"i{suffix}")
        assert back.dtype == np.int64 and back.values.tolist() == [2**63 - 1, -(2**63)]


def test_large_coordinates_roundtrip(tmp_path):
    n = 3_000_000_000
    t = SymmetricTensor.from_coo([[n - 1, 1], [0, n - 2]], [1.5, 2.5], (n, n), stored="one")
    for suffix in (".mtx", ".tns", ".npz"):
        sio.save(tmp_path / f"b{suffix}", t)
        back = sio.load(tmp_path / f"b{suffix}", symmetric=True)
        assert back.shape == (n, n) and back.indices.tolist() == t.indices.tolist()


def test_save_torch_valued_tensor(tmp_path):
    import torch

    s = SymmetricTensor.from_dense(np.array([[1.0, 2.0], [2.0, 0.0]]))
    t = s.with_values(torch.tensor([3.0, 4.0], dtype=torch.float64, requires_grad=True))
    for suffix in (".mtx", ".tns", ".npz"):
        sio.save(tmp_path / f"w{suffix}", t)
        back = sio.load(tmp_path / f"w{suffix}", symmetric=True)
        assert back.values.tolist() == [3.0, 4.0] and back.indices.tolist() == [[0, 0], [0, 1]]
