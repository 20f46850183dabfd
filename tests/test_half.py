"""Half-precision operands: float16/bfloat16 in, float32 (or `accumulate=`) accumulation out,
checked against a float64 reference of the same (exactly representable) values."""

import os

os.environ["TRITON_INTERPRET"] = "1"

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import systec_gpu as sg  # noqa: E402

from .symdata import symmetric_sparse  # noqa: E402


def inputs(dtype, order=2):
    rng = np.random.default_rng(0)
    a = symmetric_sparse(order, 6, rng)
    values = torch.as_tensor(np.asarray(a.values)).to(dtype)
    other = torch.from_numpy(rng.uniform(-1, 1, (6,) if order == 2 else (6, 3))).to(dtype)
    return a.with_values(values), other


def reference(a, x, expression):
    dense = torch.as_tensor(a.with_values(a.values.double()).to_dense())
    x = x.double()
    return dense @ x if expression == "ssymv" else torch.einsum("ikl,lj,kj->ij", dense, x, x)


@pytest.mark.parametrize("backend", ["triton", "numba"])
@pytest.mark.parametrize("name", ["ssymv", "mttkrp3"])
def test_float16_operands_accumulate_in_float32(backend, name):
    from systec_gpu.catalog import compile_catalog

    kernel = compile_catalog(name, backend=backend)
    a, other = inputs(torch.float16, 2 if name == "ssymv" else 3)
    tensors = {"A": a, ("x" if name == "ssymv" else "B"): other}
    result = kernel(**tensors)
    assert result.dtype == torch.float32
    # float16 values are exact in float32; only the float32 sums round (a few ulps of the sum)
    torch.testing.assert_close(result.double(), reference(a, other, name), rtol=1e-5, atol=1e-5)
    if backend == "triton":  # read as float16 by the kernel (half the bytes), widened at the load
        assert kernel._last.dense[next(n for n in tensors if n != "A")].dtype == torch.float16


@pytest.mark.parametrize("backend", ["triton", "numba"])
def test_accumulate_float64(backend):
    kernel = sg.compile("y[i] += A[i,j]*x[j]", symmetric={"A": "full"}, backend=backend, accumulate="float64")
    a, x = inputs(torch.float16)
    result = kernel(A=a, x=x)
    assert result.dtype == torch.float64
    torch.testing.assert_close(result, reference(a, x, "ssymv"), rtol=1e-12, atol=1e-12)


def test_bfloat16_on_the_cpu():
    """bfloat16 through Numba (widened on the host); the Triton interpreter computes bfloat16
    wrongly, so the Triton bfloat16 path is left to a GPU run (perf/gpu_check.py)."""
    kernel = sg.compile("y[i] += A[i,j]*x[j]", symmetric={"A": "full"}, backend="numba")
    a, x = inputs(torch.bfloat16)
    result = kernel(A=a, x=x)
    assert result.dtype == torch.float32
    torch.testing.assert_close(result.double(), reference(a, x, "ssymv"), rtol=1e-5, atol=1e-5)


def test_accumulate_is_checked():
    with pytest.raises(ValueError, match="accumulate must be 'float32' or 'float64', got 'float16'"):
        sg.compile("y[i] += A[i,j]*x[j]", accumulate="float16")
