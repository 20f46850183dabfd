"""Running a kernel: a prepared launch per backend, and the result in the user's layout.

`inputs.bind` turns a call's tensors into `KernelArgs`; a backend fills `args.partial`;
`finish` reduces the chunks, restores the user's mode order, mirrors a symmetric output and
returns torch (CuPy for CuPy inputs on a device backend), or writes the caller's `out=`.
"""

from __future__ import annotations

import functools
import threading
import weakref

import numpy as np

from . import algebra
from .backends.arguments import DriverArrays, DriverStructure, KernelArgs, allocate, torch_dtype
from .backends.plans import choose_plan, run_cublas_syrk, syrk_runner
from .backends.registry import Backend
from .dense_symmetry import mirror_in_place
from .inputs import (
    bind,
    bind_plan,
    check_tensor_names,
    mirror_tensor,
    prepare_bind,
    signature_key,
    structure_of,
    to_storage,
)
from .ir.einsum import Program
from .ir.loop import LoopProgram

__all__ = [
    "DriverArrays",
    "DriverStructure",
    "KernelArgs",
    "Launch",
    "allocate",
    "bind",
    "check_tensor_names",
    "finish",
    "mirror_tensor",
    "to_storage",
]


class Launch:
    """A kernel's call on one backend, prepared once: its bind plan, its generated module (loaded
    on first use, memoized by the backend per loop program and schedule) and its finish. A repeat
    call only binds (cheap checks and conversions), runs and finishes: no source is emitted or
    hashed again.

    Calls with an input signature seen before go faster still: the second call of a signature
    (kinds, dtypes, shapes, layouts, devices of the dense operands, the sparse operand's
    structure, `check`) prepares a `_PreparedCall` (inputs.PreparedBind, the backend's
    specialized run, the finish's decisions); a later call of that signature only matches it
    (identity and attribute tests), binds its arrays, runs and finishes. A structure made anew
    for every call is never prepared. The last few signatures are kept (`PREPARED_SIGNATURES`):
    they hold a sparse operand's structure, never values."""

    PREPARED_SIGNATURES = 4

    def __init__(self, loops: LoopProgram, program: Program, backend: Backend, accumulate=None):
        self.program, self.backend, self.accumulate = program, backend, accumulate
        # the backend's plan (backends/plans.py): the generated kernel, the expanded one, or (C/cu)BLAS
        self.backend_plan = choose_plan(program, loops, backend.name)
        loops = self.backend_plan.loops
        self.loops = loops
        self.plan = bind_plan(loops, program)
        self._specialize = None
        if self.backend_plan.name == "blas_syrk":
            prepared_run = syrk_runner(self.backend_plan)  # BLAS: nothing to specialize per signature
            self.run = lambda _loops, args: prepared_run(args)
            self._specialize = lambda _loops, _args: prepared_run
        elif self.backend_plan.name == "cublas_syrk":  # per call: cuBLAS for fp32 CUDA operands, else generated
            self.run = functools.partial(run_cublas_syrk, self.backend_plan, backend.prepare(loops))
        else:
            self.run = backend.prepare(loops)  # imports the backend module, loads the kernel once
            self._specialize = backend.specializer()
        self._prepared: dict[tuple, _PreparedCall] = {}  # signature_key -> its prepared call
        self._prepared_lock = threading.Lock()
        self._seen: dict[tuple, object] = {}  # signature_key -> the structure it was last seen with

    def __call__(self, tensors: dict, *, check: bool = True, canonical: bool = False, out=None):
        key = signature_key(self.plan, tensors, check)
        prepared = self._prepared.get(key)
        if prepared is not None:
            args = prepared.bind(tensors)
            if args is not None:
                if out is not None:
                    args.destination = check_out(out, args, self.program)
                prepared.run(args)
                return args, prepared.finish(args, canonical)
        args = bind(self.loops, self.program, tensors, check=check, device_tensors=self.backend.device_tensors,
                    plan=self.plan, accumulate=self.accumulate)
        if out is not None:
            args.destination = check_out(out, args, self.program)
        self.run(self.loops, args)
        result = finish(args, self.loops, self.program, canonical=canonical)
        if self._specialize is not None:
            self._prepare(key, tensors, args, check)
        return args, result

    def _prepare(self, key: tuple, tensors: dict, args: KernelArgs, check: bool) -> None:
        """Prepare the call of this signature (after a call bound it through `bind`), once its
        sparse structure comes again: a structure made anew for every call (a program's
        intermediate, a matrix rebuilt in a loop) is not worth preparing."""
        structure = structure_of(self.plan, tensors)
        if structure is not None and key not in self._prepared:
            seen = self._seen.get(key)
            if seen is None or (seen() if isinstance(seen, weakref.ref) else seen) is not structure:
                try:  # a storage's structure cache is held (it cannot be weakly referenced), an input weakly
                    token = structure if isinstance(structure, dict) else weakref.ref(structure)
                except TypeError:
                    return
                with self._prepared_lock:
                    if len(self._seen) >= 2 * self.PREPARED_SIGNATURES:
                        self._seen.pop(next(iter(self._seen)))
                    self._seen[key] = token
                return
        bind_fast = prepare_bind(self.plan, tensors, args, check=check, device_tensors=self.backend.device_tensors)
        prepared = None
        if bind_fast is not None:
            again = bind_fast(tensors)  # bound by the prepared bind itself: its structure, its run
            if again is not None:
                # the backend's run for this signature, or its general one (e.g. numba's parallel runs)
                run = self._specialize(self.loops, again) or functools.partial(self.run, self.loops)
                prepared = _PreparedCall(bind_fast, run, _finisher(self.loops, self.program, args))
        with self._prepared_lock:  # calls from several threads: one writer at a time (readers need none)
            table = self._prepared
            if prepared is None:
                table.pop(key, None)  # a stale entry of this key would only be tried and missed
            else:
                if key not in table and len(table) >= self.PREPARED_SIGNATURES:
                    del table[next(iter(table))]  # the oldest
                table[key] = prepared


