"""Triton launch: the schedule for a call's arguments, the kernel's argument values and grid.

`prepare_launch` does everything but the launch itself (so `perf/aot.py` can compile the same
specialization for sm_90 on meta tensors, without a GPU); `run_triton` allocates and launches.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from ..ir.loop import LoopProgram
from ..ir.tile import TileProgram
from ..schedule import DenseTriangleSchedule, Schedule, SparseTileSchedule, apply_schedule, default_schedule
from .cache import load_source
from .triton_emit import emit_kernel


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    return int(value) if value else None


def choose_schedule(program: LoopProgram, args) -> Schedule:
    """The heuristic schedule for these arguments; SYSTEC_TRITON_NNZ_PER_TILE,
    SYSTEC_TRITON_DENSE_BLOCK and SYSTEC_TRITON_BLOCK override its sizes; SYSTEC_TRITON_SEGMENTED=0
    turns the in-tile pre-reduction off."""
    from .parameters import dense_extents

    extents = [args.extent(e) for e in dense_extents(program)]
    nnz = args.driver.nnz if args.driver is not None else 0
    inner = extents[0] if program.driver is not None and extents else max(extents, default=1)
    schedule = default_schedule(program, nnz=nnz, dense_extent=inner, itemsize=np.dtype(args.dtype).itemsize)
    if isinstance(schedule, SparseTileSchedule):
        segmented = _env_int("SYSTEC_TRITON_SEGMENTED")
        return SparseTileSchedule(
            nnz_per_tile=_env_int("SYSTEC_TRITON_NNZ_PER_TILE") or schedule.nnz_per_tile,
            dense_block=_env_int("SYSTEC_TRITON_DENSE_BLOCK") or schedule.dense_block,
            segmented=schedule.segmented if segmented is None else bool(segmented),
        )
    return DenseTriangleSchedule(block=_env_int("SYSTEC_TRITON_BLOCK") or schedule.block)


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _device(args):
    import torch

    if args.torch_device is not None and args.torch_device.type == "cuda":
        return args.torch_device
    if interpreting():
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda")
    raise RuntimeError("the triton backend needs a CUDA device (or TRITON_INTERPRET=1 for the CPU interpreter)")


def _torch_device(device):
    import torch

    return torch.device(device)


def _to_device(array, device):
    """A torch tensor of `array` on `device`: tensors already there pass through (no copy); numpy
    arrays are uploaded (on the CPU interpreter: shared, no copy)."""
    import torch

    if isinstance(array, torch.Tensor):
        return array if array.device == device else array.to(device)
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    return tensor if device.type == "cpu" else tensor.to(device)


def _driver_copy(driver, what, device, source, make=None):
    """The device copy of a driver array, uploaded once: cached on the DriverArrays, which bind()
    caches per storage object (in its `_cache`), so repeated calls on one storage reuse it. The
    entry holds its source array and is used only while that is still the driver's array."""
    key = (what, str(device))
    hit = driver.device_copies.get(key)
    if hit is not None and hit[0] is source:
        return hit[1]
    copy = _to_device(make() if make is not None else source, device)
    driver.device_copies[key] = (source, copy)
    return copy


def _tile_starts(tiles: TileProgram, args) -> np.ndarray:
    """Block-start tuples of the grid axes that meet the canonical triangle (the only ones launched)."""
    axes = tiles.grid_axes
    grids = [np.arange(0, args.extent(a.extent), a.block, dtype=np.int64) for a in axes]
    if any(len(g) == 0 for g in grids):
        return np.zeros((0, len(axes)), dtype=np.int32)
    starts = np.stack([g.ravel() for g in np.meshgrid(*grids, indexing="ij")], axis=1)
    keep = np.ones(len(starts), dtype=bool)
    position = {a.index: k for k, a in enumerate(axes)}
    for k, a in enumerate(axes):
        if a.lower in position:  # some lane needs index >= lower: last of this block >= first of lower's
            keep &= starts[:, k] + a.block - 1 >= starts[:, position[a.lower]]
        if a.upper in position:
            j = position[a.upper]
            keep &= starts[:, k] <= starts[:, j] + axes[j].block - 1
    return np.ascontiguousarray(starts[keep], dtype=np.int32)


def _strides(shape: tuple[int, ...]) -> list[int]:
    strides, step = [], 1
    for size in reversed(shape):
        strides.append(step)
        step *= size
    return strides[::-1]


