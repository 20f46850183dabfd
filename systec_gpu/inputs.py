"""A call's tensors, normalized in one pass: kinds, dtypes, devices, shapes, symmetry, storage.

Every way into a kernel (`Kernel.__call__`, the torch op, the CLI) binds its tensors here, into
the `KernelArgs` the backends read. What is checked, and where each input kind goes:

- names: every tensor of the expression, nothing else;
- kinds: numpy arrays (and lists, scalars), torch tensors (dense or sparse), CuPy arrays, scipy
  and pydata sparse arrays, `SparseTensor` / `SymmetricTensor`; anything else (None, strings)
  is a TypeError naming the operand;
- dtypes: floating values compute in the widest float given (float16/bfloat16 in float32);
  integers and booleans in float64, refused if an integer does not fit it exactly (> 2**53);
  complex values are refused;
- devices: meta tensors are refused; all torch operands on one device;
- shapes: each index has one size; symmetric modes have equal sizes;
- symmetry: declared symmetry of dense and sparse inputs is checked (`check=True`), or only
  the canonical part is read (`check=False`);
- sparse operands become storage (`SymmetricTensor` for symmetric ones) whose coordinates are
  validated once per structure (in range, canonical, sorted, unique).

Caches (all of them; nothing else in the call path keeps data between calls):
- a storage's structure cache (`SparseTensor._cache`: kernel coordinates, each mode made on
  first use, in the storage's library and, for a device backend, on its device; CSR pointers,
  chunk bounds, device copies of coordinates, the validity check) lives as long as the storage
  and is shared by `with_values` (and by `.to()` when the structure did not move); it never
  holds values;
- conversions of foreign sparse inputs (scipy, pydata, torch sparse, and a numpy-held
  `SparseTensor` given for a symmetric operand; a torch-held one is converted where it lives,
  every call): `_CONVERTED`, keyed weakly by the input object (dropped with it) and reused only
  while the input still holds what was converted. Values are compared byte for byte with copies
  taken at conversion, so values written in place are converted again (and declared symmetry
  checked again). A scipy matrix's structure arrays (indptr, indices, row, col, offsets) are
  compared by identity and its shape by value: new arrays assigned to them, a new nnz or a new
  shape are seen; coordinates written in place into those arrays are not (as for scipy's own
  format flags, `has_sorted_indices` and `has_canonical_format`: give the matrix new arrays).
  Every array of the other kinds is compared byte for byte;
- per kernel, the prepared launches (`runtime.Launch`) and their bind plans: no data; per
  launch, the prepared calls of its last few input signatures (`PreparedBind` and the backend's
  specialized run): they hold the sparse operand's structure (its structure cache, coordinates,
  pointers, device copies of them; never values) and a weak reference to a foreign input's
  conversion.
"""

from __future__ import annotations

import functools
import itertools
import threading
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import algebra
from .arrays import NUMPY, namespace
from .backends.arguments import DriverArrays, DriverStructure, KernelArgs, torch_dtype
from .backends.parameters import sparse_loop
from .dense_symmetry import check_symmetric, mirror_canonical
from .formats import StorageFormat
from .ir.einsum import Program, accesses, tensors_of
from .ir.loop import LoopProgram
from .storage import SparseTensor, SymmetricTensor, _is_torch, csr_pointers_of

# ---------------------------------------------------------------------------------------------
# Input kinds


def _module(obj) -> str:
    return type(obj).__module__.split(".")[0]


def is_cupy(obj) -> bool:
    return _module(obj) == "cupy"


def _is_scipy_sparse(obj) -> bool:
    return type(obj).__module__.startswith("scipy.sparse")


def _is_pydata_sparse(obj) -> bool:
    return _module(obj) == "sparse"


def stored_values(obj):
    """The values an input stores, in its own array kind (no copy, no move off its device): a
    sparse input's stored entries, every entry of a dense one."""
    if isinstance(obj, SparseTensor):
        return obj.values
    if _is_scipy_sparse(obj) or _is_pydata_sparse(obj):
        return obj.data
    if _is_torch(obj):
        import torch

        if obj.layout == torch.sparse_coo:
            return obj._values()
        if obj.layout != torch.strided:  # CSR, CSC, BSR, BSC
            return obj.values()
        return obj
    return obj if hasattr(obj, "shape") else np.asarray(obj)


def check_values(program: Program, tensors: Mapping[str, Any]) -> None:
    """Every operand's values lie in the declared domain (`compile(..., values=)`): its semiring
    is exact only there. Stored values of sparse operands; nan passes (it propagates)."""
    domain = algebra.DOMAINS[program.einsum.values]
    if domain.name == "real":
        return
    for name, tensor in tensors.items():
        outside = domain.count_outside(stored_values(tensor))
        if outside:
            raise ValueError(f"{name}: {outside} value(s) outside the declared values={domain.name!r} "
                             f"(the kernel's semiring {program.einsum.semiring} is exact only there)")


def is_sparse_input(obj) -> bool:
    if isinstance(obj, SparseTensor) or _is_scipy_sparse(obj) or _is_pydata_sparse(obj):
        return True
    if _is_torch(obj):
        import torch

        return obj.layout != torch.strided
    return False


