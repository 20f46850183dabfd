"""Kernels as PyTorch custom operators: `torch.ops.systec.<kernel.name>`.

Registering each kernel with `torch.library` (schema, fake implementation, CPU/CUDA
implementations, autograd formula) lets `torch.compile(fullgraph=True)` trace through it without a
graph break and lets autograd differentiate it. Schema: one `Tensor` per dense operand; a sparse
(or symmetric sparse) operand crosses the boundary as `<name>_indices` (int64 [ndim, nnz], its
canonical coordinates), `<name>_values` and `<name>_shape` (`SymInt[]`, since the output sizes
cannot be inferred from the coordinates). Gradients of dense operands are computed by derivative
kernels compiled with this same compiler (see `autodiff.py`), themselves custom ops, so backward
traces too; gradients of a sparse operand's values are evaluated only at its stored coordinates
and min=/max= kernels get the subgradient of their arg-min/arg-max (see `sampled.py`).
"""

from __future__ import annotations

import contextlib
import weakref
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.weak import WeakIdKeyDictionary

from . import algebra
from .autodiff import derivative_terms, grad_name
from .backends import registry
from .inputs import as_torch as _as_torch
from .inputs import check_tensor_names, to_storage
from .inputs import is_cupy as _is_cupy
from .ir.einsum import accesses
from .sampled import check_minmax, distinct_permutations, minmax_gradients, product_at
from .storage import SparseTensor, SymmetricTensor

NAMESPACE = "systec"
_LIB = torch.library.Library(NAMESPACE, "FRAGMENT")
_FLOAT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


@dataclass(frozen=True)
class _Operand:
    name: str
    sparse: bool
    ndim: int
    groups: tuple[tuple[int, ...], ...]
    first: int  # position of its first flat argument


# Storage structure per index tensor, so that the coordinates are validated (in range, canonical,
# sorted: runtime validates each structure once) and indexed once per tensor, not per call. Keyed
# weakly by the tensor and checked against its version counter, which in-place writes bump.
_STRUCTURES: WeakIdKeyDictionary = WeakIdKeyDictionary()


def _structure_of(o: _Operand, indices: torch.Tensor, shape: list[int]) -> SparseTensor:
    key = (indices._version, tuple(shape), o.groups)
    found = _STRUCTURES.get(indices)
    if found is not None and found[0] == key:
        structure = found[1]() if isinstance(found[1], weakref.ref) else found[1]
        if structure is not None:
            return structure
    empty = torch.zeros(indices.shape[1] if indices.dim() == 2 else 0, dtype=torch.float64)
    if o.groups:
        structure = SymmetricTensor(indices, empty, shape, o.groups, check=False)
    else:
        structure = SparseTensor(indices, empty, shape, check=False)
    structure.validate(o.name)
    _STRUCTURES[indices] = (key, structure)
    return structure