class _PreparedCall:
    """One input signature's call: its bind, its backend run, its finish (see Launch)."""

    __slots__ = ("bind", "finish", "run")

    def __init__(self, bind_fast, run, finish_fast):
        self.bind, self.run, self.finish = bind_fast, run, finish_fast


def _finisher(loops: LoopProgram, program: Program, args: KernelArgs):
    """`finish` for the calls of one signature: one buffer, no permutation, no `out=`, and no
    symmetric output or one the backend wrote whole (the common case) are a view and a torch
    wrapper; anything else is `finish`."""
    import torch

    target = args.torch_device if args.torch_device is not None else torch.device("cpu")
    here = args.partial.device if isinstance(args.partial, torch.Tensor) else torch.device("cpu")
    shape = tuple(args.shapes[program.einsum.output.tensor])
    plain = (loops.layout_of(program.einsum.output.tensor) is None and not args.cupy_output and here == target
             and shape)
    if not plain:
        return lambda a, canonical: finish(a, loops, program, canonical=canonical)

    from_numpy = torch.from_numpy
    symmetric_output = bool(loops.output_groups)

    def finish_plain(a: KernelArgs, canonical: bool):
        partial = a.partial
        # a symmetric output is plain where the backend mirrored it and the caller wants it whole
        if partial.shape[0] != 1 or a.destination is not None or (
                symmetric_output and (canonical or not a.output_mirrored)):
            return finish(a, loops, program, canonical=canonical)
        result = a.first_buffer if a.first_buffer is not None else partial[0]
        if result.shape != shape:
            result = result.reshape(shape)
        return from_numpy(result) if type(result) is np.ndarray else result

    return finish_plain




def check_out(out, args: KernelArgs, program: Program):
    """`out` if it can hold the result (shape, dtype, device), else ValueError/TypeError naming why."""
    import torch

    name = program.einsum.output.tensor
    shape = args.shapes[name]
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"out= must be a torch.Tensor for {name}, got {type(out).__name__}")
    if tuple(out.shape) != tuple(shape):
        raise ValueError(f"out= has shape {tuple(out.shape)} but {name} has shape {tuple(shape)}")
    if out.dtype != torch_dtype(args.dtype):
        raise TypeError(f"out= has dtype {out.dtype} but this call computes {name} in {torch_dtype(args.dtype)}")
    device = args.torch_device if args.torch_device is not None else torch.device("cpu")
    if out.device != device:
        raise ValueError(f"out= is on {out.device} but the result of this call is on {device}")
    if out.requires_grad:
        raise ValueError("out= must not require grad (write into a tensor outside autograd)")
    return out


