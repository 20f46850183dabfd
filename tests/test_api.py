"""The user-facing API: input kinds, dtypes, errors naming the operand, explain/source/stats."""

import warnings

import numpy as np
import pytest
import scipy.sparse as sp
import torch

import systec_gpu as sg


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    dense = rng.random((6, 6))
    dense[dense < 0.6] = 0
    return dense + dense.T, rng.random(6)


@pytest.fixture(scope="module")
def ssymv():
    return sg.compile("y[i] += A[i,j]*x[j]", symmetric={"A": "full"}, backend="numba")


def input_kinds(dense):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's "sparse CSR is beta"
        return {
            "numpy": dense,
            "torch": torch.tensor(dense),
            "scipy csr": sp.csr_matrix(dense),
            "scipy coo": sp.coo_matrix(dense),
            "torch sparse coo": torch.tensor(dense).to_sparse(),
            "torch sparse csr": torch.tensor(dense).to_sparse_csr(),
            "SymmetricTensor": sg.SymmetricTensor.from_dense(dense),
        }


def test_every_input_kind_gives_the_same_result(ssymv, data):
    dense, x = data
    for kind, a in input_kinds(dense).items():
        result = ssymv(A=a, x=torch.tensor(x))
        assert isinstance(result, torch.Tensor) and result.dtype == torch.float64, kind
        np.testing.assert_allclose(result.numpy(), dense @ x, rtol=1e-13, err_msg=kind)


def test_float32_in_float32_out(ssymv, data):
    dense, x = data
    result = ssymv(A=torch.tensor(dense, dtype=torch.float32), x=torch.tensor(x, dtype=torch.float32))
    assert result.dtype == torch.float32
    np.testing.assert_allclose(result.numpy(), dense @ x, rtol=1e-5)


@pytest.mark.parametrize("kind", ["scipy csr", "numpy"])
def test_asymmetric_input_declared_symmetric_names_the_pair(ssymv, data, kind):
    dense, x = data
    bad = dense.copy()
    bad[0, 1] += 1.0
    a = sp.csr_matrix(bad) if kind == "scipy csr" else bad
    with pytest.raises(ValueError, match=r"A is not symmetric in modes \(0, 1\): A\[0, 1\] = [0-9.]+ but A\[1, 0\]"):
        ssymv(A=a, x=x)


def test_size_mismatch_names_index_and_operands(ssymv, data):
    dense, _ = data
    with pytest.raises(ValueError, match=r"size mismatch for index j: A has size 6 at mode 1 but x has size 5"):
        ssymv(A=dense, x=np.ones(5))


def test_missing_and_unknown_tensors(ssymv, data):
    dense, x = data
    with pytest.raises(TypeError, match="missing tensor"):
        ssymv(A=dense)
    with pytest.raises(TypeError, match="unexpected tensor"):
        ssymv(A=dense, x=x, z=x)


def test_wrong_arity(ssymv):
    with pytest.raises(ValueError, match=r"A has 3 modes .* but is used as A\[i,j\]"):
        ssymv(A=np.zeros((2, 2, 2)), x=np.zeros(2))


def test_symmetric_tensor_with_other_groups_is_refused():
    k = sg.compile("y[i] += A[i,j,k]*x[j]*x[k]", symmetric={"A": [(1, 2)]})
    full = sg.SymmetricTensor.from_dense(np.zeros((3, 3, 3)), "full")
    with pytest.raises(ValueError, match=r"groups \(\(0, 1, 2\),\).*symmetric in \(\(1, 2\),\)"):
        k(A=full, x=np.zeros(3))


def test_explain_source_and_stats(ssymv, data):
    dense, x = data
    text = ssymv.explain()
    assert "permutable (i, j): A is symmetric in modes (0, 1); visit i <= j" in text
    assert "table mult" in text
    assert "def kernel(" in ssymv.source("numba")
    with pytest.raises(RuntimeError, match="call the kernel first"):
        sg.compile("y[i] += A[i,j]*x[j]", symmetric={"A": "full"}).stats  # noqa: B018
    ssymv(A=dense, x=x)
    stored = sg.SymmetricTensor.from_dense(dense)
    stats = ssymv.stats
    assert stats["stored_nonzeros"] == stored.nnz and stats["expanded_nonzeros"] == stored.n_expanded
    assert stats["work_ratio"] == pytest.approx(stored.nnz / stored.n_expanded)


def test_canonical_output_keeps_only_the_canonical_part():
    rng = np.random.default_rng(1)
    a = rng.random((5, 3))
    k = sg.compile("C[i,j] += A[i,k]*A[j,k]")
    full = k(A=a).numpy()
    canonical = k(A=a, canonical_output=True).numpy()
    np.testing.assert_allclose(full, a @ a.T, rtol=1e-13)
    np.testing.assert_allclose(np.triu(canonical), np.triu(a @ a.T), rtol=1e-13)
    assert np.all(np.tril(canonical, -1) == 0)


def test_loop_order_changes_the_schedule_not_the_result():
    rng = np.random.default_rng(2)
    a, b = rng.random((4, 3)), rng.random((3, 5))
    default = sg.compile("C[i,j] += A[i,k]*B[k,j]")
    reordered = sg.compile("C[i,j] += A[i,k]*B[k,j]", loop_order=["k", "i", "j"])
    assert default.loops != reordered.loops
    np.testing.assert_allclose(reordered(A=a, B=b).numpy(), a @ b, rtol=1e-13)
    np.testing.assert_allclose(default(A=a, B=b).numpy(), a @ b, rtol=1e-13)


def test_cli_explain(capsys):
    from systec_gpu.cli import main

    assert main(["explain", "y[i] += A[i,j]*x[j]", "--symmetric", "A", "--source", "numba"]) == 0
    out = capsys.readouterr().out
    assert "canonical nonzeros of A [csr]" in out and "def kernel(" in out


def test_declared_output_symmetry_proved_by_renaming_reduction_indices():
    rng = np.random.default_rng(3)
    a = rng.random((4, 3))
    s = rng.random((3, 3))
    s = s + s.T
    k = sg.compile("C[i,j] += A[i,k]*S[k,l]*A[j,l]", symmetric={"S": "full", "C": "full"},
                   formats={"S": "dense"}, backend="numba")
    assert k.loops.output_groups == ((0, 1),)
    np.testing.assert_allclose(k(A=a, S=s).numpy(), a @ s @ a.T, rtol=1e-13)


def test_unprovable_declared_output_symmetry_warns():
    with pytest.warns(UserWarning, match="trusting the declaration"):
        sg.compile("C[i,j] += A[i,k]*B[j,k]", symmetric={"C": "full"})
