"""The natural call `k(A=A, B=B)` of a PyTorch user: gradients, torch.compile, opcheck (issue 12).

Every check goes through `k(...)` itself, never through `kernel.op` by hand.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

import systec_gpu as sg
from systec_gpu.catalog import CATALOG, compile_catalog

ORDER = {"ssymv": 2, "syprd": 2, "ssymm": 2, "bellman": 2, "ttm": 3, "mttkrp3": 3, "mttkrp4": 4, "mttkrp5": 5}


def symmetric_from_torch(order: int, n: int, seed: int) -> sg.SymmetricTensor:
    """A SymmetricTensor built from torch tensors: every permutation of random canonical entries,
    distinct values (no ties for min=/max=)."""
    g = torch.Generator().manual_seed(seed)
    points = torch.randint(0, n, (order, 3 * n), generator=g).sort(dim=0).values.unique(dim=1)
    values = torch.rand(points.shape[1], generator=g, dtype=torch.float64) + 0.5
    perms = list(itertools.permutations(range(order)))
    idx = torch.cat([points[list(p)] for p in perms], dim=1)
    vals = values.repeat(len(perms))
    coords, first = np.unique(idx.numpy(), axis=1, return_index=True)
    return sg.SymmetricTensor.from_coo(torch.from_numpy(coords), vals[torch.from_numpy(first)], (n,) * order)


def dense_inputs(name: str, n: int, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    if name == "ssyrk":
        return {"A": torch.randn(n, 3, dtype=torch.float64, generator=g)}
    if name in ("ssymv", "syprd", "bellman"):
        return {"x": torch.randn(n, dtype=torch.float64, generator=g)}
    return {("X" if name == "ssymm" else "B"): torch.randn(n, 2, dtype=torch.float64, generator=g)}


def size_of(name: str) -> int:
    return 3 if ORDER.get(name, 2) >= 4 else 4


@pytest.mark.parametrize("name", list(CATALOG))
def test_gradcheck_from_the_natural_call(name):
    """d/d(every floating operand), the values of the symmetric operand included, by gradcheck."""
    kernel = compile_catalog(name)
    n = size_of(name)
    dense = dense_inputs(name, n, 1)
    if name == "ssyrk":
        a = dense.pop("A").requires_grad_(True)
        assert torch.autograd.gradcheck(lambda a_: kernel(A=a_), [a])
        return
    structure = symmetric_from_torch(ORDER[name], n, 2)
    values = torch.as_tensor(structure.values).clone().requires_grad_(True)
    (other, tensor), = dense.items()
    tensor.requires_grad_(True)

    def f(v, t):
        return kernel(A=structure.with_values(v), **{other: t})

    assert torch.autograd.gradcheck(f, [values, tensor])


def test_double_backward_from_the_natural_call():
    kernel = compile_catalog("mttkrp3")
    a = symmetric_from_torch(3, 4, 3)
    b = torch.randn(4, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda b_: kernel(A=a, B=b_), [b])


@pytest.mark.parametrize("dynamic", [False, True], ids=["static", "dynamic"])
def test_torch_compile_fullgraph_of_the_natural_call(dynamic):
    kernel = compile_catalog("mttkrp3")
    torch._dynamo.reset()

    @torch.compile(fullgraph=True, dynamic=dynamic, backend="aot_eager")
    def step(a, b):
        return (kernel(A=a, B=b) ** 2).sum()

    for n, seed in ((5, 4), (6, 5)):  # a second size: recompiled (static) or reused (dynamic)
        a = symmetric_from_torch(3, n, seed)
        values = torch.as_tensor(a.values).clone().requires_grad_(True)
        b = torch.randn(n, 2, dtype=torch.float64, requires_grad=True)
        loss = step(a.with_values(values), b)
        eager_values = values.detach().clone().requires_grad_(True)
        eager_b = b.detach().clone().requires_grad_(True)
        eager = (kernel(A=a.with_values(eager_values), B=eager_b) ** 2).sum()
        torch.testing.assert_close(loss, eager)
        loss.backward()
        eager.backward()
        torch.testing.assert_close(values.grad, eager_values.grad)
        torch.testing.assert_close(b.grad, eager_b.grad)


@pytest.mark.parametrize("name", ["ssymv", "mttkrp3", "bellman", "ssyrk"])
def test_opcheck_of_the_natural_call(name):
    kernel = compile_catalog(name)
    n = size_of(name)
    tensors = dense_inputs(name, n, 6)
    if name != "ssyrk":
        a = symmetric_from_torch(ORDER[name], n, 7)
        tensors["A"] = a.with_values(torch.as_tensor(a.values).clone().requires_grad_(True))
    for t in tensors.values():
        if isinstance(t, torch.Tensor):
            t.requires_grad_(True)
    result = torch.library.opcheck(kernel.op, kernel.op_arguments(**tensors))
    assert set(result.values()) == {"SUCCESS"}, result


def test_op_exists_once_compiled_and_gradients_are_never_dropped():
    kernel = sg.compile("y[i] += A[i,j]*x[j]", symmetric={"A": "full"}, name="natural_call_ssymv")
    assert hasattr(torch.ops.systec, "natural_call_ssymv")
    a = symmetric_from_torch(2, 4, 8)
    x = torch.randn(4, dtype=torch.float64, requires_grad=True)
    y = kernel(A=a, x=x)
    assert y.requires_grad
    y.sum().backward()
    torch.testing.assert_close(x.grad, torch.from_numpy(a.to_dense()).sum(dim=0))
    with torch.no_grad():  # inference: the direct launch, same result
        torch.testing.assert_close(kernel(A=a, x=x), y.detach())
    with pytest.raises(NotImplementedError, match="canonical_output=True has no gradient"):
        kernel(A=a, x=x, canonical_output=True)