def _refuse_kind(name: str, obj) -> None:
    """TypeError/ValueError for inputs that are not tensors at all, or hold no data."""
    if obj is None or isinstance(obj, str | bytes | Mapping | set):
        raise TypeError(f"{name}: expected an array or tensor (numpy, torch, CuPy, scipy/pydata sparse, "
                        f"SparseTensor), got {type(obj).__name__} {obj!r:.40}")
    if _is_torch(obj) and obj.device.type == "meta":
        raise ValueError(f"{name} is a meta tensor (shape {tuple(obj.shape)}, no data): kernels need values")


def to_numpy(obj) -> np.ndarray:
    """A host numpy view (or copy) of a dense input; float16/bfloat16 torch as float32."""
    if _is_torch(obj):
        import torch

        tensor = obj.detach()
        if tensor.dtype in (torch.bfloat16, torch.float16):
            tensor = tensor.float()
        return tensor.cpu().resolve_conj().numpy()
    if is_cupy(obj):
        return obj.get()
    return np.asarray(obj)


def shape_of(obj) -> tuple[int, ...]:
    return tuple(int(s) for s in obj.shape) if hasattr(obj, "shape") else np.shape(obj)


def as_torch(obj):
    """A torch tensor of a dense input: torch as is, CuPy by DLPack (no copy), numpy shared."""
    import torch

    if isinstance(obj, torch.Tensor):
        return obj
    if is_cupy(obj):
        return torch.from_dlpack(obj)
    return torch.from_numpy(np.ascontiguousarray(obj))


# ---------------------------------------------------------------------------------------------
# Dtypes

_EXACT_INTEGER = 2**53  # float64 holds every integer of at most this magnitude


def value_dtype(name: str, obj) -> np.dtype:
    """The numpy dtype of an input's values (torch float16/bfloat16 report float16); TypeError
    for values no kernel computes with (complex, strings, objects)."""
    if isinstance(obj, SparseTensor):
        obj = obj.values
    dtype = getattr(obj, "dtype", None)
    if _is_torch(obj):
        import torch

        if dtype.is_complex:
            dtype = np.dtype(np.complex128)
        elif dtype in (torch.float16, torch.bfloat16):
            return np.dtype(np.float16)
        else:
            return np.dtype(str(dtype).removeprefix("torch."))
    elif dtype is None:
        dtype = np.asarray(obj).dtype
    dtype = np.dtype(dtype)
    kind = dtype.kind
    if kind == "c":
        raise TypeError(f"{name}: complex values are not supported (pass the real and imaginary parts as "
                        "separate real tensors)")
    if kind not in "fiub":
        raise TypeError(f"{name}: values of dtype {dtype} cannot be computed with; give numbers")
    return dtype


def result_dtype(dtypes) -> np.dtype:
    """The compute and result dtype: the widest float given (at least float32); float64 when
    only integers or booleans are given (exact up to 2**53, checked by `exact_in_float64`)."""
    floats = [d for d in dtypes if d.kind == "f"]
    if floats:
        return np.dtype(np.float64) if max(d.itemsize for d in floats) >= 8 else np.dtype(np.float32)
    return np.dtype(np.float64)


def exact_in_float64(name: str, values) -> None:
    """ValueError if 64-bit integer values do not convert to float64 exactly."""
    array = values if isinstance(values, np.ndarray) else None
    if array is None or array.dtype.kind not in "iu" or array.dtype.itemsize < 8 or array.size == 0:
        return
    big = array > _EXACT_INTEGER  # compared as integers: float64 would round 2**53 + 1 down
    if array.dtype.kind == "i":
        big |= array < -_EXACT_INTEGER
    if big.any():
        k = int(np.argmax(big))
        raise ValueError(f"{name}: the integer {int(array.reshape(-1)[k])} does not fit float64 exactly "
                         f"(|value| > 2**53), in which kernels compute integer inputs")


# ---------------------------------------------------------------------------------------------
# Sparse operands as storage

# input object -> (copies of its arrays, how it was converted, the storage): see the module doc.
_CONVERTED = None
_CONVERTED_LOCK = threading.Lock()  # calls of one kernel may come from several threads


def _converted_cache():
    global _CONVERTED
    if _CONVERTED is None:
        from torch.utils.weak import WeakIdKeyDictionary

        _CONVERTED = WeakIdKeyDictionary()
    return _CONVERTED


_SCIPY_STRUCTURE = ("indptr", "indices", "row", "col", "offsets")


def _arrays_of(obj) -> tuple[tuple, tuple]:
    """((name, structure array) pairs, value arrays) that a foreign sparse input's conversion
    depends on. A scipy matrix's structure arrays are compared by identity (reassigned, or a new
    nnz or shape, is seen; written in place is not: see the module doc), its values byte for
    byte; every array of the other kinds byte for byte."""
    if isinstance(obj, SparseTensor):
        return (), (obj.indices, to_numpy(obj.values))
    if _is_scipy_sparse(obj):
        structure = tuple((n, a) for n, a in ((n, getattr(obj, n, None)) for n in _SCIPY_STRUCTURE) if a is not None)
        data = getattr(obj, "data", None)
        return structure, (() if data is None else (np.asarray(data),))
    if _is_pydata_sparse(obj):
        import sparse

        coo = obj if isinstance(obj, sparse.COO) else None
        return (), ((np.asarray(coo.coords), np.asarray(coo.data)) if coo is not None else ())
    if _is_torch(obj):
        import torch

        if obj.layout == torch.sparse_coo:
            return (), (to_numpy(obj._indices()), to_numpy(obj._values()))
        if obj.layout in (torch.sparse_csr, torch.sparse_bsr):
            return (), (to_numpy(obj.crow_indices()), to_numpy(obj.col_indices()), to_numpy(obj.values()))
        if obj.layout in (torch.sparse_csc, torch.sparse_bsc):
            return (), (to_numpy(obj.ccol_indices()), to_numpy(obj.row_indices()), to_numpy(obj.values()))
    return (), ()