class KernelOp:
    """A kernel registered as `torch.ops.systec.<name>`; call it like the kernel (by tensor name)."""

    def __init__(self, kernel):
        self.kernel = kernel
        program = kernel.program
        einsum = program.einsum
        order: list[str] = []
        ndims: dict[str, int] = {}
        for access in accesses(einsum.rhs):
            if access.tensor not in ndims:
                order.append(access.tensor)
                ndims[access.tensor] = len(access.indices)
        self.operands: list[_Operand] = []
        args: list[str] = []
        for name in order:
            sparse = program.format_of(name).sparse
            self.operands.append(_Operand(name, sparse, ndims[name], program.groups_of(name), len(args)))
            if sparse:
                args += [f"Tensor {name}_indices", f"Tensor {name}_values", f"SymInt[] {name}_shape"]
            else:
                args.append(f"Tensor {name}")
        self.n_args = len(args)  # tensor arguments; a trailing `check` flag follows them
        self.by_name = {o.name: o for o in self.operands}
        # where each output index gets its size: the first (operand, mode) that carries it
        where: dict[str, tuple[_Operand, int]] = {}
        for access in accesses(einsum.rhs):
            for mode, index in enumerate(access.indices):
                where.setdefault(index.name, (self.by_name[access.tensor], mode))
        missing = [i.name for i in einsum.output.indices if i.name not in where]
        if missing:
            raise ValueError(f"output index {missing[0]} of {kernel.expression!r} appears in no operand")
        self.out_sources = [where[i.name] for i in einsum.output.indices]
        self.name = kernel.name
        self.qualname = f"{NAMESPACE}::{self.name}"
        if not hasattr(getattr(torch.ops, NAMESPACE), self.name):
            _LIB.define(f"{self.name}({', '.join(args)}, bool check=True) -> Tensor")
            torch.library.register_fake(self.qualname, self._fake, lib=_LIB)
            torch.library.impl(self.qualname, "cpu", self._impl_cpu, lib=_LIB)
            torch.library.impl(self.qualname, "cuda", self._impl_cuda, lib=_LIB)
            torch.library.register_autograd(self.qualname, self._backward, setup_context=self._setup_context,
                                            lib=_LIB)
        self.op = getattr(getattr(torch.ops, NAMESPACE), self.name).default
        self._terms: dict[str, list] = {}
        self._plans: dict[str, list] = {}

    # ------------------------------------------------------------------ checks shared by all paths
    def _value_tensors(self, args) -> list[tuple[str, torch.Tensor]]:
        out = []
        for o in self.operands:
            out.append((f"{o.name}_values" if o.sparse else o.name, args[o.first + 1 if o.sparse else o.first]))
        return out

    def _shape(self, o: _Operand, args) -> tuple:
        return tuple(args[o.first + 2]) if o.sparse else tuple(args[o.first].shape)

    def _check(self, args) -> tuple[torch.dtype, torch.device, list]:
        """Device, dtype and size checks with torch-style messages; returns (dtype, device, out shape)."""
        values = self._value_tensors(args)
        name0, t0 = values[0]
        for name, t in values:
            if t.dtype not in _FLOAT_DTYPES:
                raise TypeError(f"{self.name}: expected a floating point tensor for {name}, got {t.dtype}")
            if t.dtype != t0.dtype:
                raise RuntimeError(f"{self.name}: expected all operands to have the same dtype, but {name0} "
                                   f"is {t0.dtype} and {name} is {t.dtype}")
        tensors = [(n, t) for n, t in values]
        for o in self.operands:
            if o.sparse:
                idx, vals = args[o.first], args[o.first + 1]
                tensors.append((f"{o.name}_indices", idx))
                if idx.dtype != torch.int64:
                    raise TypeError(f"{self.name}: {o.name}_indices must be int64, got {idx.dtype}")
                if idx.dim() != 2 or idx.shape[0] != o.ndim or vals.dim() != 1 or idx.shape[1] != vals.shape[0]:
                    raise ValueError(f"{self.name}: {o.name}_indices must have shape [{o.ndim}, nnz] and "
                                     f"{o.name}_values shape [nnz]; got {tuple(idx.shape)} and {tuple(vals.shape)}")
                if len(args[o.first + 2]) != o.ndim:
                    raise ValueError(f"{self.name}: {o.name}_shape must have {o.ndim} entries, "
                                     f"got {list(args[o.first + 2])}")
            elif args[o.first].dim() != o.ndim:
                raise ValueError(f"{self.name}: {o.name} has {args[o.first].dim()} modes (shape "
                                 f"{tuple(args[o.first].shape)}) but the expression uses {o.ndim}")
        for name, t in tensors:
            if t.device != t0.device:
                raise RuntimeError(f"{self.name}: expected all tensors to be on the same device, but found at "
                                   f"least two devices, {t0.device} ({name0}) and {t.device} ({name})")
        # size conflicts, named like the runtime's (and torch.einsum's) message
        sizes: dict[str, tuple[Any, str, int]] = {}
        for access in accesses(self.kernel.program.einsum.rhs):
            shape = self._shape(self.by_name[access.tensor], args)
            for mode, index in enumerate(access.indices):
                if index.name in sizes:
                    known, tensor, known_mode = sizes[index.name]
                    if known != shape[mode]:
                        raise ValueError(
                            f"size mismatch for index {index}: {tensor} has size {known} at mode {known_mode} "
                            f"but {access.tensor} has size {shape[mode]} at mode {mode} ({access})")
                else:
                    sizes[index.name] = (shape[mode], access.tensor, mode)
        out_shape = [self._shape(o, args)[mode] for o, mode in self.out_sources]
        # the dtype the kernel computes in: accumulate=, else float16/bfloat16 widened to float32
        accumulate = getattr(self.kernel, "accumulate", None)
        if accumulate is not None:
            dtype = getattr(torch, accumulate)
        else:
            dtype = torch.float32 if t0.dtype in (torch.float16, torch.bfloat16) else t0.dtype
        return dtype, t0.device, out_shape

    # ------------------------------------------------------------------ implementations
    def _fake(self, *args):
        dtype, device, out_shape = self._check(args)
        return torch.empty(out_shape, dtype=dtype, device=device)

    def _tensors(self, args) -> dict[str, Any]:
        tensors: dict[str, Any] = {}
        for o in self.operands:
            if not o.sparse:
                tensors[o.name] = args[o.first]
                continue
            idx, vals, shape = args[o.first], args[o.first + 1], [int(s) for s in args[o.first + 2]]
            tensors[o.name] = _structure_of(o, idx, shape).with_values(vals)
        return tensors

    def _run(self, backend: str, args) -> torch.Tensor:
        dtype, device, out_shape = self._check(args)
        check = bool(args[self.n_args]) if len(args) > self.n_args else True
        result = self.kernel.call_direct(self._tensors(args[:self.n_args]), backend=backend, check=check)
        # The op promises the contiguous layout of its fake implementation; a kernel may return a
        # permuted (strided) view of its concordant output layout.
        return result.reshape(out_shape).to(device=device, dtype=dtype).contiguous()

    def _impl_cpu(self, *args):
        # the kernel's own backend where it runs on CPU tensors (triton: under its interpreter, or
        # the same error as the direct call), numba for "auto"
        backend = self.kernel.backend
        return self._run("numba" if backend == registry.AUTO else backend, args)

    def _impl_cuda(self, *args):
        backend = self.kernel.backend
        return self._run("triton" if backend == registry.AUTO else backend, args)

    # ------------------------------------------------------------------ autograd
    def _setup_context(self, ctx, inputs, output) -> None:
        tensors = [(i, t) for i, t in enumerate(inputs) if isinstance(t, torch.Tensor)]
        ctx.positions = [i for i, _ in tensors]
        ctx.others = {i: t for i, t in enumerate(inputs) if not isinstance(t, torch.Tensor)}
        ctx.save_for_backward(*(t for _, t in tensors))

    def _backward(self, ctx, grad):
        args: list[Any] = [None] * self.n_args
        for i, t in zip(ctx.positions, ctx.saved_tensors, strict=True):
            args[i] = t
        for i, v in ctx.others.items():
            if i < self.n_args:
                args[i] = v
        grads: list[Any] = [None] * (self.n_args + 1)  # the check flag has none
        wanted = [o for o in self.operands if ctx.needs_input_grad[o.first + 1 if o.sparse else o.first]]
        if self.kernel.program.einsum.reduce != "+=":
            found = self.minmax_gradients(grad, args, [o.name for o in wanted])
            for o in wanted:
                grads[o.first + 1 if o.sparse else o.first] = found[o.name]
            return tuple(grads)
        for o in wanted:
            grads[o.first + 1 if o.sparse else o.first] = self.gradient(o.name, grad, args)
        return tuple(grads)

    def terms(self, target: str) -> list:
        """(weight, derivative KernelOp) pairs whose weighted sum is the dense gradient of `target`."""
        if target not in self._terms:
            self._terms[target] = [(term.weight, _derivative_op(self.kernel, term))
                                   for term in derivative_terms(self.kernel.program, target)]
        return self._terms[target]

    def _sampleable(self, term) -> bool:
        """Whether the term can be evaluated at points by gathers: all its factors are dense tensors."""
        name = grad_name(self.kernel.program)
        return all(t == name or not self.by_name[t].sparse for t, _ in term.factors)

    def plan(self, target: str) -> list:
        """(weight, term, derivative KernelOp or None) for `target`: None where the term is evaluated
        only at the sparse target's stored coordinates (`sampled.product_at`), so no op is compiled."""
        if target not in self._plans:
            o = self.by_name[target]
            plan = []
            for k, term in enumerate(derivative_terms(self.kernel.program, target)):
                sampled = o.sparse and self._sampleable(term)
                plan.append((term.weight, term, None if sampled else self.terms(target)[k][1]))
            self._plans[target] = plan
        return self._plans[target]

    def gradient(self, target: str, grad: torch.Tensor, args) -> torch.Tensor:
        """d(loss)/d(target) from the output gradient: dense operand -> dense; sparse -> its values.

        For a sparse target the terms are evaluated at its stored coordinates only (every distinct
        permutation of each canonical entry), so the cost is that of the points times the summed
        dense extents, never the n^ndim dense gradient. A term that reads another sparse operand
        (e.g. `A[i,k]*A[k,j]` w.r.t. A) is the exception: it is computed densely by its derivative
        kernel and gathered at the points.
        """
        o = self.by_name[target]
        if o.groups and not o.sparse:
            raise NotImplementedError(f"autograd w.r.t. the dense symmetric operand {target} is not implemented; "
                                      "pass it as a SymmetricTensor to differentiate its values")
        gname = grad_name(self.kernel.program)
        dense = None
        for weight, _, deriv in self.plan(target):
            if deriv is None:
                continue
            inputs: dict[str, Any] = {}
            for d in deriv.operands:
                if d.name == gname:
                    inputs[d.name] = grad
                    continue
                src = self.by_name[d.name]
                inputs[d.name] = (tuple(args[src.first:src.first + 3]) if src.sparse else args[src.first])
            part = deriv.call_flat(inputs)
            part = part * weight if weight != 1.0 else part
            dense = part if dense is None else dense + part
        if not o.sparse:
            return dense
        sampled = [(w, term) for w, term, deriv in self.plan(target) if deriv is None]
        tensors = {p.name: args[p.first] for p in self.operands if not p.sparse}
        tensors[gname] = grad
        indices = args[o.first]
        total = None
        for coords, keep in distinct_permutations(indices, o.groups):
            at = dense[tuple(coords)] if dense is not None else None
            for weight, term in sampled:
                part = product_at(term.factors, coords, tensors)
                part = part * weight if weight != 1.0 else part
                at = part if at is None else at + part
            at = torch.where(keep, at, torch.zeros((), dtype=at.dtype, device=at.device))
            total = at if total is None else total + at
        return total

    def minmax_gradients(self, grad: torch.Tensor, args, targets: list[str]) -> dict[str, torch.Tensor]:
        """Subgradients of a min=/max= kernel (see `sampled.minmax_gradients`): tensors by operand name."""
        sparse = {o.name: o.sparse for o in self.operands}
        for name in targets:
            o = self.by_name[name]
            if o.groups and not o.sparse:
                raise NotImplementedError(f"autograd w.r.t. the dense symmetric operand {name} is not "
                                          "implemented; pass it as a SymmetricTensor to differentiate its values")
        driver, _ = check_minmax(self.kernel.program.einsum, sparse)
        d = self.by_name[driver.tensor]
        tensors = {o.name: args[o.first] for o in self.operands if not o.sparse}
        tensors[d.name] = args[d.first + 1]
        _, _, out_shape = self._check(args)
        return minmax_gradients(self.kernel.program.einsum, sparse, d.groups, args[d.first], tensors,
                                out_shape, grad)

    # ------------------------------------------------------------------ calling
    def call_flat(self, inputs: dict[str, Any]) -> torch.Tensor:
        """Call the op with dense tensors and (indices, values, shape) triples by operand name."""
        flat: list[Any] = []
        for o in self.operands:
            if o.sparse:
                idx, vals, shape = inputs[o.name]
                flat += [idx, vals, list(shape)]
            else:
                flat.append(inputs[o.name])
        return self.op(*flat)

    def __call__(self, **tensors: Any):
        return apply(self.kernel, **tensors)


