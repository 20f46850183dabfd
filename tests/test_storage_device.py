"""Storage where the data lives, seen from a kernel call: drivers built from torch-held storage,
device storage kept on the device for Triton (checked on the CPU by treating torch's CPU as the
device, and on a real GPU when one is at hand), and no coordinate copy a kernel does not read.

TRITON_INTERPRET must be set before a generated kernel is decorated (see test_triton_backend.py).
"""

import os

os.environ["TRITON_INTERPRET"] = "1"

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from systec_gpu import arrays, inputs  # noqa: E402
from systec_gpu.catalog import CATALOG, compile_catalog  # noqa: E402
from systec_gpu.storage import SparseTensor, SymmetricTensor  # noqa: E402

from .test_triton_backend import inputs_for, oracle  # noqa: E402


def torch_inputs(values: dict, device="cpu") -> dict:
    """The same inputs with torch arrays: storage rebuilt from torch tensors, dense ones moved."""
    out = {}
    for name, v in values.items():
        if isinstance(v, SymmetricTensor):
            out[name] = SymmetricTensor.from_canonical(torch.from_numpy(v.indices).to(device),
                                                       torch.from_numpy(v.values).to(device), v.shape, v.groups)
        else:
            out[name] = torch.from_numpy(v).to(device)
    return out


@pytest.mark.parametrize("symmetry", [True, False], ids=["sym", "nosym"])
@pytest.mark.parametrize("name", [n for n in CATALOG if n != "ssyrk"])
def test_numba_reads_torch_storage(name, symmetry):
    rng = np.random.default_rng(3)
    kernel = compile_catalog(name, backend="numba", symmetry=symmetry)
    given = inputs_for(name, "classes", rng)
    expected = oracle(kernel, given)
    moved = torch_inputs(given)
    assert isinstance(moved["A"].indices, torch.Tensor)
    result = kernel(**moved)
    np.testing.assert_allclose(np.asarray(result), expected, rtol=1e-10, atol=1e-10)
    driver = kernel._last.driver
    assert all(isinstance(c, np.ndarray) for c in driver.coords._made if c is not None)  # numba reads numpy


@pytest.mark.parametrize("backend", ["numba", "triton"])
def test_no_unread_coordinate_copies(backend):
    """CSR under Numba and Triton (row blocks) walks the pointers: mode 0 is never copied. The non-symmetric baseline
    builds its expanded coordinates in the kernel's dtype and keeps no int64 expansion."""
    rng = np.random.default_rng(5)
    given = inputs_for("ssymv", "classes", rng)
    a = given["A"]
    for symmetry in (True, False):
        kernel = compile_catalog("ssymv", backend=backend, symmetry=symmetry)
        kernel(**given)
        driver = kernel._last.driver
        assert driver.pointers is not None
        made = [c is not None for c in driver.coords._made]
        assert made == [False, True]  # both walk CSR row blocks by their pointers: no row per nonzero
        if not symmetry:
            assert driver.nnz == a.n_expanded and driver.structure.take.dtype == np.int32
            assert driver.coords[1].dtype == np.uint32
    assert not any(isinstance(key, tuple) and key[0] == "expansion" for key in a._cache)


@pytest.fixture
def cpu_as_device(monkeypatch):
    """Treat torch storage on the CPU as device storage (what CUDA storage gets), and refuse every
    host conversion of a torch tensor: the device path must not need one."""
    monkeypatch.setattr(inputs, "_on_accelerator", lambda storage: isinstance(storage.indices, torch.Tensor))

    def refuse(original):
        def guarded(self_or_x, *args):
            x = args[0] if args else self_or_x
            if isinstance(x, torch.Tensor):
                raise AssertionError("a torch tensor was converted to numpy: a host round trip")
            return original(self_or_x, *args)

        return guarded

    monkeypatch.setattr(arrays.TorchOps, "to_host", refuse(arrays.TorchOps.to_host))
    monkeypatch.setattr(arrays.TorchOps, "host_view", refuse(arrays.TorchOps.host_view))
    monkeypatch.setattr(inputs, "to_numpy", refuse(lambda x: inputs.as_torch(x).numpy()))


@pytest.mark.parametrize("symmetry", [True, False], ids=["sym", "nosym"])
@pytest.mark.parametrize("name", ["ssymv", "ssymm", "mttkrp3", "mttkrp4", "bellman", "ttm"])
def test_triton_keeps_device_storage_on_the_device(name, symmetry, cpu_as_device):
    rng = np.random.default_rng(8)
    kernel = compile_catalog(name, backend="triton", symmetry=symmetry)
    given = inputs_for(name, "classes", rng)
    expected = oracle(kernel, given)
    result = kernel(**torch_inputs(given))
    np.testing.assert_allclose(result.numpy(), expected, rtol=1e-10, atol=1e-10)
    driver = kernel._last.driver
    assert isinstance(driver.values, torch.Tensor)
    assert all(isinstance(c, torch.Tensor) and c.dtype == torch.int32 for c in driver.coords._made if c is not None)
    if driver.pointers is not None:
        assert isinstance(driver.pointers, torch.Tensor)
    # a repeat call with new values reuses the structure and reads the new values
    moved = torch_inputs(given)
    again = kernel(**{**moved, "A": moved["A"].with_values(2 * moved["A"].values)})
    doubled = oracle(kernel, {**given, "A": given["A"].with_values(2 * given["A"].values)})
    np.testing.assert_allclose(again.numpy(), doubled, rtol=1e-10, atol=1e-10)