def _convert(name: str, obj, groups, check: bool) -> SparseTensor:
    if isinstance(obj, SparseTensor):
        return SymmetricTensor.from_coo(obj.indices, obj.values, obj.shape, groups, check=check, name=name)
    from .io.convert import as_sparse_tensor

    return as_sparse_tensor(obj, symmetric=list(groups) if groups else False, check=check, name=name)


_SMALL = 1 << 16  # arrays up to this many bytes are kept and compared as bytes (no numpy call's fixed cost)


def _copy_of(a: np.ndarray):
    """What `_same_bits` compares `a` with later: its bytes (small arrays) or a copy."""
    return (a.dtype, a.shape, a.tobytes()) if a.nbytes <= _SMALL else np.array(a, copy=True)


def _same_bits(a: np.ndarray, copy) -> bool:
    """Whether an array holds the same bytes (NaN payloads included) as when `_copy_of` copied
    it: small arrays as bytes, large ones through unsigned integer views (compared fastest)."""
    if type(copy) is tuple:
        dtype, shape, data = copy
        return a.shape == shape and a.dtype == dtype and a.tobytes() == data
    if a.shape != copy.shape or a.dtype != copy.dtype:
        return False
    unsigned = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}.get(a.dtype.itemsize)
    if unsigned is not None and a.flags.c_contiguous and copy.flags.c_contiguous:
        return bool(np.array_equal(a.view(unsigned), copy.view(unsigned)))
    return bool(np.array_equal(a, copy, equal_nan=a.dtype.kind == "f"))


@dataclass(frozen=True)
class _Conversion:
    """A foreign sparse input's conversion, as `_CONVERTED` keeps it (see the module doc)."""

    how: tuple  # (groups, check, name)
    kind: type
    shape: tuple
    structure: tuple  # (attribute, the input's structure array) pairs (held: identity is compared)
    copies: tuple  # copies of its other arrays (bytes are compared)
    storage: SparseTensor

    def holds(self, obj, how) -> bool:
        """Whether `obj`, converted `how`, is still what was converted (its arrays unchanged)."""
        if how != self.how or type(obj) is not self.kind or tuple(obj.shape) != self.shape:
            return False
        for name, array in self.structure:
            if getattr(obj, name) is not array:
                return False
        if self.structure:  # scipy: the data array only
            data = obj.data
            return len(self.copies) == 1 and _same_bits(data if type(data) is np.ndarray else np.asarray(data),
                                                        self.copies[0])
        arrays = _arrays_of(obj)[1]
        return len(arrays) == len(self.copies) and all(
            _same_bits(a, c) for a, c in zip(arrays, self.copies, strict=True))


def _converted(name: str, obj, groups, check: bool) -> SparseTensor:
    """`_convert`, reused while the input's arrays are unchanged (weakly keyed by the input)."""
    return _conversion(name, obj, groups, check).storage


def _conversion(name: str, obj, groups, check: bool) -> _Conversion:
    cache = _converted_cache()
    how = (tuple(groups), check, name)
    with _CONVERTED_LOCK:
        found = cache.get(obj)
    if found is not None and found.holds(obj, how):
        return found
    structure, arrays = _arrays_of(obj)
    entry = _Conversion(how, type(obj), tuple(obj.shape), structure, tuple(_copy_of(a) for a in arrays),
                        _convert(name, obj, groups, check))
    if structure or arrays:
        with _CONVERTED_LOCK:
            cache[obj] = entry
    return entry


def to_storage(name: str, obj, groups, check: bool, fill: float = 0.0) -> SparseTensor:
    """An input for a sparse operand as storage: SymmetricTensor when `groups` is non-empty.

    A dense array keeps every entry that differs from `fill`, the semiring's value of an unstored
    entry (0 under +=, +inf under min=): a dense zero is a real entry for min=/max=. A sparse
    input's unstored entries are `fill`. Torch and CuPy inputs are built with torch where they
    live (no host round trip); numpy ones with numpy."""
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
        if _is_torch(obj.indices):  # converted where it lives, every call: no host copies to compare
            return _convert(name, obj, groups, check)
        return _converted(name, obj, groups, check)
    if is_sparse_input(obj):
        return _converted(name, obj, groups, check)
    _refuse_kind(name, obj)
    dense = as_torch(obj) if _is_torch(obj) or is_cupy(obj) else to_numpy(obj)
    if groups:
        return SymmetricTensor.from_dense(dense, groups, check=check, fill=fill, name=name)
    return SparseTensor.from_dense(dense, fill=fill)