def _derivative_op(kernel, term) -> KernelOp:
    deriv = kernel.related(term.expression, symmetric=term.symmetric or None, formats=term.formats or None)
    # only first derivatives are registered eagerly: each order is a new kernel
    return kernel_op(deriv, derivatives=False)


_OPS: dict[str, KernelOp] = {}


def kernel_op(kernel, *, derivatives: bool = True) -> KernelOp:
    """The custom op of `kernel` (registered once per kernel name); `.op` is `torch.ops.systec.<name>`.

    With `derivatives` the ops of its first derivatives are registered now too: a graph that
    torch.compile loads from its on-disk cache calls them before any backward has been traced.
    """
    found = _OPS.get(kernel.name)
    if found is None:
        found = _OPS[kernel.name] = KernelOp(kernel)
        if derivatives and kernel.program.einsum.reduce == "+=":
            for o in found.operands:
                # an unsupported gradient raises its message in backward, if it is ever requested
                with contextlib.suppress(NotImplementedError):
                    # every derivative op, even those the sampled values gradient no longer calls: a
                    # backward graph cached on disk by an earlier version may still call them (the
                    # cache key does not cover this module's Python backward)
                    found.terms(o.name)
                    found.plan(o.name)
    elif found.kernel is not kernel and (found.kernel.program != kernel.program
                                         or found.kernel.backend != kernel.backend):
        raise ValueError(f"kernel name {kernel.name!r} is already registered for a different expression "
                         f"or backend ({found.kernel.expression!r}, backend {found.kernel.backend!r})")
    kernel._kernel_op = found  # traced calls find it without comparing programs
    return found


