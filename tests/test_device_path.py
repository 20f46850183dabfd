"""The Triton path keeps torch (and CuPy) operands on their device: no host round trip of dense
operands or of the output. Under the CPU interpreter "the device" is torch's CPU; the CUDA and
CuPy tests skip without a GPU.

TRITON_INTERPRET must be set before a generated kernel is decorated (see test_triton_backend.py).
"""

import os

os.environ["TRITON_INTERPRET"] = "1"

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from systec_gpu import compile as compile_kernel  # noqa: E402
from systec_gpu import inputs, runtime  # noqa: E402
from systec_gpu.catalog import CATALOG, compile_catalog  # noqa: E402
from systec_gpu.dense_symmetry import mirror_canonical, mirror_in_place  # noqa: E402
from systec_gpu.runtime import allocate, bind, finish, mirror_tensor  # noqa: E402

from .test_triton_backend import inputs_for, oracle  # noqa: E402


def as_torch(inputs: dict, device="cpu") -> dict:
    return {n: torch.from_numpy(v).to(device) if isinstance(v, np.ndarray) else v for n, v in inputs.items()}


@pytest.fixture
def no_host_copies(monkeypatch):
    """Every numpy conversion of the runtime raises when it meets a torch tensor."""

    def refuse(what, original):
        def guarded(*args, **kwargs):
            if any(isinstance(a, torch.Tensor) for a in args):
                raise AssertionError(f"{what} called on a torch tensor: a host round trip")
            return original(*args, **kwargs)

        return guarded

    for module, names in ((inputs, ("to_numpy", "densify", "check_symmetric", "mirror_canonical")),
                          (runtime, ("mirror_in_place",))):
        for name in names:
            monkeypatch.setattr(module, name, refuse(f"{module.__name__}.{name}", getattr(module, name)))


