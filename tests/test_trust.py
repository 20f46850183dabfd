"""Regression tests of issue 9's silent wrong answers: each failed (wrong result, no error) before.

1. sparse inputs declared symmetric were mirrored, not checked;
3. a SymmetricTensor from `with_values` (or values changed in place) gave the old values' result;
4. min=/max= with a dense operand declared symmetric dropped its explicit zeros.
Every backend: reference, numba, and triton under the CPU interpreter.
"""

import os

os.environ["TRITON_INTERPRET"] = "1"

import gzip  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import scipy.sparse as sp  # noqa: E402
import torch  # noqa: E402

import systec_gpu as sg  # noqa: E402
from systec_gpu.io.errors import FormatError  # noqa: E402

BACKENDS = ("reference", "numba", "triton")
ASYMMETRIC = np.array([[1.0, 0.0, 0.0], [2.0, 0.0, 0.0], [0.0, 0.0, 3.0]])  # A[1,0] has no mirror
MISMATCHED = np.array([[1.0, 5.0, 0.0], [2.0, 0.0, 0.0], [0.0, 0.0, 3.0]])  # A[0,1] != A[1,0]


def sparse_kinds(dense: np.ndarray) -> dict:
    import sparse as pydata

    t = torch.from_numpy(dense)
    return {
        "scipy_csr": sp.csr_matrix(dense),
        "scipy_coo": sp.coo_array(dense),
        "torch_coo": t.to_sparse(),
        "torch_csr": t.to_sparse_csr(),
        "SparseTensor": sg.SparseTensor.from_dense(dense),
        "pydata": pydata.COO.from_numpy(dense),
    }


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", list(sparse_kinds(ASYMMETRIC)))
def test_sparse_input_declared_symmetric_is_checked(backend, kind):
    kernel = sg.compile("y[i] += A[i,j]*x[j]", symmetric={"A": "full"}, backend=backend)
    x = np.ones(3)
    with pytest.raises(ValueError, match=r"stores A\[1, 0\] = 2.0 without its mirror A\[0, 1\]"):
        kernel(A=sparse_kinds(ASYMMETRIC)[kind], x=x)
    with pytest.raises(ValueError, match=r"A\[0, 1\] = 5.0 but A\[1, 0\] = 2.0"):
        kernel(A=sparse_kinds(MISMATCHED)[kind], x=x)
    # check=False reads the canonical entries only, like a dense input
    upper = np.triu(MISMATCHED)
    expected = (upper + np.triu(upper, 1).T) @ x
    got = kernel(A=sparse_kinds(MISMATCHED)[kind], x=x, check=False)
    np.testing.assert_allclose(got.numpy(), expected)
    # a symmetric input in full storage: the right answer
    full = MISMATCHED.copy()
    full[1, 0] = 5.0
    np.testing.assert_allclose(kernel(A=sparse_kinds(full)[kind], x=x).numpy(), full @ x)


def test_general_matrix_market_file_with_one_triangle(tmp_path):
    path = tmp_path / "lower.mtx"
    path.write_text("%%MatrixMarket matrix coordinate real general\n3 3 3\n1 1 1.0\n2 1 2.0\n3 3 3.0\n")
    with pytest.raises(FormatError, match=r"lower.mtx: line 4: .*stores A\[1, 0\] = 2.0 without its mirror"):
        sg.load(path, symmetric=True)
    one = sg.load(path, symmetric=True, stored="one")
    np.testing.assert_array_equal(one.to_dense(), [[1, 2, 0], [2, 0, 0], [0, 0, 3]])
    gz = tmp_path / "lower.mtx.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    with pytest.raises(FormatError, match="without its mirror"):
        sg.load(gz, symmetric=True)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ["ssymv", "mttkrp3"])  # CSR and COO drivers