def densify(name: str, obj, fill: float) -> np.ndarray:
    """Dense numpy array of an input; entries a sparse input does not store hold `fill`."""
    if not is_sparse_input(obj):
        return to_numpy(obj)
    storage = to_storage(name, obj, (), check=False)
    values = to_numpy(storage.values)
    dense = np.full(storage.shape, fill, dtype=np.result_type(values.dtype, np.float32))
    dense[tuple(to_numpy(storage.indices))] = values
    return dense


def stored_mask(name: str, obj, groups, perm, fill: float, on_device: bool = False):
    """The mask (uint8, 1: stored) of the entries an input for a sparse operand stores, in the
    kernel layout of its densified values (`groups`: mirrored from the canonical part as the values
    are; `perm`: its mode permutation): a sparse input's stored entries (every permutation of a
    symmetric one's), a dense array's entries that differ from `fill` (what `to_storage` keeps: a
    nan is stored). `on_device`: a dense torch/CuPy input kept where it lives, the mask beside it."""
    if on_device:
        import torch

        mask = (as_torch(obj).detach() != fill).to(torch.uint8)
        if groups:
            mask = mirror_tensor(mask, groups)
        if perm is not None:
            mask = mask.permute(tuple(perm))
        return mask.contiguous().reshape(tuple(mask.shape) or (1,))
    if is_sparse_input(obj):
        storage = to_storage(name, obj, (), check=False)
        mask = np.zeros(storage.shape, dtype=np.uint8)
        mask[tuple(to_numpy(storage.indices))] = 1
    else:
        mask = (to_numpy(obj) != fill).astype(np.uint8)
    if groups is not None:
        mask = mirror_canonical(mask, groups)
    if perm is not None:
        mask = mask.transpose(perm)
    return np.ascontiguousarray(mask.reshape(mask.shape or (1,)))


class _KernelCoords(Sequence):
    """A driver's coordinates in the kernel's index dtype, one array per mode, each made on first
    use: a mode no kernel reads (mode 0 of a CSR driver under Numba, which walks the pointers)
    costs no copy."""

    def __init__(self, make, ndim: int):
        self._make, self._made = make, [None] * ndim
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._made)

    def __getitem__(self, mode):
        if isinstance(mode, slice):
            return [self[m] for m in range(len(self))[mode]]
        if self._made[mode] is None:
            with self._lock:
                if self._made[mode] is None:
                    self._made[mode] = self._make(mode)
        return self._made[mode]


def _on_accelerator(storage: SparseTensor) -> bool:
    """Whether the storage's structure is held by torch on a device other than the CPU."""
    return _is_torch(storage.indices) and storage.indices.device.type != "cpu"


def _driver_structure(storage: SparseTensor, expanded: bool, fmt: StorageFormat,
                      on_device: bool = False) -> DriverStructure:
    """The driver's coordinates (and pointers) in the kernel's layout, cached on the storage's
    structure: a repeat call, or a `with_values` tensor, reuses them. Computed in the storage's
    library; `on_device` (device backends, storage on an accelerator): left there as int32/int64
    torch tensors; otherwise numpy on the host (views of CPU tensors, copies of device ones)."""
    key = ("driver_structure", expanded, fmt.row_pointers, str(storage.indices.device) if on_device else "host")
    cache = storage._cache
    if key in cache:
        return cache[key]
    xp = namespace(storage.indices)
    # Unsigned coordinates spare numba the negative-index wraparound check on every access
    # (about 1.7x on SpMV); below 2**31 they are also valid int32 bits for Triton, and int32 is
    # what device tensors hold (torch has no full uint32 support).
    wide = max(storage.shape, default=0) >= 2**31
    index = xp.int64 if wide else xp.int32
    take = None
    if expanded and isinstance(storage, SymmetricTensor):
        # Built in the kernel's index dtype directly: no int64 expansion is kept.
        rows, take = storage.expanded_coordinates(index, xp.int32 if storage.nnz < 2**31 else xp.int64, rows=True)
        nnz = int(take.shape[0])
        n_expanded = nnz
    else:
        rows = [storage.indices[m] for m in range(storage.ndim)]
        nnz = storage.nnz
        n_expanded = storage.n_expanded if isinstance(storage, SymmetricTensor) else nnz
    pointers = None
    if fmt.row_pointers:
        pointers = csr_pointers_of(rows[0], storage.shape[0])
        if take is not None:
            rows[0] = None  # a kernel that wants a row per nonzero expands the pointers
    made_here = take is not None

    def host(array):
        return array if on_device else xp.to_host(array)

    def make(mode: int):
        row = rows[mode]
        if row is None:
            counts = pointers[1:] - pointers[:-1]
            row = xp.astype(xp.arange(storage.shape[0]).repeat_interleave(counts) if xp is not NUMPY
                            else np.repeat(np.arange(storage.shape[0]), counts), index)
        elif not made_here:
            row = xp.astype(row, index)  # the kernel's copy of a storage row
        row = host(row)
        return row.view(np.uint32) if not on_device and not wide else row

    structure = cache[key] = DriverStructure(_KernelCoords(make, storage.ndim),
                                             None if pointers is None else host(pointers),
                                             nnz, n_expanded, None if take is None else host(take))
    return structure