def _clear_mirror_half(result: np.ndarray, groups, identity: float) -> None:
    """Put the identity back off the canonical part of a pair (a, b) of modes (index a <= b)
    that the backend mirrored itself, for callers that asked for the canonical part only."""
    for a, b in groups:
        index = np.indices((result.shape[a], result.shape[b]), sparse=True)
        shape = [1] * result.ndim
        shape[a], shape[b] = result.shape[a], result.shape[b]
        below = np.broadcast_to((index[0] > index[1]).reshape(shape), result.shape)
        result[below] = identity


def _clear_mirror_half_tensor(result, groups, identity: float) -> None:
    """_clear_mirror_half with torch ops (on the result's device)."""
    import torch

    for a, b in groups:
        rows = torch.arange(result.shape[a], device=result.device)
        cols = torch.arange(result.shape[b], device=result.device)
        shape = [1] * result.ndim
        shape[a], shape[b] = result.shape[a], result.shape[b]
        below = (rows[:, None] > cols[None, :]).reshape(shape)
        result.masked_fill_(below.expand(result.shape), identity)


def _finish_tensor(args: KernelArgs, loops: LoopProgram, program: Program, canonical: bool):
    """finish() of a torch output buffer (the Triton backend's, on its device): torch ops only."""
    import torch

    reduce = algebra.operator(loops.reduce)
    partial = args.partial
    # One chunk: its buffer is ours to return; several: reduce them into a new tensor.
    result = getattr(torch, reduce.torch_reduce)(partial, dim=0) if partial.shape[0] > 1 else partial[0]
    perm = loops.layout_of(program.einsum.output.tensor)
    if perm is not None:
        result = result.permute(tuple(int(m) for m in np.argsort(perm)))  # a view in the user's mode order
    result = result.reshape(args.shapes[program.einsum.output.tensor])
    if loops.output_groups and not canonical and not args.output_mirrored:
        mirror_tensor(result, loops.output_groups)
    elif canonical and args.output_mirrored:
        _clear_mirror_half_tensor(result, loops.output_groups, reduce.identity)
    target = args.torch_device if args.torch_device is not None else torch.device("cpu")
    if result.device != target:
        result = result.to(target)  # host inputs (numpy) on a GPU run: the result comes home
    if args.destination is not None:
        result = args.destination.copy_(result)
    if args.cupy_output:
        import cupy

        return cupy.from_dlpack(result)
    return result


def finish(args: KernelArgs, loops: LoopProgram, program: Program, *, canonical: bool = False):
    """Reduce the chunks, restore the user's layout, mirror a symmetric output, return torch
    (CuPy for CuPy inputs on the Triton path)."""
    import torch

    if isinstance(args.partial, torch.Tensor):
        return _finish_tensor(args, loops, program, canonical)
    reduce = algebra.operator(loops.reduce)
    # One chunk: its buffer is ours to return; several: reduce them into a new array.
    result = reduce.numpy.reduce(args.partial, axis=0) if args.partial.shape[0] > 1 else args.partial[0]
    out_shape = args.shapes[program.einsum.output.tensor]
    perm = loops.layout_of(program.einsum.output.tensor)
    if perm is not None:
        result = np.transpose(result, np.argsort(perm))  # a view in the user's mode order
    result = result.reshape(out_shape)
    if loops.output_groups and not canonical and not args.output_mirrored:
        mirror_in_place(result, loops.output_groups)
    elif canonical and args.output_mirrored:
        _clear_mirror_half(result, loops.output_groups, reduce.identity)
    # A permuted view is returned as a strided tensor (like torch's own transposes): no copy.
    tensor = torch.from_numpy(result if result.ndim else np.array(result))
    if args.destination is not None:
        return args.destination.copy_(tensor)
    if args.torch_device is not None and args.torch_device.type != "cpu":
        tensor = tensor.to(args.torch_device)
    return tensor
