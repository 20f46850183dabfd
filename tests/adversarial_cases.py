"""Adversarial inputs for every public entry point (issue 9). Run by tests/test_adversarial.py in
a child process, so that a crash (a segfault in generated code) fails that test, not the run.

Each case asserts one of two outcomes: a clear error (ValueError/TypeError naming the operand,
file or line), or a result equal to the dense numpy oracle. `--slow` runs many more examples.
"""

from __future__ import annotations

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import gzip  # noqa: E402
import math  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import scipy.io  # noqa: E402
import scipy.sparse as sp  # noqa: E402
import torch  # noqa: E402
from hypothesis import HealthCheck, assume, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import systec_gpu as sg  # noqa: E402
from systec_gpu.io.errors import FormatError  # noqa: E402
from systec_gpu.ir.einsum_interpreter import interpret_einsum  # noqa: E402

SLOW = os.environ.get("SYSTEC_SLOW") == "1"


def examples(n: int):
    return settings(max_examples=n * 10 if SLOW else n, deadline=None, derandomize=not SLOW,
                    suppress_health_check=list(HealthCheck))


SPECIAL = [0.0, 1.0, -2.5, 0.5, 3.0, math.nan, math.inf, -math.inf]
DTYPES = ["float64", "float32", "float16", "int64", "int32", "int8", "uint8", "bool", "complex128"]
KINDS = ["numpy", "numpy_fortran", "numpy_strided", "list", "torch", "torch_transposed", "torch_coo",
         "torch_coo_uncoalesced", "torch_csr", "scipy_csr", "scipy_coo_duplicates", "pydata", "SparseTensor",
         "SymmetricTensor"]
SPARSE_KINDS = {"torch_coo", "torch_coo_uncoalesced", "torch_csr", "scipy_csr", "scipy_coo_duplicates", "pydata",
                "SparseTensor", "SymmetricTensor"}
KERNELS = {
    ("ssymv", "sym"): sg.compile("y[i] += A[i,j]*x[j]", symmetric={"A": "full"}, backend="numba"),
    ("bellman", "sym"): sg.compile("y[i] min= A[i,j] + x[j]", symmetric={"A": "full"}, backend="numba"),
    ("spmv", "plain"): sg.compile("y[i] += A[i,j]*x[j]", backend="numba"),
    ("ssymv_reference", "sym"): sg.compile("y[i] += A[i,j]*x[j]", symmetric={"A": "full"}, backend="reference"),
    ("ssymv_triton", "sym"): sg.compile("y[i] += A[i,j]*x[j]", symmetric={"A": "full"}, backend="triton"),
}


@st.composite
def matrices(draw):
    """(dense float64 values, stored mask) of a small matrix, symmetric or not, with specials."""
    n = draw(st.integers(0, 5))
    values = np.array(draw(st.lists(st.sampled_from(SPECIAL), min_size=n * n, max_size=n * n)),
                      dtype=np.float64).reshape(n, n)
    stored = np.array(draw(st.lists(st.booleans(), min_size=n * n, max_size=n * n)), dtype=bool).reshape(n, n)
    if draw(st.booleans()):  # symmetric data
        values = np.triu(values) + np.triu(values, 1).T
        stored = np.triu(stored) | np.triu(stored, 1).T
    return values, stored


def cast(values: np.ndarray, dtype: str) -> np.ndarray:
    if dtype in ("float64", "float32", "float16", "complex128"):
        return values.astype(dtype)
    finite = np.where(np.isfinite(values), values, 7.0)
    return np.round(finite).astype(dtype)


