"""Binding a call's tensors to a compiled loop program: checks, conversions, layouts, output.

Everything here is shared by all backends: they receive `KernelArgs` (arrays in the kernel's
layouts) and fill `args.partial`; `finish` turns that into the user's result.

Host backends (numba, reference) see numpy arrays only. The Triton backend binds with
`device_tensors=True`: dense torch operands stay torch tensors on their device (CuPy arrays come
in through DLPack, no copy), the output buffer is a device tensor, and `finish` returns it without
a host round trip. Sparse drivers stay numpy on the host (the Triton backend caches their device
copies on the DriverArrays, which bind() caches per storage object).
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from . import algebra
from .dense_symmetry import check_symmetric, mirror_canonical, mirror_in_place
from .ir.einsum import Program, accesses, tensors_of
from .ir.loop import Extent, LoopProgram
from .storage import SparseTensor, SymmetricTensor, _is_torch

if TYPE_CHECKING:
    import torch


@dataclass
class DriverStructure:
    """What a kernel needs of a sparse driver's structure: cached on the storage's structure (its
    `_cache`, shared by `with_values`), never holding values."""

    coords: tuple[np.ndarray, ...]  # one per mode of the driver access
    pointers: np.ndarray | None  # CSR row pointers over mode 0 (format "csr")
    nnz: int
    n_expanded: int  # nonzeros of the fully expanded tensor (for work statistics)
    take: np.ndarray | None  # expanded drivers: position of each entry's canonical value
    bounds: dict = field(default_factory=dict)
    # Device copies of the coordinates (the Triton backend's): (what, device) -> (source, copy).
    device_copies: dict = field(default_factory=dict, repr=False)


@dataclass
class DriverArrays:
    """A sparse driver bound for one call: its cached structure and this call's values."""

    structure: DriverStructure
    values: np.ndarray

    coords = property(lambda self: self.structure.coords)
    pointers = property(lambda self: self.structure.pointers)
    nnz = property(lambda self: self.structure.nnz)
    n_expanded = property(lambda self: self.structure.n_expanded)
    device_copies = property(lambda self: self.structure.device_copies)

    def chunk_bounds(self, chunks: int) -> np.ndarray:
        """Outer-loop boundaries of `chunks` chunks with equal nonzero counts (rows for CSR)."""
        bounds = self.structure.bounds
        if chunks not in bounds:
            targets = np.linspace(0, self.nnz, chunks + 1).round().astype(np.int64)
            if self.pointers is not None:
                found = np.searchsorted(self.pointers, targets, side="left").astype(np.int64)
                found[0], found[-1] = 0, len(self.pointers) - 1
            else:
                found = targets
            bounds[chunks] = found
        return bounds[chunks]


@dataclass
class KernelArgs:
    # Kernel layout, contiguous; 0-d tensors as shape (1,). numpy arrays, except with
    # bind(device_tensors=True), where torch (and CuPy) operands are torch tensors on their device.
    dense: dict[str, np.ndarray | torch.Tensor]
    driver: DriverArrays | None
    shapes: dict[str, tuple[int, ...]]  # user-facing shapes of every tensor, the output included
    sizes: dict[str, int]  # index name -> size
    tables: dict[str, np.ndarray]
    out_shape: tuple[int, ...]  # kernel layout; () as (1,)
    dtype: np.dtype
    # (chunks, *out_shape), filled with the reduction identity: numpy, or a device torch tensor
    # when the backend allocated it there (allocate(..., device=...)).
    partial: np.ndarray | torch.Tensor | None = None
    bounds: np.ndarray | None = None
    chunks: int = 1
    torch_device: Any = None  # where the result goes (None: the CPU)
    cupy_output: bool = False  # the inputs were CuPy arrays: return one (DLPack, no copy)
    extras: dict = field(default_factory=dict)
    output_mirrored: bool = False  # the backend wrote both halves of a symmetric output itself

    def extent(self, extent: Extent) -> int:
        return self.shapes[extent.tensor][extent.mode]

    @property
    def out(self) -> np.ndarray | torch.Tensor:
        """The single accumulation buffer of a one-chunk run (the reference interpreter)."""
        assert self.partial is not None and self.partial.shape[0] == 1
        return self.partial[0]


# ---------------------------------------------------------------------------------------------
# Input kinds


def _is_scipy_sparse(obj) -> bool:
    return type(obj).__module__.startswith("scipy.sparse")


def _is_pydata_sparse(obj) -> bool:
    return type(obj).__module__.split(".")[0] == "sparse"


def _is_cupy(obj) -> bool:
    return type(obj).__module__.split(".")[0] == "cupy"


def is_sparse_input(obj) -> bool:
    if isinstance(obj, SparseTensor) or _is_scipy_sparse(obj) or _is_pydata_sparse(obj):
        return True
    return _is_torch(obj) and obj.layout != __import__("torch").strided