def driver_arrays(name: str, storage: SparseTensor, expanded: bool, fmt: StorageFormat, dtype,
                  device_tensors: bool = False) -> DriverArrays:
    """The driver for this call: cached structure, values read now (never cached). With
    `device_tensors` (device backends) a structure on an accelerator stays there, and so do its
    values."""
    storage.validate(name)  # once per structure: in range, canonical, sorted, unique
    on_device = device_tensors and _on_accelerator(storage)
    structure = _driver_structure(storage, expanded, fmt, on_device)
    if on_device:
        values = _device_values(name, storage, dtype)
    else:
        raw = to_numpy(storage.values)
        exact_in_float64(name, raw)
        values = np.ascontiguousarray(raw, dtype=dtype)
    if tuple(values.shape) != (storage.nnz,):
        raise ValueError(f"{name}: {storage.nnz} stored entries but values of shape {tuple(values.shape)}")
    if structure.take is not None:
        values = values.index_select(0, structure.take) if on_device else values[structure.take]
    return DriverArrays(structure, values)


def _device_values(name: str, storage: SparseTensor, dtype):
    """A storage's values as a torch tensor in `dtype` on its structure's device (read detached)."""
    import torch

    values = as_torch(storage.values).detach()
    if values.device != storage.indices.device:
        values = values.to(storage.indices.device)
    if values.dtype == torch.int64 and bool(((values > _EXACT_INTEGER) | (values < -_EXACT_INTEGER)).any()):
        exact_in_float64(name, to_numpy(values))  # raises, naming the value
    return values.to(operand_dtype(values.dtype, dtype)).contiguous()


# ---------------------------------------------------------------------------------------------
# Dense operands on a device (the Triton backend): torch ops, no host round trip


def mirror_tensor(tensor, groups):
    """`mirror_in_place` with torch ops on `tensor` (any device, any strides): every entry
    becomes its canonical entry (sorted group coordinates). Returns `tensor`."""
    import torch

    for group in groups:
        front = tensor.movedim(tuple(group), tuple(range(len(group))))  # a view: writes reach `tensor`
        n = front.shape[0]
        if n == 0:
            continue
        if len(group) == 2:
            _mirror_pair_tensor(front)
            continue
        axes = torch.meshgrid(*[torch.arange(n, device=tensor.device)] * len(group), indexing="ij")
        grid = torch.stack([a.reshape(-1) for a in axes])
        canonical = grid.sort(dim=0).values
        off = (grid != canonical).any(dim=0)  # only the non-canonical entries are written
        grid, canonical = grid[:, off], canonical[:, off]
        front[tuple(grid)] = front[tuple(canonical)]
    return tensor


_MIRROR_ROWS = 256  # rows per step of the pair mirror: few launches, a small diagonal temporary


def _mirror_pair_tensor(front) -> None:
    """front[b, a, ...] = front[a, b, ...] for a < b, in place, with strided block copies: rows
    a0:a1 take their strictly-left part from the (canonical, untouched) columns a0:a1 of the rows
    above, and their diagonal block from its own transpose. Each lower entry is written once and
    no index tensor is built (the general path below gathers through n^2 coordinates)."""
    import torch

    n = front.shape[0]
    for a0 in range(0, n, _MIRROR_ROWS):
        a1 = min(a0 + _MIRROR_ROWS, n)
        if a0:
            front[a0:a1, :a0] = front[:a0, a0:a1].transpose(0, 1)  # disjoint from its source
        block = front[a0:a1, a0:a1]
        rows = torch.arange(a1 - a0, device=front.device)
        below = (rows[:, None] > rows[None, :]).reshape(a1 - a0, a1 - a0, *([1] * (front.ndim - 2)))
        block.copy_(torch.where(below, block.transpose(0, 1), block))


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


def _stays_on_device(obj) -> bool:
    """A dense operand that a device backend keeps as a torch tensor where it is."""
    return is_cupy(obj) or (_is_torch(obj) and not is_sparse_input(obj))


def _device_dense(name: str, obj, groups, check: bool, perm, dtype):
    """A dense torch/CuPy operand in the kernel layout: contiguous, `dtype`, on its own device."""
    tensor = as_torch(obj).detach()
    if groups:
        if check:
            _check_symmetric_tensor(name, tensor, groups)
        tensor = mirror_tensor(tensor.clone(), groups)
    tensor = tensor.to(operand_dtype(tensor.dtype, dtype))
    if perm is not None:
        tensor = tensor.permute(tuple(perm))
    return tensor.contiguous().reshape(tuple(tensor.shape) or (1,))


def operand_dtype(given, dtype: np.dtype):
    """The torch dtype a device kernel reads an operand in: float16/bfloat16 as given when the
    kernel accumulates in a wider float (the kernel widens each value where it loads it: half
    the bytes read), everything else in the compute dtype."""
    import torch

    if given in (torch.float16, torch.bfloat16) and np.dtype(dtype).itemsize >= 4:
        return given
    return torch_dtype(dtype)


# ---------------------------------------------------------------------------------------------
# Binding


def check_tensor_names(names, given, output: str) -> None:
    """TypeError naming the tensors a call misses or has in excess."""
    missing = [n for n in names if n not in given]
    if missing:
        raise TypeError(f"missing tensor(s) for {output}: {', '.join(missing)}")
    unknown = [n for n in given if n not in names]
    if unknown:
        raise TypeError(f"unexpected tensor(s) {', '.join(unknown)}; the expression uses {', '.join(names)}")


