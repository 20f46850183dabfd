"""Autograd through kernel ops: derivative expressions compiled by this compiler, gradcheck."""

from __future__ import annotations

import itertools

import pytest
import torch

import systec_gpu as sg
from systec_gpu import torch_ops
from systec_gpu.autodiff import derivative_terms
from systec_gpu.catalog import CATALOG, compile_catalog

from .test_torch_ops import flat_inputs, sym_sparse

SUM_KERNELS = [name for name, entry in CATALOG.items() if entry.expression.split("]", 1)[1].strip().startswith("+=")]


@pytest.mark.parametrize("name", SUM_KERNELS)
def test_gradcheck_catalog(name):
    k = compile_catalog(name)
    op = torch_ops.kernel_op(k)
    ndim = max(o.ndim for o in op.operands)
    args = flat_inputs(op, n=3 if ndim > 3 else 4, grad=True)
    positions = [i for i, a in enumerate(args) if isinstance(a, torch.Tensor) and a.requires_grad]
    assert positions, "every += catalog kernel has a differentiable input"

    def f(*diff):
        full = list(args)
        for i, t in zip(positions, diff, strict=True):
            full[i] = t
        return op.op(*full)

    assert torch.autograd.gradcheck(f, [args[i] for i in positions])


def test_symmetric_derivative_keeps_symmetry_and_merges_occurrences():
    k = compile_catalog("mttkrp4")
    (term,) = derivative_terms(k.program, "B")
    # the three B occurrences give one derivative kernel, weighted 3, still symmetric in A
    assert term.weight == 3.0
    assert term.symmetric == {"A": ((0, 1, 2, 3),)}
    deriv = torch_ops.kernel_op(k).terms("B")[0][1].kernel
    assert deriv.symmetrized.exploit and deriv.symmetrized.sets


def test_ssyrk_gradient_sums_both_occurrences():
    k = compile_catalog("ssyrk")
    a = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    c = torch_ops.apply(k, A=a)
    w = torch.randn(4, 4, dtype=torch.float64)
    (c * w).sum().backward()
    torch.testing.assert_close(a.grad, (w + w.T) @ a.detach())


def test_values_gradient_of_3d_symmetric_tensor_sums_distinct_permutations():
    k = compile_catalog("mttkrp3")
    a = sym_sparse(3, 3)
    vals = torch.from_numpy(a.values).clone().requires_grad_()
    b = torch.randn(3, 2, dtype=torch.float64)
    out = torch_ops.apply(k, A=a.with_values(vals), B=b)
    w = torch.randn(3, 2, dtype=torch.float64)
    (out * w).sum().backward()
    # reference: the same loss through the dense expansion, differentiated by torch
    dense_vals = torch.from_numpy(a.values).clone().requires_grad_()
    dense = torch.zeros(3, 3, 3, dtype=torch.float64)
    for perm in set(itertools.permutations(range(3))):
        dense = dense.index_put(tuple(torch.from_numpy(a.indices)[list(perm)]), dense_vals)
    ref = torch.einsum("ikl,lj,kj->ij", dense, b, b)
    (ref * w).sum().backward()
    torch.testing.assert_close(out.detach(), ref.detach())
    torch.testing.assert_close(vals.grad, dense_vals.grad)


def test_min_reduction_backward_is_not_implemented():
    k = compile_catalog("bellman")
    a = sym_sparse(2)
    vals = torch.from_numpy(a.values).clone().requires_grad_()
    y = torch_ops.apply(k, A=a.with_values(vals), x=torch.zeros(4, dtype=torch.float64))
    with pytest.raises(NotImplementedError, match="min=.*argmin"):
        y.sum().backward()


def test_non_product_rhs_is_not_differentiable():
    k = sg.compile("y[i] += A[i,j] + x[j]")
    with pytest.raises(NotImplementedError, match="product of tensors and constants; got a 'add' node"):
        derivative_terms(k.program, "x")