def to_numpy(obj) -> np.ndarray:
    if _is_torch(obj):
        import torch

        tensor = obj.detach()
        if tensor.dtype in (torch.bfloat16, torch.float16):
            tensor = tensor.float()
        return tensor.cpu().resolve_conj().numpy()
    if _is_cupy(obj):
        return obj.get()
    return np.asarray(obj)


def shape_of(obj) -> tuple[int, ...]:
    return tuple(int(s) for s in obj.shape) if hasattr(obj, "shape") else np.shape(obj)


def to_storage(name: str, obj, groups, check: bool, fill: float = 0.0) -> SparseTensor:
    """An input for a sparse operand as storage: SymmetricTensor when `groups` is non-empty.

    A dense array keeps every entry that differs from `fill`, the semiring's value of an unstored
    entry (0 under +=, +inf under min=): a dense zero is a real entry for min=/max=."""
    if isinstance(obj, SymmetricTensor):
        if groups and tuple(obj.groups) != tuple(groups):
            raise ValueError(
                f"{name} is a SymmetricTensor with groups {obj.groups}, but the kernel was compiled "
                f"with {name} symmetric in {tuple(groups)}"
            )
        return obj if groups else obj.expanded()
    if isinstance(obj, SparseTensor):
        if not groups:
            return obj
        return SymmetricTensor.from_coo(obj.indices, obj.values, obj.shape, groups, check=check, name=name)
    if is_sparse_input(obj):
        from .io.convert import as_sparse_tensor

        return as_sparse_tensor(obj, symmetric=list(groups) if groups else None, check=check)
    dense = to_numpy(obj)
    if groups:
        return SymmetricTensor.from_dense(dense, groups, check=check, fill=fill, name=name)
    return SparseTensor.from_dense(dense, fill=fill)


def densify(name: str, obj, fill: float) -> np.ndarray:
    """Dense numpy array of an input; entries a sparse input does not store hold `fill`."""
    if not is_sparse_input(obj):
        return to_numpy(obj)
    storage = to_storage(name, obj, (), check=False)
    dense = np.full(storage.shape, fill, dtype=np.result_type(to_numpy(storage.values).dtype, np.float32))
    dense[tuple(storage.indices)] = to_numpy(storage.values)
    return dense


# ---------------------------------------------------------------------------------------------
# Binding


def _sizes(program: Program, inputs: dict[str, Any]) -> dict[str, int]:
    sizes: dict[str, tuple[int, str, int]] = {}
    for access in accesses(program.einsum.rhs):
        shape = shape_of(inputs[access.tensor])
        if len(shape) != len(access.indices):
            raise ValueError(
                f"{access.tensor} has {len(shape)} modes (shape {shape}) but is used as {access}"
            )
        for mode, (index, size) in enumerate(zip(access.indices, shape, strict=True)):
            if index.name in sizes and sizes[index.name][0] != size:
                known, tensor, known_mode = sizes[index.name]
                raise ValueError(
                    f"size mismatch for index {index}: {tensor} has size {known} at mode {known_mode} "
                    f"but {access.tensor} has size {size} at mode {mode} ({access})"
                )
            sizes.setdefault(index.name, (size, access.tensor, mode))
    return {name: size for name, (size, _, _) in sizes.items()}


def _result_dtype(inputs: dict[str, Any]) -> np.dtype:
    dtypes = []
    for obj in inputs.values():
        dtype = to_numpy(obj.values).dtype if isinstance(obj, SparseTensor) else None
        if dtype is None:
            dtype = getattr(obj, "dtype", None)
            if _is_torch(obj):
                import torch

                dtype = {torch.float64: np.float64, torch.float32: np.float32}.get(dtype, np.float32)
        dtypes.append(np.dtype(dtype) if dtype is not None else np.dtype(np.float64))
    result = np.result_type(*dtypes) if dtypes else np.dtype(np.float64)
    if result.kind != "f" or result.itemsize < 4:
        result = np.dtype(np.float64) if result.kind in "iub" else np.dtype(np.float32)
    return result


def _driver_structure(storage: SparseTensor, expanded: bool, fmt: str) -> DriverStructure:
    """The driver's coordinates (and pointers) in the kernel's layout, cached on the storage's
    structure: a repeat call, or a `with_values` tensor, reuses them."""
    key = ("driver_structure", expanded, fmt)
    cache = storage._cache
    if key in cache:
        return cache[key]
    take = None
    source = storage
    if expanded and isinstance(storage, SymmetricTensor):
        source, take = storage.expansion()
    # Unsigned coordinates spare numba the negative-index wraparound check on every access
    # (about 1.7x on SpMV); below 2**31 they are also valid int32 bits for Triton.
    index_dtype = np.uint32 if max(source.shape, default=0) < 2**31 else np.int64
    coords = tuple(np.ascontiguousarray(source.indices[m], dtype=index_dtype) for m in range(source.ndim))
    pointers = None
    if fmt == "csr":
        pointers = np.zeros(source.shape[0] + 1, dtype=np.int64)
        np.cumsum(np.bincount(source.indices[0], minlength=source.shape[0]), out=pointers[1:])
    n_expanded = storage.n_expanded if isinstance(storage, SymmetricTensor) else storage.nnz
    structure = cache[key] = DriverStructure(coords, pointers, source.nnz, n_expanded, take)
    return structure