def make_input(kind: str, dense: np.ndarray, stored: np.ndarray, symmetric_ok: bool):
    """`dense` (zeros where not stored) in the given kind; sparse kinds store exactly `stored`."""
    rows, cols = np.nonzero(stored)
    data = dense[rows, cols]
    n = dense.shape[0]
    match kind:
        case "numpy":
            return dense
        case "numpy_fortran":
            return np.asfortranarray(dense)
        case "numpy_strided":
            big = np.zeros((n, 2 * n), dtype=dense.dtype)
            big[:, ::2] = dense
            return big[:, ::2]
        case "list":
            return dense.tolist()
        case "torch":
            return torch.from_numpy(dense.copy())
        case "torch_transposed":
            return torch.from_numpy(dense.T.copy()).T
        case "torch_coo":
            return torch.sparse_coo_tensor(np.vstack([rows, cols]), torch.from_numpy(data.copy()), (n, n))
        case "torch_coo_uncoalesced":  # each entry split into two halves that sum to it
            idx = np.hstack([np.vstack([rows, cols])] * 2)
            if data.dtype.kind in "fc":  # halves of finite values; inf/nan + 0 for the others
                finite = np.isfinite(data)
                first = np.where(finite, data / 2, data)
                vals = np.concatenate([first, np.where(finite, data - first, 0)]).astype(data.dtype)
            else:
                vals = np.concatenate([data, np.zeros_like(data)])
            return torch.sparse_coo_tensor(idx, torch.from_numpy(vals), (n, n))
        case "torch_csr":
            return torch.sparse_coo_tensor(np.vstack([rows, cols]), torch.from_numpy(data.copy()),
                                           (n, n)).to_sparse_csr()
        case "scipy_csr":
            return sp.csr_matrix((data, (rows, cols)), shape=(n, n))
        case "scipy_coo_duplicates":
            if data.dtype.kind != "f" or not np.isfinite(data).all():
                return sp.coo_matrix((data, (rows, cols)), shape=(n, n))
            return sp.coo_matrix((np.concatenate([data / 2, data / 2]), (np.tile(rows, 2), np.tile(cols, 2))),
                                 shape=(n, n))
        case "pydata":
            import sparse

            return sparse.COO(np.vstack([rows, cols]), data, shape=(n, n))
        case "SparseTensor":
            return sg.SparseTensor.from_coo(np.vstack([rows, cols]), data, (n, n))
        case "SymmetricTensor":
            keep = rows <= cols
            return sg.SymmetricTensor.from_coo(np.vstack([rows[keep], cols[keep]]), data[keep], (n, n),
                                               stored="one")
    raise AssertionError(kind)