def test_device_storage_from_dense_torch_input(cpu_as_device):
    """A dense torch tensor given for a sparse operand is built into storage with torch ops."""
    rng = np.random.default_rng(9)
    a = rng.uniform(0.5, 2.0, (6, 6))
    a = (a + a.T) * (rng.random((6, 6)) < 0.5)
    a = np.triu(a) + np.triu(a, 1).T
    x = rng.uniform(-1, 1, 6)
    kernel = compile_catalog("ssymv", backend="triton")
    result = kernel(A=torch.from_numpy(a), x=torch.from_numpy(x))
    np.testing.assert_allclose(result.numpy(), a @ x, rtol=1e-12)


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture
def no_host_copies_of_cuda(monkeypatch):
    """Every conversion of a CUDA tensor to host memory raises."""

    def refuse(what, original, position=0):
        def guarded(*args, **kwargs):
            x = args[position]
            if isinstance(x, torch.Tensor) and x.is_cuda:
                raise AssertionError(f"{what} on a CUDA tensor: a host copy")
            return original(*args, **kwargs)

        return guarded

    monkeypatch.setattr(torch.Tensor, "cpu", refuse("Tensor.cpu", torch.Tensor.cpu))
    monkeypatch.setattr(torch.Tensor, "numpy", refuse("Tensor.numpy", torch.Tensor.numpy))
    monkeypatch.setattr(inputs, "to_numpy", refuse("inputs.to_numpy", inputs.to_numpy))
    monkeypatch.setattr(arrays.TorchOps, "to_host", refuse("TorchOps.to_host", arrays.TorchOps.to_host, 1))


@pytest.mark.cuda
@cuda
@pytest.mark.parametrize("symmetry", [True, False], ids=["sym", "nosym"])
@pytest.mark.parametrize("name", ["ssymv", "mttkrp3"])
def test_cuda_build_and_call_make_no_host_copy(name, symmetry, no_host_copies_of_cuda):
    rng = np.random.default_rng(10)
    given = inputs_for(name, "classes", rng)
    a = given["A"]
    kernel = compile_catalog(name, backend="triton", symmetry=symmetry)
    expected = oracle(kernel, given)
    # built on the device from every arrangement of each entry, checked and canonicalized there
    full = a.expanded()
    order = torch.randperm(full.nnz, device="cuda")
    built = SymmetricTensor.from_coo(torch.from_numpy(full.indices).cuda()[:, order],
                                     torch.from_numpy(full.values).cuda()[order], a.shape)
    assert built.indices.is_cuda and built.values.is_cuda and built.classes.is_cuda
    dense = {n: torch.from_numpy(v).cuda() for n, v in given.items() if n != "A"}
    result = kernel(A=built, **dense)
    assert result.is_cuda
    driver = kernel._last.driver
    assert driver.values.is_cuda and all(c.is_cuda for c in driver.coords._made if c is not None)
    torch.testing.assert_close(result, torch.from_numpy(expected).cuda(), rtol=1e-10, atol=1e-10)


@pytest.mark.cuda
@cuda
def test_cuda_round_trip_and_construction_equal_numpy():
    rng = np.random.default_rng(11)
    a = rng.uniform(0.5, 2.0, (7, 7))
    a = np.triu(a) + np.triu(a, 1).T
    a[rng.random((7, 7)) < 0.3] = 0
    a = np.triu(a) + np.triu(a, 1).T
    on_host = SymmetricTensor.from_dense(a)
    on_device = SymmetricTensor.from_dense(torch.from_numpy(a).cuda())
    assert on_device.device.type == "cuda" and on_device.indices.is_cuda
    np.testing.assert_array_equal(on_device.indices.cpu().numpy(), on_host.indices)
    np.testing.assert_array_equal(on_device.classes.cpu().numpy(), on_host.classes)
    moved = on_host.cuda()
    assert moved.indices.is_cuda and moved._cache is not on_host._cache  # a device copy is a new structure
    back = moved.cpu()
    assert back._cache is not moved._cache
    np.testing.assert_array_equal(back.numpy().indices, on_host.indices)
    with pytest.raises(ValueError, match=r"A\[0, 1\] = 1.0 but A\[1, 0\] = 2.0"):
        SymmetricTensor.from_coo(torch.tensor([[0, 1], [1, 0]], device="cuda"),
                                 torch.tensor([1.0, 2.0], device="cuda"), (2, 2))
    s = SparseTensor.from_coo(torch.tensor([[1, 0, 1]], device="cuda"), torch.tensor([1.0, 2.0, 3.0], device="cuda"),
                              (2,))
    assert s.values.is_cuda and s.values.cpu().tolist() == [2.0, 4.0]