def _op_of(kernel) -> KernelOp:
    found = getattr(kernel, "_kernel_op", None)
    return found if found is not None else kernel_op(kernel)


def _torch_indices(o: _Operand, storage: SparseTensor) -> torch.Tensor:
    """The coordinates of `storage` as one torch tensor per structure (cached on it), registered
    so that the op's implementation reuses `storage` and its structure caches."""
    idx = storage._cache.get("torch_indices")
    if idx is None:
        idx = storage._cache["torch_indices"] = torch.as_tensor(storage.indices)
    # weakly: the storage's cache holds `idx`, the key; a strong value would keep both alive
    _STRUCTURES[idx] = ((idx._version, tuple(storage.shape), o.groups), weakref.ref(storage))
    return idx


def flatten(kernel, tensors: dict[str, Any], *, check: bool = True) -> list:
    """The op's arguments for a call's tensors by name (see `apply`)."""
    op = _op_of(kernel)
    if torch.compiler.is_compiling():
        # Traced by Dynamo: storage objects cross as their tensors; checks run in the op itself.
        flat: list[Any] = []
        for o in op.operands:
            obj = tensors[o.name]
            if o.sparse:
                flat += [torch.as_tensor(obj.indices), obj.values, list(obj.shape)]
            else:
                flat.append(obj)
        return [*flat, check]
    check_tensor_names([o.name for o in op.operands], tensors, kernel.program.einsum.output.tensor)
    fill = algebra.fill_value(kernel.program.einsum.semiring.reduce)
    flat = []
    for o in op.operands:
        obj = tensors[o.name]
        if not o.sparse:
            if isinstance(obj, SparseTensor):
                obj = torch.as_tensor(obj.to_dense())
            flat.append(_as_torch(obj))
        elif isinstance(obj, torch.Tensor) and obj.layout == torch.strided:
            # canonical coordinates from the data, values gathered with torch so gradients reach `obj`
            storage = to_storage(o.name, obj.detach(), o.groups, check=check, fill=fill)
            idx = _torch_indices(o, storage).to(obj.device)
            flat += [idx, obj[tuple(idx)], list(storage.shape)]
        else:
            storage = to_storage(o.name, obj, o.groups, check=check, fill=fill)
            values = _as_torch(storage.values)
            flat += [_torch_indices(o, storage).to(values.device), values, list(storage.shape)]
    return [*flat, check]


