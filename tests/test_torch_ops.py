"""Kernels as torch custom ops: schema, fake shapes (opcheck), torch.compile, errors."""

from __future__ import annotations

import pytest
import torch

import systec_gpu as sg
from systec_gpu import torch_ops
from systec_gpu.catalog import CATALOG, compile_catalog

N = 4


def sym_sparse(ndim: int, n: int = N, dtype=torch.float64, seed: int = 0) -> sg.SymmetricTensor:
    """A random symmetric sparse tensor: only the canonical entries of a random array matter."""
    g = torch.Generator().manual_seed(seed)
    t = torch.randn((n,) * ndim, dtype=dtype, generator=g)
    t[t.abs() < 0.5] = 0
    return sg.SymmetricTensor.from_dense(t, check=False)


def flat_inputs(op: torch_ops.KernelOp, n: int = N, dtype=torch.float64, grad: bool = False) -> list:
    g = torch.Generator().manual_seed(1)
    flat: list = []
    for o in op.operands:
        if o.sparse:
            a = sym_sparse(o.ndim, n, dtype)
            flat += [torch.as_tensor(a.indices), torch.as_tensor(a.values).requires_grad_(grad), list(a.shape)]
        else:
            flat.append(torch.randn((n,) * o.ndim, dtype=dtype, generator=g).requires_grad_(grad))
    return flat


@pytest.mark.parametrize("name", list(CATALOG))
def test_opcheck_catalog(name):
    k = compile_catalog(name)
    op = torch_ops.kernel_op(k)
    assert op.op is getattr(torch.ops.systec, k.name).default
    # 4-D/5-D operands at n=4 make opcheck's repeated runs slow; n=3 still has all diagonal classes
    args = flat_inputs(op, n=3 if max(o.ndim for o in op.operands) > 3 else N, grad=True)  # min=/max= included
    result = torch.library.opcheck(op.op, args)
    assert set(result.values()) == {"SUCCESS"}, result


@pytest.mark.parametrize("name", ["ssymv", "ssymm", "ssyrk", "mttkrp3", "bellman"])
def test_op_matches_kernel_call(name):
    k = compile_catalog(name)
    op = torch_ops.kernel_op(k)
    tensors = {}
    for o in op.operands:
        if o.sparse:
            tensors[o.name] = sym_sparse(o.ndim)
        else:
            tensors[o.name] = torch.randn((N,) * o.ndim, dtype=torch.float64)
    expected = k(**tensors)
    got = torch_ops.apply(k, tensors)
    assert got.dtype == torch.float64 and got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_scalar_output_shape():
    k = compile_catalog("syprd")
    a = sym_sparse(2)
    x = torch.randn(N, dtype=torch.float64)
    y = k(A=a, x=x)
    assert y.shape == ()
    dense = torch.as_tensor(a.to_dense())
    torch.testing.assert_close(y, x @ dense @ x)


def test_dense_input_for_sparse_operand_gets_gradient_at_canonical_entries():
    k = compile_catalog("ssymv")
    m = torch.randn(N, N, dtype=torch.float64)
    m = (m + m.T).requires_grad_()
    x = torch.randn(N, dtype=torch.float64)
    y = k(A=m, x=x)
    torch.testing.assert_close(y, m.detach() @ x)
    y.sum().backward()
    # the kernel reads the upper triangle only (i <= j): d y.sum() / d m[i,j] = x[i] + x[j] there
    expected = torch.triu(x[:, None] + x[None, :])
    expected.diagonal().copy_(x)
    torch.testing.assert_close(m.grad, expected)


def _ssymv_setup(n: int = N):
    k = compile_catalog("ssymv")
    a = sym_sparse(2, n)
    return k, torch.as_tensor(a.indices), torch.as_tensor(a.values), a


@pytest.mark.parametrize("dynamic", [False, True])
def test_torch_compile_fullgraph(dynamic):
    from torch._dynamo.testing import CompileCounterWithBackend

    k = compile_catalog("ssymv")
    op = getattr(torch.ops.systec, torch_ops.kernel_op(k).name)

    def f(i, v, x):
        n = x.shape[0]
        return torch.relu(op(i, v, [n, n], x)) * 2

    counter = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(f, fullgraph=True, dynamic=dynamic, backend=counter)
    for n in (4, 6, 7):
        _, idx, vals, _ = _ssymv_setup(n)
        x = torch.randn(n, dtype=torch.float64)
        torch.testing.assert_close(compiled(idx, vals, x), f(idx, vals, x), rtol=0, atol=0)
    # one graph with the op in it; with dynamic shapes new sizes reuse it
    assert counter.frame_count == (1 if dynamic else 3)
    assert counter.op_count >= 1