@dataclass
class Launch:
    """Everything a launch needs, prepared: the loaded kernel, its keyword arguments, the grid."""

    tiles: TileProgram
    source: str  # the generated Triton source
    kernel: object  # the @triton.jit function (an interpreted one under TRITON_INTERPRET=1)
    values: dict[str, object]
    grid: tuple[int, ...]
    num_warps: int
    empty: bool  # nothing to visit: the output stays the identity


def prepare_launch(program: LoopProgram, args, schedule: Schedule | None = None, *, device=None) -> Launch:
    """Choose the schedule (unless given), emit and load the kernel, allocate the output on
    `device` (default: the arguments' CUDA device, or the CPU under the interpreter) and bind
    every kernel argument. `device="meta"` binds shapes and dtypes only (perf/aot.py)."""
    from ..runtime import allocate

    tiles = apply_schedule(program, schedule or choose_schedule(program, args))
    emitted = emit_kernel(tiles)
    kernel = load_source(emitted.source, "triton").kernel
    device = _device(args) if device is None else _torch_device(device)
    # The output lives on the device from the start; finish() takes it from there.
    allocate(args, program, 1, device=device)
    # The kernel stores both halves of a symmetric output itself: finish() must not mirror.
    args.output_mirrored = tiles.mirror
    out = args.partial[0]

    sparse = tiles.sparse
    coords = None
    if sparse is not None:
        driver = args.driver

        def coord(m):
            # uint32 coordinates (below 2**31, chosen for numba) are read as int32: same bits, no copy.
            c = driver.coords[m]
            return c.view(np.int32) if c.dtype == np.uint32 else c

        # (what, source, make) per tile coordinate mode
        coords = [(("coords", m), driver.coords[m], lambda m=m: coord(m)) for m in range(len(driver.coords))]
        if driver.pointers is not None:
            # CSR drivers: the tiles walk nonzeros, so each needs its row; expand the pointers.
            def rows():
                pointers = driver.pointers
                rows = np.repeat(np.arange(len(pointers) - 1), np.diff(pointers))
                return rows.astype(np.int32 if len(pointers) <= 2**31 else np.int64)

            coords = [(("rows",), driver.pointers, rows), *coords[-(len(sparse.indices) - 1):]]
        grid = (-(-driver.nnz // sparse.size),)
        n_work = driver.nnz
    else:
        starts = _tile_starts(tiles, args)
        grid = (len(starts),)
        n_work = len(starts)

    values: dict[str, object] = {}
    for p in emitted.params:
        match p.kind:
            case "out":
                value = out
            case "coords":
                what, source, make = coords[p.key]
                value = _driver_copy(args.driver, what, device, source, make)
            case "values":
                value = _driver_copy(args.driver, ("values",), device, args.driver.values)
            case "nnz":
                value = int(args.driver.nnz)
            case "dense":
                value = _to_device(args.dense[p.key], device)
            case "table":
                value = _to_device(args.tables[p.key], device)
            case "stride":
                tensor, mode = p.key
                shape = out.shape if tensor == "<out>" else args.dense[tensor].shape
                value = int(_strides(tuple(shape))[mode])
            case "extent":
                value = int(args.extent(p.key))
            case "tiles":
                value = _to_device(starts, device)
            case "block":
                value = _block_size(tiles, p.key)
        values[emitted.names[p]] = value
    return Launch(tiles, emitted.source, kernel, values, grid, 4, n_work == 0)


def run_triton(program: LoopProgram, args, schedule: Schedule | None = None, *, poison: float | None = None) -> None:
    """Run `program` on `args` (runtime.KernelArgs); leaves the result in `args.partial`, one chunk,
    a torch tensor on the device (dense operands already there are used in place, no copy).

    `poison` (tests): fill the output with this value instead of the identity before launch,
    for kernels that store rather than accumulate, so that an unwritten element shows.
    """
    launch = prepare_launch(program, args, schedule)
    if poison is not None:
        args.partial.fill_(poison)
    if launch.empty:
        return  # nothing to visit: the output stays the identity
    launch.kernel[launch.grid](**launch.values, num_warps=launch.num_warps)  # writes args.partial in place


def _block_size(tiles: TileProgram, key) -> int:
    if key == "NNZ":
        return tiles.sparse.size
    return next(a.block for a in (*tiles.grid_axes, *tiles.inner_axes) if a.axis == key)


__all__ = ["Launch", "choose_schedule", "prepare_launch", "run_triton"]