def apply(kernel, tensors: dict[str, Any], *, check: bool = True, out=None):
    """Run `kernel` through its custom op (differentiable, torch.compile-able).

    Dense operands: torch tensors, numpy or CuPy arrays. Sparse operands: SymmetricTensor /
    SparseTensor (torch values requiring grad get gradients), foreign sparse inputs, or a dense
    tensor, whose canonical nonzeros are gathered differentiably. CuPy in -> CuPy out (DLPack).
    `out`: written with the result (outside autograd) and returned.
    """
    op = _op_of(kernel)
    result = op.op(*flatten(kernel, tensors, check=check))
    if op.kernel is not kernel and not torch.compiler.is_compiling():
        # the op ran the kernel registered first under this name
        kernel._last, kernel._last_loops, kernel._stats = op.kernel._last, op.kernel._last_loops, None
    if out is not None:
        with torch.no_grad():
            return out.copy_(result)
    if not torch.compiler.is_compiling() and any(
        _is_cupy(t) or (isinstance(t, SparseTensor) and _is_cupy(t.values)) for t in tensors.values()
    ):
        import cupy

        return cupy.from_dlpack(result)
    return result


# Bound once: a repeat kernel call asks these on every call (module attribute chains cost
# microseconds there when the caches are cold). Dynamo knows is_compiling by identity.
_is_compiling = torch.compiler.is_compiling
_interpreter_stack = torch._C._functorch.peek_interpreter_stack
_grad_enabled = torch.is_grad_enabled
_Tensor = torch.Tensor


def needs_op(tensors: dict[str, Any]) -> bool:
    """Whether a call must go through the custom op: under torch.compile or a torch.func
    transform, or when autograd records it (grad mode, an input requiring grad). Otherwise the
    direct launch gives the same result without the dispatcher's cost. A call on numpy arrays
    and numpy-held storage only (the common CPU call) asks torch.compile alone: no autograd
    graph or torch.func transform can hold such inputs, so the op would give the same values."""
    if _is_compiling():
        return True
    for t in tensors.values():
        if type(t) is np.ndarray or (isinstance(t, SparseTensor) and type(t.values) is np.ndarray):
            continue
        break  # a torch tensor (or another kind): ask the transforms and autograd
    else:
        return False
    if _interpreter_stack() is not None:
        return True
    if not _grad_enabled():
        return False
    for t in tensors.values():
        value = t.values if isinstance(t, SparseTensor) else t
        if isinstance(value, _Tensor) and value.requires_grad:
            return True
    return False