def _driver_arrays(name: str, storage: SparseTensor, expanded: bool, fmt: str, dtype) -> DriverArrays:
    """The driver for this call: cached structure, values read now (never cached)."""
    storage.validate(name)  # once per structure: in range, canonical, sorted, unique
    structure = _driver_structure(storage, expanded, fmt)
    values = np.ascontiguousarray(to_numpy(storage.values), dtype=dtype)
    if values.shape != (storage.nnz,):
        raise ValueError(f"{name}: {storage.nnz} stored entries but values of shape {tuple(values.shape)}")
    if structure.take is not None:
        values = values[structure.take]
    return DriverArrays(structure, values)


def _torch_dtype(dtype: np.dtype):
    import torch

    return {np.dtype(np.float64): torch.float64, np.dtype(np.float32): torch.float32}[np.dtype(dtype)]


def _stays_on_device(obj) -> bool:
    """A dense operand that bind(device_tensors=True) keeps as a torch tensor where it is."""
    return _is_cupy(obj) or (_is_torch(obj) and not is_sparse_input(obj))


def _as_device_tensor(obj):
    """A torch view of a dense torch or CuPy operand, on its device (DLPack for CuPy: no copy)."""
    if _is_cupy(obj):
        from .torch_ops import _as_torch

        return _as_torch(obj)
    return obj.detach()


def _cupy_device(obj):
    import torch

    return torch.device("cuda", int(obj.device.id))


def mirror_tensor(tensor, groups):
    """`mirror_in_place` with torch ops on `tensor` (any device, any strides): every entry
    becomes its canonical entry (sorted group coordinates). Returns `tensor`."""
    import torch

    for group in groups:
        front = tensor.movedim(tuple(group), tuple(range(len(group))))  # a view: writes reach `tensor`
        n = front.shape[0]
        if n == 0:
            continue
        axes = torch.meshgrid(*[torch.arange(n, device=tensor.device)] * len(group), indexing="ij")
        grid = torch.stack([a.reshape(-1) for a in axes])
        canonical = grid.sort(dim=0).values
        off = (grid != canonical).any(dim=0)  # only the non-canonical entries are written
        grid, canonical = grid[:, off], canonical[:, off]
        front[tuple(grid)] = front[tuple(canonical)]
    return tensor


def _check_symmetric_tensor(name: str, tensor, groups) -> None:
    """check_symmetric on the device: one scalar comes back; the data only when the check fails
    (to name the offending pair with the host check's message)."""
    import torch

    bad = torch.zeros((), dtype=torch.bool, device=tensor.device)
    for group in groups:
        for p, q in itertools.pairwise(group):
            other = tensor.transpose(p, q)
            agree = tensor == other
            if tensor.is_floating_point():
                agree |= tensor.isnan() & other.isnan()
            bad |= ~agree.all()
    if bool(bad):
        check_symmetric(name, to_numpy(tensor), groups)


def _device_dense(name: str, obj, groups, check: bool, perm, dtype):
    """A dense torch/CuPy operand in the kernel layout: contiguous, `dtype`, on its own device."""
    tensor = _as_device_tensor(obj)
    if groups:
        if check:
            _check_symmetric_tensor(name, tensor, groups)
        tensor = mirror_tensor(tensor.clone(), groups)
    tensor = tensor.to(_torch_dtype(dtype))
    if perm is not None:
        tensor = tensor.permute(tuple(perm))
    return tensor.contiguous().reshape(tuple(tensor.shape) or (1,))


def check_tensor_names(names, given, output: str) -> None:
    """TypeError naming the tensors a call misses or has in excess."""
    missing = [n for n in names if n not in given]
    if missing:
        raise TypeError(f"missing tensor(s) for {output}: {', '.join(missing)}")
    unknown = [n for n in given if n not in names]
    if unknown:
        raise TypeError(f"unexpected tensor(s) {', '.join(unknown)}; the expression uses {', '.join(names)}")


