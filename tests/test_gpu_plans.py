"""The GPU (Triton) backend's plans (backends/plans.py): SSYMM-like programs run the expanded
kernel, dense SYRK goes to cuBLAS for full-precision float32 CUDA operands and to the generated
kernel otherwise. Under the CPU interpreter the cuBLAS branch cannot run (CPU tensors): its test
needs CUDA. The symmetric kernels the plans pass over stay checked here against the oracle: they
are what `source("triton")` shows and what perf/gpu_check.py times.
"""

import os

os.environ["TRITON_INTERPRET"] = "1"

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import systec_gpu as sg  # noqa: E402
from systec_gpu.backends import plans  # noqa: E402
from systec_gpu.backends.triton_launch import run_triton  # noqa: E402
from systec_gpu.catalog import compile_catalog  # noqa: E402
from systec_gpu.runtime import bind, finish  # noqa: E402

from .test_triton_backend import inputs_for, oracle  # noqa: E402


def matmul_calls(monkeypatch) -> list:
    """The torch matmuls made from now on (the cuBLAS plan's GEMM is one)."""
    calls, original = [], torch.Tensor.__matmul__

    def spy(self, other):
        calls.append((self.shape, other.shape))
        return original(self, other)

    monkeypatch.setattr(torch.Tensor, "__matmul__", spy)
    return calls


def test_ssymm_on_the_gpu_runs_the_expanded_kernel_and_says_why():
    kernel = compile_catalog("ssymm", backend="triton")
    plan = plans.choose_plan(kernel.program, kernel.loops, "triton")
    assert plan.name == "expanded" and plan.loops.body != kernel.loops.body
    text = kernel.explain()
    assert "gpu plan: expanded" in text and "atomic adds of R lanes" in text and "cpu plan: expanded" in text
    rng = np.random.default_rng(5)
    inputs = inputs_for("ssymm", "classes", rng)
    expected = oracle(kernel, inputs)
    np.testing.assert_allclose(kernel(**inputs).numpy(), expected, rtol=1e-10, atol=1e-10)
    assert kernel._last.driver.n_expanded > 0 and kernel._last.driver.nnz == kernel._last.driver.n_expanded
    # the symmetric kernel the plan passes over, run directly: still right
    args = bind(kernel.loops, kernel.program, inputs)
    run_triton(kernel.loops, args)
    np.testing.assert_allclose(finish(args, kernel.loops, kernel.program).numpy(), expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", ["ssymv", "syprd", "bellman", "ttm", "mttkrp3", "mttkrp4"])
def test_symmetry_that_cuts_work_keeps_the_generated_kernel_on_the_gpu(name):
    kernel = compile_catalog(name, backend="triton")
    assert plans.choose_plan(kernel.program, kernel.loops, "triton").name == "generated"


def test_reference_backend_always_runs_the_symmetrized_loops():
    for name in ("ssymm", "ssyrk"):
        kernel = compile_catalog(name, backend="reference")
        plan = plans.choose_plan(kernel.program, kernel.loops, "reference")
        assert plan.name == "generated" and plan.loops == kernel.loops


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("expr, transposed", [("C[i,j] += A[i,k]*A[j,k]", False), ("C[i,j] += A[k,i]*A[k,j]", True)])
def test_dense_syrk_plan_on_cpu_tensors_runs_the_generated_kernel(expr, transposed, dtype, monkeypatch):
    calls = matmul_calls(monkeypatch)
    kernel = sg.compile(expr, backend="triton")
    assert plans.choose_plan(kernel.program, kernel.loops, "triton").name == "cublas_syrk"
    assert "gpu plan: cublas_syrk" in kernel.explain()
    a = np.random.default_rng(6).uniform(-1, 1, (9, 5)).astype(dtype)
    expected = a.T @ a if transposed else a @ a.T
    result = kernel(A=torch.from_numpy(a))
    assert calls == []  # no torch matmul: the generated triangle kernel ran
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(result.numpy(), expected, rtol=tol, atol=tol)
    np.testing.assert_allclose(kernel(A=a, canonical_output=True).numpy(), np.triu(expected), rtol=tol, atol=tol)


@pytest.mark.parametrize("layout", ["contiguous", "transposed"])
@pytest.mark.parametrize("expr, transposed", [("C[i,j] += A[i,k]*A[j,k]", False), ("C[i,j] += A[k,i]*A[k,j]", True)])
def test_cublas_syrk_branch_computes_the_product_on_any_binding(expr, transposed, layout, monkeypatch):
    # the branch cuBLAS takes, run on CPU tensors (torch's CPU matmul stands in for cuBLAS): the
    # product's sides follow the operand's bound layout, both halves are written, canonical clears
    monkeypatch.setattr(plans, "cublas_applies", lambda a, dtype: True)
    calls = matmul_calls(monkeypatch)
    kernel = sg.compile(expr, backend="triton")
    a = np.random.default_rng(7).uniform(-1, 1, (11, 6))
    given = torch.from_numpy(a) if layout == "contiguous" else torch.from_numpy(np.asfortranarray(a))
    expected = a.T @ a if transposed else a @ a.T
    np.testing.assert_allclose(kernel(A=given).numpy(), expected, rtol=1e-12, atol=1e-12)
    assert len(calls) == 1 and kernel._last.output_mirrored
    canonical = kernel(A=given, canonical_output=True).numpy()
    np.testing.assert_allclose(canonical, np.triu(expected), rtol=1e-12, atol=1e-12)
    out = torch.empty(expected.shape, dtype=torch.float64)
    assert kernel(A=given, out=out) is out
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("transposed", [False, True])
def test_dense_syrk_float32_on_cuda_goes_to_cublas_at_full_precision(transposed, monkeypatch):
    expr = "C[i,j] += A[k,i]*A[k,j]" if transposed else "C[i,j] += A[i,k]*A[j,k]"
    kernel = sg.compile(expr, backend="triton")
    a = torch.rand(300, 70, device="cuda", dtype=torch.float32) - 0.5
    expected = (a.T.double() @ a.double()) if transposed else (a.double() @ a.T.double())
    calls = matmul_calls(monkeypatch)
    result = kernel(A=a)
    assert len(calls) == 1  # cuBLAS through torch
    torch.testing.assert_close(result.double(), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(kernel(A=a, canonical_output=True).double(), torch.triu(expected), rtol=1e-5, atol=1e-5)
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high")  # TF32 allowed: the generated (exact fp32) kernel runs
    try:
        result = kernel(A=a)
        assert len(calls) == 2  # (the canonical_output call above) and none for this one
        torch.testing.assert_close(result.double(), expected, rtol=1e-5, atol=1e-5)
    finally:
        torch.set_float32_matmul_precision(previous)