def test_torch_compile_inductor_training_step():
    # the README snippet: a compiled step with gradients through a symmetric kernel
    k = sg.compile("y[i] += A[i,j]*x[j]", symmetric={"A": "full"})
    op = torch_ops.kernel_op(k)
    a = sym_sparse(2)
    idx = torch.as_tensor(a.indices)
    vals = torch.as_tensor(a.values).clone().requires_grad_()
    x = torch.randn(N, dtype=torch.float64, requires_grad=True)
    target = torch.randn(N, dtype=torch.float64)

    @torch.compile(fullgraph=True)
    def loss_fn(v, x):
        y = op.op(idx, v, [N, N], x)
        return ((y - target) ** 2).sum()

    # AOTAutograd compiles the backward too; it calls the derivative kernels' ops
    loss = loss_fn(vals, x)
    loss.backward()
    dense = torch.as_tensor(a.to_dense())
    torch.testing.assert_close(loss, ((dense @ x.detach() - target) ** 2).sum())
    r = 2 * (dense @ x.detach() - target)
    torch.testing.assert_close(x.grad, dense @ r)
    # each canonical value stands for its distinct permutations: off-diagonal ones twice
    ia, ja = idx
    grad_dense = torch.outer(r, x.detach())
    expected = torch.where(ia == ja, grad_dense[ia, ja], grad_dense[ia, ja] + grad_dense[ja, ia])
    torch.testing.assert_close(vals.grad, expected)


# ------------------------------------------------------------------------------------------- errors
def test_dtype_mismatch():
    k, idx, vals, _ = _ssymv_setup()
    op = torch_ops.kernel_op(k).op
    with pytest.raises(RuntimeError, match="same dtype.*A_values is torch.float64 and x is torch.float32"):
        op(idx, vals, [N, N], torch.randn(N, dtype=torch.float32))
    with pytest.raises(TypeError, match="floating point tensor for x"):
        op(idx, vals, [N, N], torch.ones(N, dtype=torch.int64))
    with pytest.raises(TypeError, match="A_indices must be int64"):
        op(idx.int(), vals, [N, N], torch.randn(N, dtype=torch.float64))


def test_device_mismatch():
    k, idx, vals, _ = _ssymv_setup()
    op = torch_ops.kernel_op(k).op
    with pytest.raises(RuntimeError, match="same device.*cpu \\(A_values\\) and meta \\(x\\)"):
        op(idx, vals, [N, N], torch.randn(N, dtype=torch.float64, device="meta"))


def test_size_conflict_names_index_and_operands():
    k, idx, vals, a = _ssymv_setup()
    op = torch_ops.kernel_op(k).op
    with pytest.raises(ValueError, match=r"size mismatch for index j: A has size 4 at mode 1 but x has size 5"):
        op(idx, vals, [N, N], torch.randn(N + 1, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"size mismatch for index j"):
        k(A=a, x=torch.randn(N + 1, dtype=torch.float64))
    with pytest.raises(TypeError, match="missing tensor"):
        k(A=a)


def test_kernel_op_is_cached_and_names_are_checked():
    k = compile_catalog("ssymv")
    assert torch_ops.kernel_op(k) is torch_ops.kernel_op(compile_catalog("ssymv"))
    with pytest.raises(ValueError, match="already registered for a different expression"):
        sg.compile("y[i] += A[i,j]*x[j]", name=k.name)  # same name, no symmetry declared: refused at once


def test_numpy_calls_skip_the_op_and_agree_under_transforms(monkeypatch):
    """A call on numpy arrays and numpy-held storage only goes straight to the launch (no
    autograd graph or torch.func transform can hold its inputs): inside torch.func transforms
    and with grad mode on it gives the op's values, as a constant of the transformed function."""
    import numpy as np

    k = compile_catalog("ssymv")
    a = sg.SymmetricTensor.from_dense(sym_sparse(2, 6).to_dense().numpy(), check=False)  # numpy-held
    x = np.random.default_rng(3).uniform(-1, 1, 6)
    expected = torch.as_tensor(a.to_dense() @ x)
    calls = []
    monkeypatch.setattr(torch_ops, "apply", lambda *args, **kw: calls.append(args) or expected)
    assert not torch_ops.needs_op({"A": a, "x": x})
    torch.testing.assert_close(k(A=a, x=x), expected)
    batched = torch.func.vmap(lambda s: s * k(A=a, x=x))(torch.arange(3.0, dtype=torch.float64))
    torch.testing.assert_close(batched, torch.arange(3.0, dtype=torch.float64)[:, None] * expected)
    grad = torch.func.grad(lambda s: (s * k(A=a, x=x)).sum())(torch.tensor(2.0, dtype=torch.float64))
    torch.testing.assert_close(grad, expected.sum())
    assert not calls
    # torch operands ask the transforms and autograd as before
    held_by_torch = sym_sparse(2, 6)
    torch.func.vmap(lambda s: s * k(A=held_by_torch, x=x))(torch.ones(2, dtype=torch.float64))
    assert len(calls) == 1
    xt = torch.from_numpy(x).requires_grad_()
    assert torch_ops.needs_op({"A": a, "x": xt})
    with torch.no_grad():
        assert not torch_ops.needs_op({"A": a, "x": xt})
