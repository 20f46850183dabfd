"""Triton launch: the schedule for a call's arguments, the kernel's argument values and grid.

`prepare_launch` does everything but the launch itself (so `perf/aot.py` can compile the same
specialization for sm_90 on meta tensors, without a GPU); `run_triton` allocates and launches.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

import numpy as np

from ..budget import default_schedule
from ..ir.loop import DenseLoop, LoopProgram
from ..ir.tile import ContractionLoop, TileProgram
from ..ir.traverse import walk
from ..passes.lower_loops import ScheduleError
from ..schedule import ProblemShape, Schedule, apply_schedule
from ..schedule_table import tuned_schedule
from .cache import load_source
from .parameters import sparse_loop
from .triton_emit import emit_kernel


def problem_shape(program: LoopProgram, args) -> ProblemShape:
    """The sizes of a call that its schedule is chosen from (runtime.KernelArgs -> ProblemShape)."""
    loop = sparse_loop(program)
    driver = args.driver
    dense = [n for n in walk(program.body) if isinstance(n, DenseLoop)]
    inner = [n for n in walk(loop)] if loop is not None else []
    vector = next((n for n in inner if isinstance(n, DenseLoop)), None)
    numels = [int(np.prod(args.out_shape)) * 2]  # two buffers at most
    numels += [int(np.prod(tuple(a.shape))) for a in args.dense.values()]
    nnz = int(driver.nnz) if driver is not None else 0
    rows = len(driver.pointers) - 1 if driver is not None and driver.pointers is not None else 0
    # int32 offsets hold with room for a tile past the end (pid * block + lane) and a row past the last.
    index_bits = 32 if max([nnz, rows, *numels]) < 2**31 - 2**20 else 64
    return ProblemShape(
        nnz=nnz,
        rows=rows,
        dense_extent=args.extent(vector.extent) if vector is not None else 0,
        grid_extent=args.extent(dense[0].extent) if loop is None and dense else 0,
        contraction=args.extent(dense[-1].extent) if loop is None and len(dense) > 2 else 0,
        itemsize=np.dtype(args.dtype).itemsize,
        index_bits=index_bits,
    )


def device_arch(args) -> str | None:
    """"sm_XY" of the CUDA device the call runs on; None on the CPU interpreter."""
    device = args.torch_device
    if device is None or device.type != "cuda" or interpreting():
        return None
    import torch

    major, minor = torch.cuda.get_device_capability(device)
    return f"sm_{major}{minor}"


def choose_schedule(program: LoopProgram, args, arch: str | None = None) -> Schedule:
    """The schedule for these arguments: the device-tuned table's entry for `arch` (default: the
    arguments' device) and this shape class, else the register-budget heuristic. The environment
    variable SYSTEC_TRITON_SCHEDULE ("field=value,...", e.g. "rows_per_block=8,num_warps=2")
    overrides fields of whichever kind was chosen."""
    shape = problem_shape(program, args)
    schedule = tuned_schedule(program, shape, arch if arch is not None else device_arch(args))
    if schedule is None:
        schedule = default_schedule(program, shape)
    return _overridden(schedule, os.environ.get("SYSTEC_TRITON_SCHEDULE", ""))


def _overridden(schedule: Schedule, text: str) -> Schedule:
    fields = {f.name: f.type for f in dataclasses.fields(schedule)}
    changes = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, value = item.partition("=")
        if name not in fields:
            raise ScheduleError(f"SYSTEC_TRITON_SCHEDULE: {type(schedule).__name__} has no field {name!r}; "
                                f"fields: {', '.join(fields)}")
        current = getattr(schedule, name)
        if isinstance(current, bool):
            changes[name] = value.lower() in ("1", "true", "yes")
        elif isinstance(current, int):
            changes[name] = int(value)
        else:
            changes[name] = value
    return dataclasses.replace(schedule, **changes) if changes else schedule


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


_STARTS: dict = {}  # (grid axes, their extents, device) -> block starts on the device


def _device_starts(tiles: TileProgram, args, starts: np.ndarray, device):
    """The launched blocks' starts on the device, uploaded once per grid shape (a repeat call
    with the same extents copies nothing)."""
    key = (tiles.grid_axes, tuple(args.extent(a.extent) for a in tiles.grid_axes), str(device))
    if key not in _STARTS:
        if len(_STARTS) >= 64:
            _STARTS.pop(next(iter(_STARTS)))
        _STARTS[key] = _to_device(starts, device)
    return _STARTS[key]


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


def prepare_launch(program: LoopProgram, args, schedule: Schedule | None = None, *, device=None,
                   arch: str | None = None) -> Launch:
    """Choose the schedule (unless given; `arch` as for choose_schedule), emit and load the
    kernel, allocate the output buffers on `device` (default: the arguments' CUDA device, or the
    CPU under the interpreter) and bind every kernel argument. `device="meta"` binds shapes and
    dtypes only (perf/aot.py compiles that specialization for sm_90 without a GPU)."""
    from ..runtime import allocate

    tiles = apply_schedule(program, schedule or choose_schedule(program, args, arch))
    if tiles.index_bits == 32 and problem_shape(program, args).index_bits == 64:
        raise ScheduleError(f"{program.source}: index_bits=32, but this call has an extent, offset or nonzero count "
                            "of 2**31 or more; it needs index_bits=64")
    emitted = emit_kernel(tiles)
    kernel = load_source(emitted.source, "triton").kernel
    device = _device(args) if device is None else _torch_device(device)
    # The output lives on the device from the start; finish() reduces the buffers from there.
    allocate(args, program, tiles.buffers, device=device)
    # The kernel stores both halves of a symmetric output itself: finish() must not mirror.
    args.output_mirrored = tiles.mirror
    driver = args.driver

    def coord(m):
        # uint32 coordinates (below 2**31, chosen for numba) are read as int32: same bits, no copy.
        c = driver.coords[m]
        return c.view(np.int32) if c.dtype == np.uint32 else c

    coords = {}  # tile coordinate mode -> (what, source, make) of its device copy
    if tiles.sparse is not None:
        coords = {m: (("coords", m), driver.coords[m], lambda m=m: coord(m)) for m in range(len(driver.coords))}
        if driver.pointers is not None:
            # A CSR driver walked as nonzeros: each needs its row; expand the pointers.
            def rows():
                pointers = driver.pointers
                expanded = np.repeat(np.arange(len(pointers) - 1), np.diff(pointers))
                return expanded.astype(np.int32 if len(pointers) <= 2**31 else np.int64)

            coords[0] = (("rows",), driver.pointers, rows)
        grid = (-(-driver.nnz // tiles.sparse.size),)
        n_work = driver.nnz
    elif tiles.rows is not None:
        coords = {m: (("coords", m), driver.coords[m], lambda m=m: coord(m)) for m in range(1, len(driver.coords))}
        n_rows = len(driver.pointers) - 1
        grid = (-(-n_rows // tiles.rows.rows),)
        n_work = n_rows
    else:
        starts = _tile_starts(tiles, args)
        grid = (len(starts),)
        n_work = len(starts)

    values: dict[str, object] = {}
    for p in emitted.params:
        match p.kind:
            case "out":
                value = args.partial[p.key]
            case "coords":
                what, source, make = coords[p.key]
                value = _driver_copy(driver, what, device, source, make)
            case "values":
                value = _driver_copy(driver, ("values",), device, driver.values)
            case "pointers":
                # int64 CSR pointers; the int32 program reads an int32 copy (made once, cached)
                narrow = tiles.index_bits == 32
                value = _driver_copy(driver, ("pointers", tiles.index_bits), device, driver.pointers,
                                     (lambda: driver.pointers.astype(np.int32)) if narrow else None)
            case "nnz":
                value = int(driver.nnz)
            case "dense":
                value = _to_device(args.dense[p.key], device)
            case "stride":
                tensor, mode = p.key
                shape = args.partial.shape[1:] if tensor == "<out>" else args.dense[tensor].shape
                value = int(_strides(tuple(shape))[mode])
            case "extent":
                value = int(args.extent(p.key))
            case "tiles":
                value = _device_starts(tiles, args, starts, device)
            case "block":
                value = _block_size(tiles, p.key)
            case _:
                raise ValueError(f"unknown kernel parameter {p}")
        values[emitted.names[p]] = value
    return Launch(tiles, emitted.source, kernel, values, grid, tiles.num_warps, n_work == 0)


def run_triton(program: LoopProgram, args, schedule: Schedule | None = None, *, poison: float | None = None) -> None:
    """Run `program` on `args` (runtime.KernelArgs); leaves the result in `args.partial` (one
    buffer, or two that finish() reduces), torch tensors on the device (dense operands already
    there are used in place, no copy).

    `poison` (tests): fill the buffer the kernel stores into with this value instead of the
    identity before launch, so that an element the kernel should store but does not shows.
    """
    launch = prepare_launch(program, args, schedule)
    if poison is not None:
        if not launch.tiles.stores:
            raise ValueError(f"poison: {program.source} under this schedule only accumulates (atomics); "
                             "there is no stored buffer to poison")
        args.partial[0].fill_(poison)
    if launch.empty:
        return  # nothing to visit: the output stays the identity
    launch.kernel[launch.grid](**launch.values, num_warps=launch.num_warps)  # writes args.partial in place


def _block_size(tiles: TileProgram, key) -> int:
    match key:
        case "NNZ":
            return tiles.sparse.size
        case "ROWS":
            return tiles.rows.rows
        case "LANES":
            return tiles.rows.lanes
        case "K":
            return next(lv.header.block for lv in tiles.levels if isinstance(lv.header, ContractionLoop))
    return next(a.block for a in (*tiles.grid_axes, *tiles.inner_axes) if a.axis == key)


__all__ = ["Launch", "choose_schedule", "prepare_launch", "run_triton"]