def test_new_values_are_never_stale(backend, name):
    from systec_gpu.catalog import compile_catalog

    from .symdata import symmetric_sparse

    rng = np.random.default_rng(3)
    order = {"ssymv": 2, "mttkrp3": 3}[name]
    a = symmetric_sparse(order, 5, rng)
    other = {"x": rng.uniform(-1, 1, 5)} if name == "ssymv" else {"B": rng.uniform(-1, 1, (5, 2))}
    kernel = compile_catalog(name, backend=backend)
    for symmetry in (True, False):  # the expanded (symmetry=False) driver too
        kernel = compile_catalog(name, backend=backend, symmetry=symmetry)
        first = kernel(A=a, **other).numpy()
        np.testing.assert_allclose(kernel(A=a.with_values(10 * a.values), **other).numpy(), 10 * first)
        values = a.values.copy()
        b = a.with_values(values)
        kernel(A=b, **other)
        values *= -1  # in place, between two calls on the same tensor
        np.testing.assert_allclose(kernel(A=b, **other).numpy(), -first)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("reduce", "sign"), [("min", 1.0), ("max", -1.0)])
def test_dense_zeros_count_under_min_and_max(backend, reduce, sign):
    w = sign * np.array([[0.0, 1.0, 2.0], [1.0, 0.0, 3.0], [2.0, 3.0, 0.0]])
    x = np.zeros(3)
    symmetric = sg.compile(f"y[i] {reduce}= A[i,j] + x[j]", symmetric={"A": "full"}, backend=backend)
    plain = sg.compile(f"y[i] {reduce}= A[i,j] + x[j]", backend=backend)
    expected = getattr(np, reduce)(w + x[None, :], axis=1)
    np.testing.assert_array_equal(symmetric(A=w, x=x).numpy(), expected)
    np.testing.assert_array_equal(plain(A=w, x=x).numpy(), expected)
    np.testing.assert_array_equal(symmetric(A=torch.from_numpy(w), x=torch.from_numpy(x)).numpy(), expected)


def test_sparse_operand_under_min_treats_unstored_entries_as_unreachable():
    """A scipy graph under min=: an unstored entry is +inf (no edge), a stored zero is an edge."""
    graph = sp.csr_matrix((np.array([0.0, 0.0, 4.0, 4.0]), (np.array([0, 1, 1, 2]), np.array([1, 0, 2, 1]))),
                          shape=(3, 3))
    kernel = sg.compile("y[i] min= A[i,j] + x[j]", symmetric={"A": "full"})
    x = np.array([0.0, 10.0, 20.0])
    np.testing.assert_array_equal(kernel(A=graph, x=x).numpy(), [10.0, 0.0, 14.0])


