"""Autograd through kernel ops: derivative expressions compiled by this compiler, gradcheck."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import systec_gpu as sg
from systec_gpu import torch_ops
from systec_gpu.autodiff import derivative_terms
from systec_gpu.catalog import CATALOG, compile_catalog

from .test_torch_ops import N, flat_inputs, sym_sparse

SUM_KERNELS = [name for name, entry in CATALOG.items() if entry.expression.split("]", 1)[1].strip().startswith("+=")]


def gradcheck_op(op, args) -> bool:
    """gradcheck of `op` with respect to every argument that requires grad (others held fixed)."""
    positions = [i for i, a in enumerate(args) if isinstance(a, torch.Tensor) and a.requires_grad]

    def f(*diff):
        full = list(args)
        for i, t in zip(positions, diff, strict=True):
            full[i] = t
        return op.op(*full)

    return torch.autograd.gradcheck(f, [args[i] for i in positions])


@pytest.mark.parametrize("name", SUM_KERNELS)
def test_gradcheck_catalog(name):
    k = compile_catalog(name)
    op = torch_ops.kernel_op(k)
    ndim = max(o.ndim for o in op.operands)
    args = flat_inputs(op, n=3 if ndim > 3 else 4, grad=True)
    assert any(isinstance(a, torch.Tensor) and a.requires_grad for a in args), (
        "every += catalog kernel has a differentiable input"
    )
    assert gradcheck_op(op, args)


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
    c = k(A=a)
    w = torch.randn(4, 4, dtype=torch.float64)
    (c * w).sum().backward()
    torch.testing.assert_close(a.grad, (w + w.T) @ a.detach())


def test_values_gradient_of_3d_symmetric_tensor_sums_distinct_permutations():
    k = compile_catalog("mttkrp3")
    a = sym_sparse(3, 3)
    vals = torch.as_tensor(a.values).clone().requires_grad_()
    b = torch.randn(3, 2, dtype=torch.float64)
    out = k(A=a.with_values(vals), B=b)
    w = torch.randn(3, 2, dtype=torch.float64)
    (out * w).sum().backward()
    # reference: the same loss through the dense expansion, differentiated by torch
    dense_vals = torch.as_tensor(a.values).clone().requires_grad_()
    dense = torch.zeros(3, 3, 3, dtype=torch.float64)
    for perm in set(itertools.permutations(range(3))):
        dense = dense.index_put(tuple(torch.as_tensor(a.indices)[list(perm)]), dense_vals)
    ref = torch.einsum("ikl,lj,kj->ij", dense, b, b)
    (ref * w).sum().backward()
    torch.testing.assert_close(out.detach(), ref.detach())
    torch.testing.assert_close(vals.grad, dense_vals.grad)


class _LargestTensor(TorchDispatchMode):
    """Records the largest tensor any op creates while active (autograd's backward ops included)."""

    def __init__(self):
        super().__init__()
        self.numel = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in torch.utils._pytree.tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self.numel = max(self.numel, t.numel())
        return out


def _mttkrp3_values_reference(a: sg.SymmetricTensor, b: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """dL/dv_p for L = sum(w * C), C[i,j] = sum A[i,k,l] B[l,j] B[k,j]: per entry, per distinct permutation."""
    out = []
    for coord in a.indices.T.tolist():
        out.append(sum((w[i] * b[k] * b[l]).sum() for i, k, l in set(itertools.permutations(coord))))
    return torch.stack(out)


def test_values_gradient_is_sampled_at_stored_coordinates_only():
    # n = 2000: the dense gradient would have 8e9 entries; 50 stored entries, some on diagonals
    n, rank = 2000, 3
    g = torch.Generator().manual_seed(3)
    coords = torch.randint(0, n, (3, 47), generator=g)
    diag = torch.tensor([[5, 5, 9], [7, 7, 7], [1, 4, 4]]).T  # (a,a,b), (a,a,a), (a,b,b)
    idx = torch.cat([coords, diag], dim=1).sort(dim=0).values.unique(dim=1)
    vals = torch.randn(idx.shape[1], dtype=torch.float64, generator=g)
    a = sg.SymmetricTensor.from_canonical(idx.numpy(), vals.numpy(), (n, n, n), "full")
    k = compile_catalog("mttkrp3")
    b = torch.randn(n, rank, dtype=torch.float64, generator=g)
    w = torch.randn(n, rank, dtype=torch.float64, generator=g)
    v = torch.as_tensor(a.values).clone().requires_grad_()
    out = k(A=a.with_values(v), B=b)
    largest = _LargestTensor()
    with largest:
        (out * w).sum().backward()
    assert largest.numel <= n * rank, largest.numel  # the size of C and B: nothing like n^3
    torch.testing.assert_close(v.grad, _mttkrp3_values_reference(a, b, w))


def test_sampled_values_gradient_traces_under_torch_compile():
    k = compile_catalog("mttkrp3")
    op = torch_ops.kernel_op(k)
    a = sym_sparse(3, 5, seed=2)
    idx = torch.as_tensor(a.indices)
    b = torch.randn(5, 2, dtype=torch.float64)
    w = torch.randn(5, 2, dtype=torch.float64)

    def loss(v):
        return (op.op(idx, v, [5, 5, 5], b) * w).sum()

    eager = torch.as_tensor(a.values).clone().requires_grad_()
    loss(eager).backward()
    compiled = torch.as_tensor(a.values).clone().requires_grad_()
    torch.compile(loss, fullgraph=True, backend="aot_eager")(compiled).backward()
    torch.testing.assert_close(compiled.grad, eager.grad)
    torch.testing.assert_close(eager.grad, _mttkrp3_values_reference(a, b, w))


@pytest.mark.parametrize(("expression", "symmetric"), [
    # partial symmetry: the distinct permutations of (i,k,l) swap k and l only
    ("C[i,j] += A[i,k,l]*B[l,j]*B[k,j]", {"A": [[1, 2]]}),
    # a term reading the sparse A again is computed densely by its kernel, then gathered at A's points
    ("C[i,j] += A[i,k]*A[k,j]", {"A": "full"}),
])
def test_values_gradcheck_partial_symmetry_and_sparse_cofactor(expression, symmetric):
    k = sg.compile(expression, symmetric=symmetric)
    op = torch_ops.kernel_op(k)
    (a_op,) = [o for o in op.operands if o.sparse]
    g = torch.Generator().manual_seed(6)
    t = torch.randn((N,) * a_op.ndim, dtype=torch.float64, generator=g)
    t[t.abs() < 0.5] = 0
    a = sg.SparseTensor.from_dense(t).symmetrize("sum", a_op.groups)
    assert a.n_expanded > a.nnz  # some entries stand for several permutations
    flat: list = []
    for o in op.operands:
        if o.sparse:
            flat += [torch.as_tensor(a.indices), torch.as_tensor(a.values).requires_grad_(), list(a.shape)]
        else:
            flat.append(torch.randn((N,) * o.ndim, dtype=torch.float64, generator=g).requires_grad_())
    assert gradcheck_op(op, flat)


def _graph(n: int, seed: int) -> sg.SymmetricTensor:
    """A symmetric sparse matrix with continuous values (no ties) and no empty row."""
    g = torch.Generator().manual_seed(seed)
    t = torch.rand(n, n, dtype=torch.float64, generator=g) * 4 - 1
    t = torch.where(torch.rand(n, n, generator=g) < 0.4, t, 0)
    t = torch.triu(t) + torch.triu(t, 1).T
    t += torch.diag(torch.where(t.abs().sum(1) == 0, 1.0, 0.0))  # keep every row non-empty
    return sg.SymmetricTensor.from_dense(t, check=True)


def _minmax_reference(a: sg.SymmetricTensor, x: torch.Tensor, lowest: bool, w: torch.Tensor):
    """Brute force: the dense matrix with -/+inf where A stores nothing, torch.min/max, autograd."""
    v = torch.as_tensor(a.values).clone().requires_grad_()
    x = x.detach().clone().requires_grad_()
    idx = torch.as_tensor(a.indices)
    n = a.shape[0]
    fill = float("inf") if lowest else float("-inf")
    dense = torch.full((n, n), fill, dtype=torch.float64).index_put((idx[0], idx[1]), v)
    dense = dense.index_put((idx[1], idx[0]), v)
    cand = dense + x[None, :]
    y = cand.min(dim=1).values if lowest else cand.max(dim=1).values
    (y * w).sum().backward()
    return y.detach(), v.grad, x.grad


@pytest.mark.parametrize("reduce", ["min=", "max="])
def test_minmax_gradient_matches_dense_reference(reduce):
    k = compile_catalog("bellman") if reduce == "min=" else sg.compile(
        "y[i] max= A[i,j] + x[j]", symmetric={"A": "full"})
    n = 9
    a = _graph(n, seed=4)
    x = torch.randn(n, dtype=torch.float64, requires_grad=True)
    w = torch.randn(n, dtype=torch.float64)
    v = torch.as_tensor(a.values).clone().requires_grad_()
    y = k(A=a.with_values(v), x=x)
    (y * w).sum().backward()
    ref_y, ref_v, ref_x = _minmax_reference(a, x, reduce == "min=", w)
    torch.testing.assert_close(y.detach(), ref_y)
    torch.testing.assert_close(v.grad, ref_v)
    torch.testing.assert_close(x.grad, ref_x)


def test_bellman_gradcheck_without_ties():
    k = compile_catalog("bellman")
    op = torch_ops.kernel_op(k)
    a = _graph(6, seed=5)
    idx = torch.as_tensor(a.indices)
    v = torch.as_tensor(a.values).clone().requires_grad_()
    x = torch.randn(6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v, x: op.op(idx, v, [6, 6], x), [v, x])


def test_bellman_ties_go_to_the_first_canonical_point_and_empty_rows_get_nothing():
    k = compile_catalog("bellman")
    # y[0] = min(A[0,1] + x[1], A[0,2] + x[2]) ties; row 3 stores nothing (y[3] = inf)
    a = sg.SymmetricTensor(np.array([[0, 0], [1, 2]]), np.array([1.0, 1.0]), (4, 4), "full")
    v = torch.as_tensor(a.values).clone().requires_grad_()
    x = torch.zeros(4, dtype=torch.float64, requires_grad=True)
    y = k(A=a.with_values(v), x=x)
    torch.testing.assert_close(y.detach(), torch.tensor([1.0, 1.0, 1.0, float("inf")], dtype=torch.float64))
    y[:3].sum().backward()
    # y[0] -> entry (0,1) (first in canonical order) and x[1]; y[1] -> (0,1), x[0]; y[2] -> (0,2), x[0]
    torch.testing.assert_close(v.grad, torch.tensor([2.0, 1.0], dtype=torch.float64))
    torch.testing.assert_close(x.grad, torch.tensor([2.0, 1.0, 0.0, 0.0], dtype=torch.float64))


@pytest.mark.parametrize(("expression", "message"), [
    # (A[i,j] * x[j] with a sparse A is refused when compiled: (min, *) is no semiring over real values)
    ("y[i] min= A[i,j] + x[j] * x[j]", "sum \\(`\\+`\\) of tensor accesses.*'mul'"),
    ("Y[i,k] min= A[i,j] + X[j,k]", "X\\[j,k\\] uses index k, which the sparse driver A\\[i,j\\] lacks"),
])
def test_unsupported_minmax_backward_names_what(expression, message):
    k = sg.compile(expression, symmetric={"A": "full"})
    a = sym_sparse(2)
    v = torch.as_tensor(a.values).clone().requires_grad_()
    dense = {o.name: torch.randn((N,) * o.ndim, dtype=torch.float64)
             for o in torch_ops.kernel_op(k).operands if not o.sparse}
    y = k(A=a.with_values(v), **dense)
    with pytest.raises(NotImplementedError, match=message):
        y[torch.isfinite(y)].sum().backward()


def test_non_product_rhs_is_not_differentiable():
    k = sg.compile("y[i] += A[i,j] + x[j]")
    with pytest.raises(NotImplementedError, match="product of tensors and constants; got a 'add' node"):
        derivative_terms(k.program, "x")
