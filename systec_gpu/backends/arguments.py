"""A call's bound arguments, as every backend receives them (`KernelArgs`), and its output buffers.

Built by the runtime (`systec_gpu/inputs.py` binds, `runtime.py` finishes); backends only read
them and fill `args.partial`. Nothing here imports a backend or the runtime.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import algebra
from ..ir.loop import DenseLoop, Extent, LoopProgram, SparseLoop
from ..ir.traverse import walk
from .parameters import sparse_loop

if TYPE_CHECKING:
    import torch


@dataclass
class DriverStructure:
    """What a kernel needs of a sparse driver's structure: cached on the storage's structure (its
    `_cache`, shared by `with_values`), never holding values."""

    # One per mode of the driver access, in the kernel's index dtype, each made on first use
    # (a sequence): numpy on the host (uint32 below 2**31), or int32/int64 torch tensors on the
    # storage's device when a device backend reads storage held there. The arrays below follow.
    coords: Sequence
    pointers: np.ndarray | torch.Tensor | None  # CSR row pointers over mode 0 (format "csr")
    nnz: int
    n_expanded: int  # nonzeros of the fully expanded tensor (for work statistics)
    take: np.ndarray | torch.Tensor | None  # expanded drivers: position of each entry's canonical value
    bounds: dict = field(default_factory=dict)
    # Arrays of other formats derived from these coordinates (formats/, e.g. CSF levels), by format.
    levels: dict = field(default_factory=dict, repr=False)
    # Device copies of the coordinates (the Triton backend's): (what, device) -> (source, copy).
    device_copies: dict = field(default_factory=dict, repr=False)


@dataclass
class DriverArrays:
    """A sparse driver bound for one call: its cached structure and this call's values."""

    structure: DriverStructure
    values: np.ndarray | torch.Tensor

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
            pointers = self.pointers
            if pointers is not None and chunks == 1:
                found = np.array([0, len(pointers) - 1], dtype=np.int64)
            elif pointers is not None:
                if not isinstance(pointers, np.ndarray):  # device pointers: a few bounds come back
                    import torch

                    found = torch.searchsorted(pointers, torch.as_tensor(targets, device=pointers.device)).cpu().numpy()
                else:
                    found = np.searchsorted(pointers, targets, side="left")
                found = found.astype(np.int64)
                found[0], found[-1] = 0, len(self.pointers) - 1
            else:
                found = targets
            bounds[chunks] = found
        return bounds[chunks]


@dataclass
class KernelArgs:
    # Kernel layout, contiguous; 0-d tensors as shape (1,). numpy arrays, except for device
    # backends (Triton), where torch (and CuPy) operands are torch tensors on their device.
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
    destination: Any = None  # a caller's preallocated result (`out=`), written by finish
    first_buffer: Any = None  # partial[0], where a backend made that view itself (finish reuses it)
    # masks of the stored entries (uint8, 1 = stored) of the sparse operands read densely whose
    # membership guards updates (LoopProgram.stored_inputs), in the layout of their values
    stored: dict[str, np.ndarray | torch.Tensor] = field(default_factory=dict)

    def extent(self, extent: Extent) -> int:
        return self.shapes[extent.tensor][extent.mode]

    @property
    def out(self) -> np.ndarray | torch.Tensor:
        """The single accumulation buffer of a one-chunk run (the reference interpreter)."""
        assert self.partial is not None and self.partial.shape[0] == 1
        return self.partial[0]


def torch_dtype(dtype: np.dtype):
    import torch

    return {np.dtype(np.float64): torch.float64, np.dtype(np.float32): torch.float32}[np.dtype(dtype)]


@functools.lru_cache(maxsize=256)
def has_loops(loops: LoopProgram) -> bool:
    return any(isinstance(n, DenseLoop | SparseLoop) for n in walk(loops.body))


def allocate(args: KernelArgs, loops: LoopProgram, chunks: int, device=None, single: bool | None = None) -> None:
    """The per-chunk accumulation buffers and the chunk boundaries of the outer loop; with a
    torch `device`, the buffers are a torch tensor there (the Triton backend). `single`: the
    program has no loop to split (None: look it up)."""
    identity = algebra.operator(loops.reduce).identity
    if single is None:
        single = sparse_loop(loops) is None and not has_loops(loops)
    if single:
        chunks = 1
    args.chunks = chunks
    args.bounds = args.driver.chunk_bounds(chunks) if args.driver is not None else np.zeros(chunks + 1, np.int64)
    if device is None:
        args.partial = np.full((chunks, *args.out_shape), identity, dtype=args.dtype)
    else:
        import torch

        args.partial = torch.full((chunks, *args.out_shape), identity, dtype=torch_dtype(args.dtype), device=device)