BAD_INDICES = {
    "negative": ([[0, -1], [1, 2]], r"entry 1 A\[-1, 2\] has index -1 in mode 0, outside the mode size 4"),
    "past the end": ([[0, 1], [1, 9]], r"entry 1 A\[1, 9\] has index 9 in mode 1, outside the mode size 4"),
    "row past the end": ([[0, 7], [1, 7]], r"entry 1 A\[7, 7\] has index 7 in mode 0"),
    "unsorted": ([[1, 0], [2, 1]], r"entry 0 A\[1, 2\] comes before entry 1 A\[0, 1\]"),
    "repeated": ([[0, 0], [1, 1]], r"entry 0 A\[0, 1\] repeats entry 1 A\[0, 1\]"),
    "not canonical": ([[0, 2], [1, 1]], r"entry 1 A\[2, 1\] is not canonical"),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", list(BAD_INDICES))
def test_op_and_trusted_storage_refuse_bad_coordinates(backend, case):
    """Once a segfault (numba, the triton interpreter) or a silently wrong SSYMV."""
    indices, message = BAD_INDICES[case]
    kernel = sg.compile("y[i] += A[i,j]*x[j]", symmetric={"A": "full"}, backend=backend)
    x = torch.ones(4, dtype=torch.float64)
    values = torch.ones(2, dtype=torch.float64)
    with pytest.raises(ValueError, match=message):
        kernel.op(torch.tensor(indices), values, [4, 4], x)
    trusted = sg.SymmetricTensor(np.array(indices), values.numpy(), (4, 4), check=False)
    with pytest.raises(ValueError, match=message):
        kernel(A=trusted, x=x)


def test_op_revalidates_indices_written_in_place():
    kernel = sg.compile("y[i] += A[i,j]*x[j]", symmetric={"A": "full"}, backend="numba")
    indices = torch.tensor([[0, 1], [1, 2]])
    x, values = torch.ones(4, dtype=torch.float64), torch.ones(2, dtype=torch.float64)
    np.testing.assert_allclose(kernel.op(indices, values, [4, 4], x).numpy(), [1, 2, 1, 0])
    indices[1, 1] = 9  # bumps the tensor's version: the cached structure is not reused
    with pytest.raises(ValueError, match="outside the mode size 4"):
        kernel.op(indices, values, [4, 4], x)


@pytest.mark.parametrize("where", ["matrix", "vector", "stored values", "torch"])
def test_integers_that_float64_cannot_hold_are_refused(where):
    kernel = sg.compile("y[i] += A[i,j]*x[j]", symmetric={"A": "full"})
    big = 2**53 + 1
    a = np.array([[1, 2], [2, big]], dtype=np.int64)
    x = np.array([1, 1], dtype=np.int64)
    inputs = {"matrix": {"A": a, "x": x},
              "vector": {"A": np.eye(2, dtype=np.int64), "x": np.array([big, 1])},
              "stored values": {"A": sg.SymmetricTensor.from_dense(a), "x": x},
              "torch": {"A": torch.from_numpy(a), "x": torch.from_numpy(x)}}[where]
    with pytest.raises(ValueError, match=r"the integer 9007199254740993 does not fit float64 exactly"):
        kernel(**inputs)
    exact = np.array([[1, 2], [2, 2**53]], dtype=np.int64)  # 2**53 itself is exact
    np.testing.assert_array_equal(kernel(A=exact, x=x).numpy(), [3.0, 2.0 + 2**53])


def test_triton_without_cuda_or_interpreter_refuses_on_every_path(monkeypatch):
    """k(...) and k.op(...) agree: both refuse (k.op once ran quietly on numba)."""
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    kernel = sg.compile("y[i] += A[i,j]*x[j]", symmetric={"A": "full"}, backend="triton")
    a = sg.SymmetricTensor.from_dense(np.eye(3))
    x = torch.ones(3, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="the triton backend needs a CUDA device"):
        kernel(A=a, x=x)
    with pytest.raises(RuntimeError, match="the triton backend needs a CUDA device"):
        kernel.op(*kernel.op_arguments(A=a, x=x))
    with pytest.raises(RuntimeError, match="the triton backend needs a CUDA device"):
        kernel(A=a, x=x.requires_grad_(True))  # through the op


@pytest.mark.parametrize(("value", "message"), [
    (None, r"x: expected an array or tensor .* got NoneType"),
    ("abc", r"x: expected an array or tensor .* got str"),
    ({"a": 1}, r"x: expected an array or tensor .* got dict"),
])
def test_non_tensors_are_named(value, message):
    kernel = sg.compile("y[i] += A[i,j]*x[j]", symmetric={"A": "full"})
    with pytest.raises(TypeError, match=message):
        kernel(A=np.eye(3), x=value)


def test_meta_tensors_and_bad_names_are_refused():
    kernel = sg.compile("y[i] += A[i,j]*x[j]", symmetric={"A": "full"})
    with pytest.raises(ValueError, match=r"x is a meta tensor \(shape \(3,\), no data\)"):
        kernel(A=np.eye(3), x=torch.empty(3, device="meta"))
    with pytest.raises(ValueError, match="kernel name 'my kernel!' must be an identifier"):
        sg.compile("y[i] += A[i,j]*x[j]", name="my kernel!")