@dataclass
class BindPlan:
    """What binding needs of a kernel, computed once per loop program: no data."""

    names: tuple[str, ...]
    name_set: frozenset[str]
    output: str
    ndims: dict  # tensor -> its number of modes in the expression
    size_sources: tuple  # (index name, tensor, mode, access text) per access mode, in order
    symmetric_shapes: tuple  # (tensor, group) whose modes must have equal sizes
    permutable_sets: tuple  # tuples of index names that must have equal sizes
    dense_inputs: tuple[str, ...]
    declared: dict  # dense tensor -> its declared groups
    layouts: dict  # tensor -> permutation of its modes in the kernel, or None
    out_indices: tuple[str, ...]
    fill: float
    driver: str | None
    driver_groups: tuple
    driver_expanded: bool
    driver_format: StorageFormat | None
    tables: dict = field(default_factory=dict)  # dtype -> factor tables in that dtype
    stored_inputs: tuple[str, ...] = ()  # dense reads guarded by membership: their masks are bound


@functools.lru_cache(maxsize=256)
def bind_plan(loops: LoopProgram, program: Program) -> BindPlan:
    einsum = program.einsum
    names = tensors_of(einsum)
    ndims, sources = {}, []
    for access in accesses(einsum.rhs):
        ndims.setdefault(access.tensor, len(access.indices))
        for mode, index in enumerate(access.indices):
            sources.append((index.name, access.tensor, mode, str(access)))
    loop = sparse_loop(loops) if loops.driver is not None else None
    return BindPlan(
        names=tuple(names),
        name_set=frozenset(names),
        output=einsum.output.tensor,
        ndims=ndims,
        size_sources=tuple(sources),
        symmetric_shapes=tuple((t, g) for t, groups in loops.symmetric_inputs for g in groups),
        permutable_sets=tuple(tuple(i.name for i in chain) for chain in loops.sets),
        dense_inputs=tuple(loops.dense_inputs),
        declared=dict(loops.symmetric_inputs),
        layouts={n: loops.layout_of(n) for n in (*names, einsum.output.tensor)},
        out_indices=tuple(i.name for i in einsum.output.indices),
        fill=algebra.fill_value(algebra.operator(loops.reduce)),
        driver=loops.driver,
        driver_groups=program.groups_of(loops.driver) if loops.driver is not None else (),
        driver_expanded=loop.expanded if loop is not None else False,
        driver_format=loop.format if loop is not None else None,
        stored_inputs=tuple(loops.stored_inputs),
    )


def _sizes(plan: BindPlan, shapes: dict[str, tuple[int, ...]]) -> dict[str, int]:
    for name, ndim in plan.ndims.items():
        if len(shapes[name]) != ndim:
            access = next(text for _, t, _, text in plan.size_sources if t == name)
            raise ValueError(f"{name} has {len(shapes[name])} modes (shape {shapes[name]}) but is used as {access}")
    sizes: dict[str, int] = {}
    where: dict[str, tuple[str, int]] = {}
    for index, tensor, mode, text in plan.size_sources:
        size = shapes[tensor][mode]
        known = sizes.setdefault(index, size)
        if known != size:
            first, first_mode = where[index]
            raise ValueError(f"size mismatch for index {index}: {first} has size {known} at mode {first_mode} "
                             f"but {tensor} has size {size} at mode {mode} ({text})")
        where.setdefault(index, (tensor, mode))
    return sizes


def _device_of(obj):
    """The torch device of an input (its values' for storage), or None for host arrays."""
    if isinstance(obj, SparseTensor):
        obj = obj.values
    return obj.device if _is_torch(obj) else None