def agree(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(((a == b) | (np.isnan(a) & np.isnan(b))).all())


@examples(60)
@given(matrix=matrices(), kind=st.sampled_from(KINDS), dtype=st.sampled_from(DTYPES),
       kernel=st.sampled_from(sorted(KERNELS)), check=st.booleans(),
       x_special=st.lists(st.sampled_from(SPECIAL), min_size=5, max_size=5), x_torch=st.booleans())
def test_kernel_call_with_any_input(matrix, kind, dtype, kernel, check, x_special, x_torch):
    values, stored = matrix
    n = values.shape[0]
    name, flavour = kernel
    symmetric = flavour == "sym"
    fill = math.inf if name == "bellman" else 0.0  # the semiring's value of an unstored entry
    x = np.array(x_special[:n], dtype=np.float64)
    assume(not (kind.startswith("scipy") and dtype == "float16"))  # scipy.sparse has no float16
    typed = cast(values, dtype)
    dense_in = np.where(stored, typed, 0).astype(typed.dtype)  # the matrix, unstored entries 0
    with np.errstate(invalid="ignore"):
        pattern = stored.copy() if kind in SPARSE_KINDS else dense_in.astype(np.complex128) != fill
    as_float = dense_in.real.astype(np.float64) if dtype != "complex128" else None
    data_symmetric = bool((pattern == pattern.T).all()) and (
        dtype == "complex128" or agree(np.where(pattern, as_float, 0), np.where(pattern, as_float, 0).T))
    if kind == "SymmetricTensor":
        assume(data_symmetric)  # one triangle of asymmetric data is another tensor: nothing to test
    a = make_input(kind, dense_in, stored, symmetric)
    if dtype in ("float32", "float16"):
        x = x.astype(dtype)  # a float32/float16 call computes in float32
    x_in = torch.from_numpy(x) if x_torch else x
    k = KERNELS[kernel]

    def call():
        return k(A=a, x=x_in, check=check)

    if kind == "list" and n == 0:  # [] has one mode: a 0x0 matrix has no list spelling
        with pytest.raises(ValueError, match=r"A has 1 modes"):
            call()
        return
    if dtype == "complex128":
        with pytest.raises(TypeError, match="A: complex values are not supported"):
            call()
        return
    if symmetric and check and not data_symmetric:
        with pytest.raises(ValueError, match=r"\bA\b"):
            call()
        return
    result = call()
    narrow = dtype in ("float32", "float16") and kind != "list"  # python lists hold float64
    assert result.dtype == (torch.float32 if narrow else torch.float64)
    if symmetric and not data_symmetric:  # check=False: the canonical part is read
        pattern = np.triu(pattern) | np.triu(pattern).T
        as_float = np.triu(as_float) + np.triu(as_float, 1).T
    oracle_a = np.where(pattern, as_float, fill)
    einsum = k.program.einsum
    access = next(acc for acc in k.program.accesses() if acc.tensor == "A") if hasattr(k.program, "accesses") \
        else einsum.rhs.args[0]
    stored_map = {access: pattern} if k.loops.driver is not None else None
    expected = interpret_einsum(einsum, {"A": oracle_a, "x": x.astype(np.float64)}, stored=stored_map)
    tol = 1e-5 if narrow else 1e-12  # float16 inputs compute in float32 too
    np.testing.assert_allclose(result.numpy().astype(np.float64), expected, rtol=tol, atol=tol)


@examples(60)
@given(coords=st.lists(st.tuples(st.integers(-2, 6), st.integers(-2, 6)), max_size=6),
       index_dtype=st.sampled_from(["int64", "int64", "int32", "float64"]),
       values_extra=st.integers(-1, 1), shape_len=st.sampled_from([2, 2, 2, 1, 3]))
def test_kernel_op_with_any_coordinates(coords, index_dtype, values_extra, shape_len):
    """Out of range, negative, unsorted, repeated, non-canonical coordinates; wrong dtypes, value
    counts and shapes: an error naming A, or the right answer. Never a crash."""
    k = KERNELS[("ssymv", "sym")]
    n = 4
    idx = torch.tensor(np.array(coords, dtype=np.int64).T.reshape(2, -1)).to(getattr(torch, index_dtype))
    values = torch.arange(1, idx.shape[1] + 1 + values_extra, dtype=torch.float64) if idx.shape[1] + values_extra >= 0 \
        else torch.ones(0, dtype=torch.float64)
    shape = [n] * shape_len
    x = torch.linspace(-1, 1, n, dtype=torch.float64)
    try:
        y = k.op(idx, values, shape, x)
    except (ValueError, TypeError, RuntimeError) as error:
        assert "A" in str(error), error
        return
    # accepted: then the coordinates were valid canonical, sorted, unique entries of a 4x4 matrix
    c = idx.long().numpy()
    assert c.shape[1] == values.shape[0] and ((c >= 0) & (c < n)).all() and (c[0] <= c[1]).all()
    dense = np.zeros((n, n))
    dense[c[0], c[1]] = values.numpy()
    dense[c[1], c[0]] = values.numpy()
    np.testing.assert_allclose(y.numpy(), dense @ x.numpy(), rtol=1e-12, atol=1e-12)


@st.composite
def tensors(draw):
    """A SparseTensor or SymmetricTensor of order 1..4, float or int values with specials."""
    order = draw(st.integers(1, 4))
    n = draw(st.integers(1, 4))
    symmetric = order >= 2 and draw(st.booleans())
    m = draw(st.integers(0, 6))
    coords = np.array(draw(st.lists(st.lists(st.integers(0, n - 1), min_size=order, max_size=order),
                                    min_size=m, max_size=m)), dtype=np.int64).reshape(m, order).T
    integer = draw(st.booleans())
    pool = [0, 1, -3, 2**40] if integer else SPECIAL
    vals = np.array(draw(st.lists(st.sampled_from(pool), min_size=m, max_size=m)),
                    dtype=np.int64 if integer else np.float64)
    if symmetric:
        coords = np.sort(coords, axis=0)
        return sg.SymmetricTensor.from_coo(*_unique(coords, vals), (n,) * order, stored="one")
    return sg.SparseTensor.from_coo(*_unique(coords, vals), (n,) * order)


def _unique(coords, vals):
    _, first = np.unique(coords, axis=1, return_index=True) if coords.shape[1] else (None, np.zeros(0, int))
    return coords[:, first], vals[first]


@examples(60)
@given(t=tensors(), suffix=st.sampled_from([".mtx", ".mtx.gz", ".tns", ".tns.gz", ".npz"]))
def test_save_load_round_trip(t, suffix):
    """Every format, every tensor kind: the same class, shape, groups and entries back."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"t{suffix}"
        try:
            sg.save(path, t)
        except (FormatError, ValueError) as error:
            # what a format cannot hold is refused with the file named
            assert str(path) in str(error) or "mtx" in str(error) or "binsparse" in str(error), error
            assert suffix.startswith(".mtx") and t.ndim != 2 or suffix == ".npz", error
            return
        back = sg.load(path)
    assert type(back) is type(t), (type(back), type(t))
    assert back.shape == t.shape and getattr(back, "groups", None) == getattr(t, "groups", None)
    assert np.array_equal(back.indices, t.indices)
    assert agree(np.asarray(back.values, dtype=np.float64), np.asarray(t.values, dtype=np.float64))


@examples(40)
@given(n=st.integers(1, 5), m=st.integers(1, 5), symmetry=st.sampled_from(["general", "symmetric", "skew-symmetric"]),
       field=st.sampled_from(["real", "integer", "pattern"]), data=st.data())
def test_matrix_market_reader_agrees_with_scipy(n, m, symmetry, field, data):
    if symmetry != "general":
        m = n
    cells = [(i, j) for i in range(n) for j in range(m)
             if symmetry == "general" or i > j or (i == j and symmetry == "symmetric")]
    chosen = data.draw(st.lists(st.sampled_from(cells), unique=True, max_size=len(cells))) if cells else []
    lines = []
    for i, j in chosen:
        value = "" if field == "pattern" else " " + str(data.draw(
            st.integers(-9, 9) if field == "integer" else st.sampled_from(["1.5", "-2e3", "0", "7", "3.25e-2"])))
        lines.append(f"{i + 1} {j + 1}{value}")
    text = f"%%MatrixMarket matrix coordinate {field} {symmetry}\n{n} {m} {len(lines)}\n" + "\n".join(lines) + "\n"
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "m.mtx"
        path.write_text(text)
        expected = scipy.io.mmread(str(path))
        expected = expected.toarray() if sp.issparse(expected) else np.asarray(expected)
        ours = sg.load(path, symmetric=False).to_dense()
        gz = Path(folder) / "m.mtx.gz"
        gz.write_bytes(gzip.compress(text.encode()))
        again = sg.load(gz, symmetric=False).to_dense()
    np.testing.assert_array_equal(ours.astype(np.float64), expected.astype(np.float64))
    np.testing.assert_array_equal(again, ours)


ALPHABET = st.sampled_from(list("yABxijk[],+*=-_ ()0123456789.;") + ["min=", "max=", "min(", "+=", " "])


@examples(150)
@given(text=st.lists(ALPHABET, max_size=24).map("".join), symmetric=st.booleans())
def test_compile_any_text(text, symmetric):
    """Any text compiles into a kernel or raises a ValueError/TypeError with a message."""
    try:
        sg.compile(text, symmetric={"A": "full"} if symmetric else None)
    except (ValueError, TypeError, NotImplementedError) as error:
        assert str(error)
