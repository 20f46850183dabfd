"""Every catalog kernel x {reference, numba} x {symmetry on, off} against numpy on the expanded
dense tensors, on data containing every diagonal class, an empty tensor and a single entry."""

import numpy as np
import pytest

from systec_gpu.catalog import CATALOG, compile_catalog
from systec_gpu.ir.einsum_interpreter import interpret_einsum
from systec_gpu.storage import SymmetricTensor

from .symdata import dense_for_oracle, symmetric_sparse

ORDER = {"ssymv": 2, "syprd": 2, "ssymm": 2, "bellman": 2, "ttm": 3, "mttkrp3": 3, "mttkrp4": 4, "mttkrp5": 5}


def symmetric_input(order: int, size: int, case: str, rng) -> SymmetricTensor:
    if case == "empty":
        empty = np.zeros((order, 0), dtype=np.int64)
        return SymmetricTensor.from_canonical(empty, np.zeros(0), (size,) * order, "full")
    if case == "single":
        coords = np.array([[0] + [1] * (order - 1)]).T  # one entry on a diagonal class
        return SymmetricTensor.from_canonical(coords, np.array([1.5]), (size,) * order, "full")
    return symmetric_sparse(order, size, rng, per_class=2)


def catalog_inputs(name: str, case: str, rng) -> dict:
    size, rank = 6, 3
    if name == "ssyrk":
        shape = {"empty": (0, 3), "single": (1, 1), "classes": (5, 3)}[case]
        return {"A": rng.uniform(-1, 1, shape)}
    a = symmetric_input(ORDER[name], size, case, rng)
    if name in ("ssymv", "syprd", "bellman"):
        return {"A": a, "x": rng.uniform(-1, 1, size)}
    if name == "ssymm":
        return {"A": a, "X": rng.uniform(-1, 1, (size, rank))}
    return {"A": a, "B": rng.uniform(-1, 1, (size, rank))}


def check_against_numpy(kernel, inputs: dict) -> None:
    result = kernel(**inputs).numpy()
    symbol = kernel.program.einsum.reduce
    expected = interpret_einsum(kernel.program.einsum, {n: dense_for_oracle(v, symbol) for n, v in inputs.items()})
    assert result.shape == expected.shape
    np.testing.assert_allclose(result, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("symmetry", [True, False], ids=["sym", "nosym"])
@pytest.mark.parametrize("backend", ["reference", "numba"])
@pytest.mark.parametrize("case", ["classes", "single", "empty"])
@pytest.mark.parametrize("name", list(CATALOG))
def test_catalog_kernel_matches_numpy(name, case, backend, symmetry):
    rng = np.random.default_rng(7)
    kernel = compile_catalog(name, backend=backend, symmetry=symmetry)
    check_against_numpy(kernel, catalog_inputs(name, case, rng))


def test_symmetric_data_covers_every_diagonal_class():
    rng = np.random.default_rng(1)
    for order in (2, 3, 4, 5):
        tensor = symmetric_sparse(order, 6, rng)
        assert set(np.unique(tensor.classes)) == set(range(2 ** (order - 1)))


def test_mttkrp5_visits_at_most_one_hundredth_of_the_points():
    rng = np.random.default_rng(5)
    size, count = 12, 40
    coords = np.array([np.sort(rng.choice(size, 5, replace=False)) for _ in range(count)]).T
    coords = np.unique(coords, axis=1)
    tensor = SymmetricTensor.from_canonical(coords, rng.uniform(0.5, 2, coords.shape[1]), (size,) * 5, "full")
    b = rng.uniform(-1, 1, (size, 2))
    kernel = compile_catalog("mttkrp5", backend="numba")
    check_against_numpy(kernel, {"A": tensor, "B": b})
    stats = kernel.stats
    assert stats["expanded_nonzeros"] == 120 * stats["stored_nonzeros"]
    assert stats["work_ratio"] <= 1 / 100


def test_dense_inputs_declared_symmetric_are_checked_and_read_canonically():
    rng = np.random.default_rng(3)
    kernel = compile_catalog("ssymv", formats={"A": "dense"}, backend="numba")
    a = rng.uniform(size=(4, 4))
    x = rng.uniform(size=4)
    message = r"A is not symmetric in modes \(0, 1\): A\[0, 1\] = .* but A\[1, 0\] = .*check=False"
    with pytest.raises(ValueError, match=message):
        kernel(A=a, x=x)
    upper = np.triu(a)
    full = upper + np.triu(a, 1).T
    np.testing.assert_allclose(kernel(A=a, x=x, check=False).numpy(), full @ x, rtol=1e-12)


@pytest.mark.parametrize("name", list(CATALOG))
def test_parallel_chunks_lose_no_update(name, monkeypatch):
    # Small inputs run on one thread; force the multi-chunk path (per-chunk partial outputs).
    from systec_gpu.backends import numba_backend

    monkeypatch.setattr(numba_backend, "SERIAL_BELOW", 0)
    rng = np.random.default_rng(11)
    check_against_numpy(compile_catalog(name, backend="numba"), catalog_inputs(name, "classes", rng))


def test_scalar_output_is_zero_dimensional():
    rng = np.random.default_rng(2)
    result = compile_catalog("syprd", backend="numba")(**catalog_inputs("syprd", "classes", rng))
    assert result.shape == ()


def test_package_level_load_and_save(tmp_path):
    import systec_gpu as sg

    tensor = symmetric_sparse(2, 5, np.random.default_rng(4))
    sg.save(tmp_path / "a.mtx", tensor)
    loaded = sg.load(tmp_path / "a.mtx")
    assert isinstance(loaded, sg.SymmetricTensor)
    np.testing.assert_array_equal(loaded.to_dense(), tensor.to_dense())