def bind(loops: LoopProgram, program: Program, inputs: dict[str, Any], *, check: bool = True,
         device_tensors: bool = False, plan: BindPlan | None = None, accumulate=None) -> KernelArgs:
    """Check and convert a call's inputs (see the module doc). `device_tensors` (device backends):
    dense torch and CuPy operands stay on their device as torch tensors; otherwise every array is
    numpy on the host. `plan`: bind_plan(loops, program), given by a prepared launch.
    `accumulate`: the compute and result dtype (float32 or float64), instead of the widest
    float given."""
    plan = plan or bind_plan(loops, program)
    if inputs.keys() != plan.name_set:
        check_tensor_names(plan.names, inputs, plan.output)
    shapes, dtypes, device, cupy = {}, [], None, None
    for name in plan.names:  # one pass: kind, shape, dtype, device
        obj = inputs[name]
        if type(obj) is np.ndarray:  # the common case, first
            shapes[name] = obj.shape
            dtypes.append(value_dtype(name, obj))
            continue
        _refuse_kind(name, obj)
        shapes[name] = shape_of(obj)
        dtypes.append(value_dtype(name, obj))
        if device is None:
            device = _device_of(obj)
        if cupy is None and (is_cupy(obj) or is_cupy(getattr(obj, "values", None))):
            cupy = obj if is_cupy(obj) else obj.values
    sizes = _sizes(plan, shapes)
    for tensor, group in plan.symmetric_shapes:
        shape = shapes[tensor]
        if len({shape[m] for m in group}) > 1:
            raise ValueError(f"{tensor} is declared symmetric in modes {group} but has shape {shape}")
    for chain in plan.permutable_sets:
        if len({sizes[i] for i in chain}) > 1:
            detail = ", ".join(f"{i} = {sizes[i]}" for i in chain)
            raise ValueError(f"indices {', '.join(chain)} must have equal sizes to be permuted ({detail})")
    dtype = result_dtype(dtypes) if accumulate is None else np.dtype(accumulate)
    out_shape = tuple(sizes[i] for i in plan.out_indices)
    shapes[plan.output] = out_shape

    driver = None
    if plan.driver is not None:
        storage = to_storage(plan.driver, inputs[plan.driver], plan.driver_groups, check, plan.fill)
        driver = driver_arrays(plan.driver, storage, plan.driver_expanded, plan.driver_format, dtype,
                               device_tensors)

    dense = {}
    for name in plan.dense_inputs:
        obj = inputs[name]
        groups = plan.declared.get(name)
        perm = plan.layouts[name]
        if device_tensors and _stays_on_device(obj):
            dense[name] = _device_dense(name, obj, groups, check, perm, dtype)
            continue
        if type(obj) is np.ndarray and groups is None and perm is None and obj.dtype == dtype and obj.ndim \
                and obj.flags.c_contiguous:
            dense[name] = obj  # already in the kernel's layout: no copy
            continue
        array = densify(name, obj, plan.fill)
        exact_in_float64(name, array)
        if groups is not None:
            if check:
                check_symmetric(name, array, groups)
            array = mirror_canonical(array, groups)
        if perm is not None:
            array = array.transpose(perm)
        dense[name] = np.ascontiguousarray(array.reshape(array.shape or (1,)), dtype=dtype)

    stored = {name: stored_mask(name, inputs[name], plan.declared.get(name), plan.layouts[name], plan.fill,
                                device_tensors and _stays_on_device(inputs[name]))
              for name in plan.stored_inputs}

    perm = plan.layouts[plan.output]
    kernel_shape = tuple(out_shape[m] for m in perm) if perm else out_shape
    tables = plan.tables.get(dtype)
    if tables is None:
        # Factors in the value dtype: no integer-to-float conversion per update.
        tables = plan.tables[dtype] = {t.name: np.array(t.rows, dtype=dtype) for t in loops.tables}
    cupy_output = device_tensors and cupy is not None
    if cupy_output and device is None:
        import torch

        device = torch.device("cuda", int(cupy.device.id))
    return KernelArgs(dense, driver, shapes, sizes, tables, kernel_shape or (1,), dtype, torch_device=device,
                      cupy_output=cupy_output, stored=stored)


# ---------------------------------------------------------------------------------------------
# Repeat calls: binding specialized to one input signature


def signature_key(plan: BindPlan, inputs: dict[str, Any], check: bool) -> tuple:
    """The key a call's `PreparedBind` is found by: `check` and the sparse operand's structure
    (a storage's structure cache, shared by `with_values`; a foreign input itself). The prepared
    bind verifies the rest."""
    if plan.driver is None:
        return (check, None)
    obj = inputs.get(plan.driver)
    return (check, id(obj._cache) if isinstance(obj, SparseTensor) else id(obj))


def structure_of(plan: BindPlan, inputs: dict[str, Any]):
    """What `signature_key` knows the sparse operand's structure by: a storage's structure cache,
    or a foreign input itself; None without a sparse operand."""
    if plan.driver is None:
        return None
    obj = inputs.get(plan.driver)
    return obj._cache if isinstance(obj, SparseTensor) else obj