def _same_storage(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()


@pytest.mark.parametrize("symmetry", [True, False], ids=["sym", "nosym"])
@pytest.mark.parametrize("name", list(CATALOG))
def test_catalog_on_torch_tensors_stays_on_device(name, symmetry, no_host_copies):
    rng = np.random.default_rng(21)
    kernel = compile_catalog(name, backend="triton", symmetry=symmetry)
    inputs = inputs_for(name, "classes", rng)
    expected = oracle(kernel, inputs)
    result = kernel(**as_torch(inputs))
    assert isinstance(result, torch.Tensor) and result.dtype == torch.float64 and result.device.type == "cpu"
    np.testing.assert_allclose(result.numpy(), expected, rtol=1e-10, atol=1e-10)
    args = kernel._last
    # the dense operands reached the kernel as torch tensors, and the result is the kernel's own buffer
    assert all(isinstance(v, torch.Tensor) for v in args.dense.values())
    assert isinstance(args.partial, torch.Tensor) and _same_storage(result, args.partial)


@pytest.mark.parametrize("name", ["ssymv", "ssymm", "ssyrk", "mttkrp3", "bellman"])
def test_catalog_fp32_torch(name, no_host_copies):
    rng = np.random.default_rng(4)
    kernel = compile_catalog(name, backend="triton")
    inputs = inputs_for(name, "classes", rng, dtype=np.float32)
    result = kernel(**as_torch(inputs))
    assert result.dtype == torch.float32
    np.testing.assert_allclose(result.numpy(), oracle(kernel, inputs), rtol=1e-5, atol=1e-5)


def test_contiguous_operand_is_used_in_place():
    """A contiguous operand of the kernel's dtype and layout crosses without any copy."""
    rng = np.random.default_rng(1)
    kernel = compile_catalog("ssymv", backend="triton")
    inputs = as_torch(inputs_for("ssymv", "classes", rng))
    kernel(**inputs)
    assert kernel._last.dense["x"] is inputs["x"] or _same_storage(kernel._last.dense["x"], inputs["x"])


def test_mixed_dtypes_cast_on_device(no_host_copies):
    """float32 torch operand with a float64 driver: the cast happens with torch (result float64)."""
    rng = np.random.default_rng(2)
    kernel = compile_catalog("ssymm", backend="triton")
    inputs = inputs_for("ssymm", "classes", rng)
    moved = as_torch(inputs)
    moved["X"] = moved["X"].float()
    inputs["X"] = inputs["X"].astype(np.float32)
    result = kernel(**moved)
    assert result.dtype == torch.float64
    np.testing.assert_allclose(result.numpy(), oracle(kernel, inputs), rtol=1e-6, atol=1e-6)


def test_non_contiguous_and_float16_operands(no_host_copies):
    rng = np.random.default_rng(3)
    kernel = compile_kernel("C[i,j] += A[i,k]*B[k,j]", backend="triton")
    a = torch.from_numpy(rng.uniform(-1, 1, (4, 5)))
    b = torch.from_numpy(rng.uniform(-1, 1, (6, 5))).t()  # a strided view
    result = kernel(A=a.half(), B=b)
    np.testing.assert_allclose(result.numpy(), a.half().double().numpy() @ b.numpy(), rtol=1e-10, atol=1e-10)


# A stays dense (symmetric operands default to a sparse COO driver, which is built on the host)
SYMMETRIC_DENSE = ("y[i] += A[i,j,k]*x[j]*x[k]", {"A": [(1, 2)]}, {"A": (4, 5, 5), "x": (5,)})
FORMATS = {"A": "dense"}


def test_declared_symmetric_dense_operand_on_device(no_host_copies):
    """Check and mirror of a declared-symmetric dense operand run with torch ops."""
    expr, symmetric, shapes = SYMMETRIC_DENSE
    rng = np.random.default_rng(6)
    a = mirror_canonical(rng.uniform(-1, 1, shapes["A"]), symmetric["A"])
    x = rng.uniform(-1, 1, shapes["x"])
    for symmetry in (True, False):
        kernel = compile_kernel(expr, symmetric=symmetric, formats=FORMATS, backend="triton", symmetry=symmetry)
        assert "A" in kernel.loops.dense_inputs
        result = kernel(A=torch.from_numpy(a), x=torch.from_numpy(x))
        np.testing.assert_allclose(result.numpy(), oracle(kernel, {"A": a, "x": x}), rtol=1e-10, atol=1e-10)


def test_declared_symmetric_dense_operand_check_and_canonical_part():
    expr, symmetric, shapes = SYMMETRIC_DENSE
    rng = np.random.default_rng(7)
    a = rng.uniform(-1, 1, shapes["A"])  # not symmetric
    x = rng.uniform(-1, 1, shapes["x"])
    triton = compile_kernel(expr, symmetric=symmetric, formats=FORMATS, backend="triton")
    numba = compile_kernel(expr, symmetric=symmetric, formats=FORMATS, backend="numba")
    with pytest.raises(ValueError) as on_device:
        triton(A=torch.from_numpy(a), x=torch.from_numpy(x))
    with pytest.raises(ValueError) as on_host:
        numba(A=a, x=x)
    assert str(on_device.value) == str(on_host.value)  # the same message, naming the same pair
    # check=False reads the canonical part only, like the host path
    got = triton(A=torch.from_numpy(a), x=torch.from_numpy(x), check=False)
    np.testing.assert_allclose(got.numpy(), numba(A=a, x=x, check=False).numpy(), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("shape,groups", [((5, 5), [(0, 1)]), ((3, 4, 4), [(1, 2)]), ((4, 4, 4), [(0, 1, 2)]),
                                          ((3, 3, 2, 3), [(0, 3, 1)]), ((0, 0), [(0, 1)]),
                                          # pairs mirror in blocks of 256 rows: across block edges
                                          ((600, 600), [(0, 1)]), ((2, 257, 3, 257), [(1, 3)]),
                                          ((3, 3, 5, 5), [(0, 1), (2, 3)]), ((1, 1), [(0, 1)])])
def test_mirror_tensor_matches_numpy(shape, groups):
    array = np.random.default_rng(8).uniform(-1, 1, shape)
    expected = array.copy()
    mirror_in_place(expected, groups)
    tensor = torch.from_numpy(array.copy())
    assert mirror_tensor(tensor, groups) is tensor
    np.testing.assert_array_equal(tensor.numpy(), expected)
    view = torch.from_numpy(array.copy()).permute(*reversed(range(len(shape))))  # any strides
    mirror_tensor(view, [tuple(len(shape) - 1 - m for m in g) for g in groups])
    np.testing.assert_array_equal(view.permute(*reversed(range(len(shape)))).numpy(), expected)


@pytest.mark.parametrize("mirrored", [True, False])
@pytest.mark.parametrize("canonical", [True, False])
def test_finish_symmetric_output_torch_like_numpy(canonical, mirrored):
    """finish() of a torch buffer: mirror / clear the mirror half exactly as the numpy finish does."""
    kernel = compile_catalog("ssyrk", backend="triton")
    a = np.random.default_rng(9).uniform(-1, 1, (6, 2))
    results = []
    for device in (None, torch.device("cpu")):
        args = bind(kernel.loops, kernel.program, {"A": a}, device_tensors=device is not None)
        allocate(args, kernel.loops, 1, device=device)
        partial = args.partial if device is None else args.partial.numpy()
        partial[0] = np.triu(a @ a.T) if not mirrored else a @ a.T
        args.output_mirrored = mirrored
        results.append(finish(args, kernel.loops, kernel.program, canonical=canonical).numpy())
    np.testing.assert_array_equal(results[1], results[0])


@pytest.mark.parametrize("expr", ["C[i,j] += A[i,k]*B[k,j]", "C[i,j] min= A[i,k] + B[k,j]",
                                  "C[i,j] max= A[i,k] + B[k,j]"])
def test_finish_reduces_torch_chunks(expr):
    kernel = compile_kernel(expr, backend="triton")
    rng = np.random.default_rng(10)
    inputs = {"A": rng.uniform(-1, 1, (3, 2)), "B": rng.uniform(-1, 1, (2, 4))}
    results = []
    for device in (None, torch.device("cpu")):
        args = bind(kernel.loops, kernel.program, inputs, device_tensors=device is not None)
        allocate(args, kernel.loops, 3, device=device)
        chunks = np.random.default_rng(11).uniform(-1, 1, tuple(args.partial.shape))
        if device is None:
            args.partial[...] = chunks
        else:
            args.partial.copy_(torch.from_numpy(chunks))
        results.append(finish(args, kernel.loops, kernel.program).numpy())
    np.testing.assert_array_equal(results[1], results[0])


def test_ssyrk_canonical_output_on_torch(no_host_copies):
    a = torch.from_numpy(np.random.default_rng(4).uniform(-1, 1, (9, 2)))
    result = compile_catalog("ssyrk", backend="triton")(A=a, canonical_output=True)
    np.testing.assert_allclose(result.numpy(), np.triu(a.numpy() @ a.numpy().T), rtol=1e-10, atol=1e-10)


def test_driver_uploads_are_cached_per_storage():
    """Repeated calls on one SymmetricTensor reuse its driver structure and the device copies of
    its coordinates (values are read every call: never cached)."""
    rng = np.random.default_rng(12)
    for name in ("ssymv", "mttkrp3"):  # CSR and COO drivers
        kernel = compile_catalog(name, backend="triton")
        inputs = as_torch(inputs_for(name, "classes", rng))
        kernel(**inputs)
        driver = kernel._last.driver
        copies = dict(driver.device_copies)
        assert copies
        kernel(**inputs)
        assert kernel._last.driver.structure is driver.structure
        assert all(driver.device_copies[k][1] is v[1] for k, v in copies.items())


def test_numpy_inputs_still_return_cpu_torch():
    rng = np.random.default_rng(13)
    kernel = compile_catalog("ssymv", backend="triton")
    inputs = inputs_for("ssymv", "classes", rng)
    result = kernel(**inputs)
    assert isinstance(result, torch.Tensor) and result.device.type == "cpu"
    np.testing.assert_allclose(result.numpy(), oracle(kernel, inputs), rtol=1e-10, atol=1e-10)


def test_numba_path_still_binds_numpy():
    rng = np.random.default_rng(14)
    kernel = compile_catalog("ssymm", backend="numba")
    inputs = as_torch(inputs_for("ssymm", "classes", rng))
    kernel(**inputs)
    assert all(isinstance(v, np.ndarray) for v in kernel._last.dense.values())
    assert isinstance(kernel._last.partial, np.ndarray)


# ---------------------------------------------------------------------------------------------
# CUDA and CuPy (skipped without a GPU)

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.cuda
@cuda
@pytest.mark.parametrize("name", list(CATALOG))
def test_catalog_on_cuda_stays_on_device(name, no_host_copies):
    rng = np.random.default_rng(0)
    kernel = compile_catalog(name, backend="triton")
    inputs = inputs_for(name, "classes", rng)
    result = kernel(**as_torch(inputs, "cuda"))
    assert result.device.type == "cuda" and _same_storage(result, kernel._last.partial)
    np.testing.assert_allclose(result.cpu().numpy(), oracle(kernel, inputs), rtol=1e-10, atol=1e-10)


@pytest.mark.cuda
@cuda
def test_auto_backend_on_cuda_tensors_returns_cuda(no_host_copies):
    rng = np.random.default_rng(1)
    kernel = compile_catalog("ssymm")  # backend "auto": Triton for CUDA tensors
    inputs = inputs_for("ssymm", "classes", rng)
    result = kernel(**as_torch(inputs, "cuda"))
    assert result.device.type == "cuda"
    np.testing.assert_allclose(result.cpu().numpy(), oracle(kernel, inputs), rtol=1e-10, atol=1e-10)


@pytest.mark.cuda
@cuda
def test_cupy_in_cupy_out_on_the_device(no_host_copies):
    cupy = pytest.importorskip("cupy")
    rng = np.random.default_rng(2)
    kernel = compile_catalog("ssymm")
    inputs = inputs_for("ssymm", "classes", rng)
    x = cupy.asarray(inputs["X"])
    result = kernel(A=inputs["A"], X=x)
    assert isinstance(result, cupy.ndarray)
    assert torch.from_dlpack(result).data_ptr() == kernel._last.partial.data_ptr()
    assert _same_storage(kernel._last.dense["X"], torch.from_dlpack(x))  # DLPack: no copy
    np.testing.assert_allclose(cupy.asnumpy(result), oracle(kernel, inputs), rtol=1e-10, atol=1e-10)
