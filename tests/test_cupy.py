"""CuPy arrays in -> CuPy arrays out through the kernel op (DLPack, no copies). Needs CUDA + CuPy."""

from __future__ import annotations

import pytest
import torch

from systec_gpu import torch_ops
from systec_gpu.catalog import compile_catalog

from .test_torch_ops import sym_sparse

cupy = pytest.importorskip("cupy")

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def test_cupy_in_cupy_out_without_copies():
    k = compile_catalog("ssymv")
    a = sym_sparse(2, 8, dtype=torch.float32)
    x = cupy.random.standard_normal(8, dtype=cupy.float32)
    y = k(A=a.with_values(cupy.asarray(a.values)), x=x)
    assert isinstance(y, cupy.ndarray) and y.dtype == cupy.float32
    # the input crosses by DLPack: torch sees the same device buffer
    assert torch.from_dlpack(x).data_ptr() == x.data.ptr
    expected = torch.from_numpy(a.to_dense()) @ torch.from_numpy(cupy.asnumpy(x))
    torch.testing.assert_close(torch.from_numpy(cupy.asnumpy(y)), expected)


def test_cuda_tensors_run_the_triton_backend():
    k = compile_catalog("ssymv")
    op = torch_ops.kernel_op(k)
    a = sym_sparse(2, 8, dtype=torch.float32)
    idx = torch.from_numpy(a.indices).cuda()
    vals = torch.from_numpy(a.values).cuda()
    x = torch.randn(8, device="cuda")
    y = op.op(idx, vals, [8, 8], x)
    assert y.device.type == "cuda"
    torch.testing.assert_close(y.cpu(), torch.from_numpy(a.to_dense()) @ x.cpu())
    assert torch.library.opcheck(op.op, [idx, vals, [8, 8], x])["test_faketensor"] == "SUCCESS"