class PreparedBind:
    """`bind` for calls that look like one call already bound: the same kinds, dtypes, shapes and
    layouts of the dense operands, the same `check`, and a sparse operand with the same structure
    (a storage sharing the structure, as `with_values` gives, or the same foreign input still
    holding its converted arrays: see the module doc). What `bind` checked and derived from these
    (sizes, compute dtype, equal sizes of symmetric modes, the driver's validated structure,
    factor tables) is reused; a call binds its dense arrays and reads its sparse values (values
    are never cached), nothing else. A call that does not match gets None (and goes to `bind`).

    Only plain signatures are prepared (`prepare_bind` gives None otherwise): dense operands that
    are numpy arrays (any backend), or torch tensors (device backends), already in the kernel's
    dtype and layout (contiguous; not declared symmetric: those are checked on every call), and a
    sparse operand with float values: numpy storage, torch storage read on the host (float32 or
    float64 values on the CPU), torch storage a device backend reads where it lives (values in
    the dtype the kernel reads), or a scipy matrix. A prepared bind holds the sparse operand's
    structure (never its values) and a weak reference to a foreign input's conversion."""

    __slots__ = ("_names", "_numpy_dense", "_torch_dense", "_driver", "_storage", "_conversion", "_values",
                 "_structure", "_shapes", "_sizes", "_tables", "_out_shape", "_dtype", "_device")

    def __init__(self, plan: BindPlan, numpy_dense: tuple, torch_dense: tuple, storage: tuple | None,
                 conversion, values: tuple | None, structure, args: KernelArgs):
        self._names, self._driver = plan.name_set, plan.driver
        self._numpy_dense, self._torch_dense = numpy_dense, torch_dense
        self._storage, self._conversion = storage, conversion
        self._values, self._structure = values, structure  # values: (kind, dtype, shape, device)
        self._shapes, self._sizes, self._tables = args.shapes, args.sizes, args.tables
        self._out_shape, self._dtype, self._device = args.out_shape, args.dtype, args.torch_device

    def __call__(self, inputs: dict[str, Any]) -> KernelArgs | None:
        if inputs.keys() != self._names:
            return None
        dense = {}
        for name, shape, dtype in self._numpy_dense:
            obj = inputs[name]
            if type(obj) is not np.ndarray or obj.shape != shape or obj.dtype != dtype or not obj.flags.c_contiguous:
                return None
            dense[name] = obj
        for name, kind, layout, shape, dtype, device in self._torch_dense:
            obj = inputs[name]
            if (type(obj) is not kind or obj.layout != layout or obj.shape != shape or obj.dtype != dtype
                    or obj.device != device or obj.requires_grad or not obj.is_contiguous()):
                return None
            dense[name] = obj
        driver = None
        if self._driver is not None:
            values = self._driver_values(inputs[self._driver])
            if values is None:
                return None
            driver = DriverArrays(self._structure, values)
        return KernelArgs(dense, driver, self._shapes, self._sizes, self._tables, self._out_shape, self._dtype,
                          torch_device=self._device)

    def _driver_values(self, obj):
        if self._storage is not None:  # a storage: the same structure, its values now
            kind, cache, indices, groups = self._storage
            if type(obj) is not kind or obj._cache is not cache or obj.indices is not indices or (
                    groups and obj.groups != groups):
                return None
            raw = obj.values
        else:  # a foreign input: its conversion, while it holds
            conversion = self._conversion()
            if conversion is None or not conversion.holds(obj, conversion.how):
                return None
            raw = conversion.storage.values
        kind, dtype, shape, device, where = self._values
        if type(raw) is not kind or raw.dtype != dtype or raw.shape != shape:
            return None
        take = self._structure.take
        if where != "numpy" and (raw.device != device or raw.requires_grad or not raw.is_contiguous()):
            return None
        if where == "device":  # torch storage on the device: its values stay there, in the kernel's dtype
            return raw if take is None else raw.index_select(0, take)
        values = np.ascontiguousarray(raw if where == "numpy" else raw.numpy(), dtype=self._dtype)
        return values if take is None else values[take]


def prepare_bind(plan: BindPlan, inputs: dict[str, Any], args: KernelArgs, *, check: bool,
                 device_tensors: bool) -> PreparedBind | None:
    """The `PreparedBind` of a call that `bind` bound into `args`, or None when its signature is
    not one that is prepared (see PreparedBind)."""
    if args.cupy_output or plan.stored_inputs:
        return None  # stored_inputs: masks derived from values, made by `bind` on every call
    numpy_dense, torch_dense = [], []
    for name in plan.dense_inputs:
        obj, bound = inputs[name], args.dense[name]
        if type(obj) is np.ndarray and bound is obj:
            numpy_dense.append((name, obj.shape, obj.dtype))
        elif (device_tensors and _is_torch(obj) and _is_torch(bound) and not obj.requires_grad
              and obj.layout == bound.layout and obj.is_contiguous() and bound.shape == obj.shape
              and bound.dtype == obj.dtype and bound.device == obj.device and bound.data_ptr() == obj.data_ptr()):
            torch_dense.append((name, type(obj), obj.layout, obj.shape, obj.dtype, obj.device))  # as it is: no copy
        else:
            return None
    storage_key = conversion = values = structure = None
    if plan.driver is not None:
        obj = inputs[plan.driver]
        if isinstance(obj, SparseTensor):
            if to_storage(plan.driver, obj, plan.driver_groups, check, plan.fill) is not obj:
                return None  # converted (regrouped, expanded) on every call
            storage = obj
            storage_key = (type(obj), obj._cache, obj.indices, tuple(plan.driver_groups))
        elif _is_scipy_sparse(obj):
            with _CONVERTED_LOCK:
                found = _converted_cache().get(obj)
            if found is None or found.how != (tuple(plan.driver_groups), check, plan.driver):
                return None
            storage, conversion = found.storage, weakref.ref(found)
        else:
            return None
        raw = storage.values
        on_device = device_tensors and _on_accelerator(storage)
        if type(raw) is np.ndarray and type(storage.indices) is np.ndarray and raw.dtype.kind == "f":
            values = (np.ndarray, raw.dtype, raw.shape, None, "numpy")
        elif _is_torch(raw) and _is_torch(storage.indices) and raw.dtype.is_floating_point and not on_device:
            if raw.device.type != "cpu" or raw.dtype not in (torch_dtype(np.float32), torch_dtype(np.float64)):
                return None  # half values are widened, device values copied: by `bind`
            values = (type(raw), raw.dtype, raw.shape, raw.device, "host")
        elif on_device and _is_torch(raw) and raw.device == storage.indices.device \
                and raw.dtype == operand_dtype(raw.dtype, args.dtype):
            values = (type(raw), raw.dtype, raw.shape, raw.device, "device")
        else:
            return None
        storage.validate(plan.driver)
        structure = _driver_structure(storage, plan.driver_expanded, plan.driver_format, on_device)
    elif not numpy_dense and not torch_dense:
        return None
    return PreparedBind(plan, tuple(numpy_dense), tuple(torch_dense), storage_key, conversion, values, structure,
                        args)