def bind(loops: LoopProgram, program: Program, inputs: dict[str, Any], *, check: bool = True,
         device_tensors: bool = False) -> KernelArgs:
    """Check and convert a call's inputs. `device_tensors` (the Triton backend): dense torch and
    CuPy operands stay on their device as torch tensors; otherwise every array is numpy."""
    einsum = program.einsum
    names = tensors_of(einsum)
    check_tensor_names(names, inputs, einsum.output.tensor)
    sizes = _sizes(program, inputs)
    for tensor, groups in loops.symmetric_inputs:
        shape = shape_of(inputs[tensor])
        for group in groups:
            if len({shape[m] for m in group}) > 1:
                raise ValueError(f"{tensor} is declared symmetric in modes {group} but has shape {shape}")
    for chain in loops.sets:
        if len({sizes[i.name] for i in chain}) > 1:
            detail = ", ".join(f"{i} = {sizes[i.name]}" for i in chain)
            raise ValueError(f"indices {', '.join(map(str, chain))} must have equal sizes to be permuted ({detail})")
    dtype = _result_dtype(inputs)
    reduce = algebra.operator(loops.reduce)
    shapes = {n: shape_of(inputs[n]) for n in names}
    out_shape = tuple(sizes[i.name] for i in einsum.output.indices)
    shapes[einsum.output.tensor] = out_shape

    driver = None
    if loops.driver is not None:
        from .backends.parameters import sparse_loop

        loop = sparse_loop(loops)
        storage = to_storage(loops.driver, inputs[loops.driver], program.groups_of(loops.driver), check,
                             algebra.fill_value(reduce))
        driver = _driver_arrays(loops.driver, storage, loop.expanded, loop.format, dtype)

    dense = {}
    declared = dict(loops.symmetric_inputs)
    for name in loops.dense_inputs:
        if device_tensors and _stays_on_device(inputs[name]):
            dense[name] = _device_dense(name, inputs[name], declared.get(name), check, loops.layout_of(name), dtype)
            continue
        array = densify(name, inputs[name], algebra.fill_value(reduce))
        if name in declared:
            if check:
                check_symmetric(name, array, declared[name])
            array = mirror_canonical(array, declared[name])
        perm = loops.layout_of(name)
        if perm is not None:
            array = array.transpose(perm)
        dense[name] = np.ascontiguousarray(array.reshape(array.shape or (1,)), dtype=dtype)

    perm = loops.layout_of(einsum.output.tensor)
    kernel_shape = tuple(out_shape[m] for m in perm) if perm else out_shape
    # Factors in the value dtype: no integer-to-float conversion per update.
    tables = {t.name: np.array(t.rows, dtype=dtype) for t in loops.tables}
    device = next((obj.device for obj in inputs.values() if _is_torch(obj)), None)
    cupy_output = False
    if device_tensors:
        cupy = [v for obj in inputs.values() for v in (obj, getattr(obj, "values", None)) if _is_cupy(v)]
        cupy_output = bool(cupy)
        if device is None and cupy:
            device = _cupy_device(cupy[0])
    return KernelArgs(dense, driver, shapes, sizes, tables, kernel_shape or (1,), dtype, torch_device=device,
                      cupy_output=cupy_output)


def allocate(args: KernelArgs, loops: LoopProgram, chunks: int, device=None) -> None:
    """The per-chunk accumulation buffers and the chunk boundaries of the outer loop; with a
    torch `device`, the buffers are a torch tensor there (the Triton backend)."""
    from .backends.parameters import sparse_loop

    identity = algebra.operator(loops.reduce).identity
    loop = sparse_loop(loops)
    if loop is None and not _has_loops(loops):
        chunks = 1
    args.chunks = chunks
    args.bounds = args.driver.chunk_bounds(chunks) if args.driver is not None else np.zeros(chunks + 1, np.int64)
    if device is None:
        args.partial = np.full((chunks, *args.out_shape), identity, dtype=args.dtype)
    else:
        import torch

        args.partial = torch.full((chunks, *args.out_shape), identity, dtype=_torch_dtype(args.dtype), device=device)


@functools.lru_cache(maxsize=256)
def _has_loops(loops: LoopProgram) -> bool:
    from .ir.loop import DenseLoop, SparseLoop
    from .ir.traverse import walk

    return any(isinstance(n, DenseLoop | SparseLoop) for n in walk(loops.body))


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


_TORCH_REDUCE = {"add": "sum", "min": "amin", "max": "amax"}


def _finish_tensor(args: KernelArgs, loops: LoopProgram, program: Program, canonical: bool):
    """finish() of a torch output buffer (the Triton backend's, on its device): torch ops only."""
    import torch

    reduce = algebra.operator(loops.reduce)
    partial = args.partial
    # One chunk: its buffer is ours to return; several: reduce them into a new tensor.
    result = getattr(torch, _TORCH_REDUCE[reduce.name])(partial, dim=0) if partial.shape[0] > 1 else partial[0]
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
    if args.torch_device is not None and args.torch_device.type != "cpu":
        tensor = tensor.to(args.torch_device)
    return tensor
