"""Triton launch: the schedule for a call's arguments, the kernel's argument values and grid.

`prepare_launch` does everything but the launch itself (so `perf/aot.py` can compile the same
specialization for sm_90 on meta tensors, without a GPU); `run_triton` allocates and launches.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from dataclasses import dataclass

import numpy as np

from .. import algebra, schedule_table
from ..budget import default_schedule
from ..ir.loop import DenseLoop, LoopProgram
from ..ir.tile import ContractionLoop, TileProgram
from ..ir.traverse import walk
from ..passes.lower_loops import ScheduleError
from ..schedule import ProblemShape, Schedule, apply_schedule
from ..schedule_table import tuned_schedule
from .cache import load_source
from .parameters import sparse_loop
from .triton_emit import TParam, emit_kernel


@functools.lru_cache(maxsize=256)
def _loop_shape(program: LoopProgram) -> tuple:
    """(the sparse loop, the dense loops, the first dense loop inside the sparse one): walked once
    per program, not per call."""
    loop = sparse_loop(program)
    dense = tuple(n for n in walk(program.body) if isinstance(n, DenseLoop))
    vector = next((n for n in walk(loop) if isinstance(n, DenseLoop)), None) if loop is not None else None
    return loop, dense, vector


def problem_shape(program: LoopProgram, args) -> ProblemShape:
    """The sizes of a call that its schedule is chosen from (runtime.KernelArgs -> ProblemShape)."""
    loop, dense, vector = _loop_shape(program)
    driver = args.driver
    numels = [math.prod(args.out_shape) * 2]  # two buffers at most
    numels += [math.prod(a.shape) for a in args.dense.values()]
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


def choose_schedule(program: LoopProgram, args, arch: str | None = None,
                    shape: ProblemShape | None = None) -> Schedule:
    """The schedule for these arguments: the device-tuned table's entry for `arch` (default: the
    arguments' device) and this shape class, else the register-budget heuristic. The environment
    variable SYSTEC_TRITON_SCHEDULE ("field=value,...", e.g. "rows_per_block=8,num_warps=2")
    overrides fields of whichever kind was chosen."""
    shape = shape or problem_shape(program, args)
    arch = arch if arch is not None else device_arch(args)
    return _schedule_for(program, shape, arch, os.environ.get("SYSTEC_TRITON_SCHEDULE", ""),
                         id(schedule_table.load_table()))


@functools.lru_cache(maxsize=1024)
def _schedule_for(program: LoopProgram, shape: ProblemShape, arch: str | None, override: str,
                  table: int) -> Schedule:
    """choose_schedule's decision, memoized per (program, shape, arch, override, and the loaded
    table's identity: perf/tune.py reloads a refilled table)."""
    del table  # part of the key only
    schedule = tuned_schedule(program, shape, arch)
    if schedule is None:
        schedule = default_schedule(program, shape)
    return _overridden(schedule, override)


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
    """The device copy of a driver structure array (coordinates, pointers: never values), uploaded
    once: cached on the driver's structure, which the inputs cache per storage structure, so
    repeated calls on one storage reuse it. The entry holds its source array and is used only
    while that is still the structure's array."""
    key = (what, str(device))
    hit = driver.device_copies.get(key)
    if hit is not None and hit[0] is source:
        return hit[1]
    copy = _to_device(make() if make is not None else source, device)
    driver.device_copies[key] = (source, copy)
    return copy


# Device copies of constant host arrays (tile starts), per array object and device: the arrays
# are owned by a cache that keeps them alive (_tile_starts).
_DEVICE_CONSTANTS = None


def _device_constant(array: np.ndarray, device):
    global _DEVICE_CONSTANTS
    if _DEVICE_CONSTANTS is None:
        from torch.utils.weak import WeakIdKeyDictionary

        _DEVICE_CONSTANTS = WeakIdKeyDictionary()
    copies = _DEVICE_CONSTANTS.setdefault(array, {})
    key = str(device)
    if key not in copies:
        copies[key] = _to_device(array, device)
    return copies[key]


def _work_grid(tiles, args) -> tuple[int, tuple[int], object]:
    """(units of work, the launch grid, the dense tiles' start table or None) of a call: nonzeros
    in tiles, rows in blocks, or the dense program's tiles."""
    if tiles.sparse is not None:
        n_work = args.driver.nnz
        return n_work, (-(-n_work // tiles.sparse.size),), None
    if tiles.rows is not None:
        n_work = len(args.driver.pointers) - 1
        return n_work, (-(-n_work // tiles.rows.rows),), None
    starts = _tile_starts(tiles, tuple(args.extent(a.extent) for a in tiles.grid_axes))
    return len(starts), (len(starts),), starts


@functools.lru_cache(maxsize=1024)
def _tile_starts(tiles: TileProgram, extents: tuple[int, ...]) -> np.ndarray:
    """Block-start tuples of the grid axes that meet the canonical triangle (the only ones launched)."""
    axes = tiles.grid_axes
    grids = [np.arange(0, extent, a.block, dtype=np.int64) for a, extent in zip(axes, extents, strict=True)]
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
class _Call:
    """One launch's arguments, as the binders of `_launch_plan` read them."""

    args: object  # KernelArgs
    device: object
    starts: np.ndarray | None  # dense kernels: the launched tiles' block starts


def _coordinate(driver, m: int):
    # uint32 coordinates (below 2**31, chosen for numba) are read as int32: same bits, no copy.
    c = driver.coords[m]
    return c.view(np.int32) if c.dtype == np.uint32 else c


def _expanded_rows(driver):
    # A CSR driver walked as nonzeros: each needs its row, the driver's mode-0 coordinates (made
    # on first use, where the storage lives: no host round trip for device storage).
    return _coordinate(driver, 0)


def _coords_binder(tiles: TileProgram, key: int):
    """The binder of tile coordinate mode `key`: a device copy cached on the driver's structure."""
    indices = (tiles.sparse or tiles.rows).indices

    def bind(c: _Call):
        driver = c.args.driver
        if driver.pointers is not None and tiles.sparse is not None and key == 0:
            return _driver_copy(driver, ("rows",), c.device, driver.pointers, lambda: _expanded_rows(driver))
        # the access's last modes (a repeated index inside the access binds one coordinate)
        mode = len(driver.coords) - len(indices) + key
        return _driver_copy(driver, ("coords", mode), c.device, driver.coords[mode],
                            lambda: _coordinate(driver, mode))

    return bind


def _as_int32(array):
    """An int32 copy of host (numpy) or device (torch) pointers."""
    import torch

    return array.to(torch.int32) if isinstance(array, torch.Tensor) else array.astype(np.int32)


def _pointers_binder(tiles: TileProgram):
    """CSR row pointers (int64); an int32 program reads an int32 copy, made once."""
    narrow = tiles.index_bits == 32

    def bind(c: _Call):
        driver = c.args.driver
        return _driver_copy(driver, ("pointers", tiles.index_bits), c.device, driver.pointers,
                            (lambda: _as_int32(driver.pointers)) if narrow else None)

    return bind


def _binder(tiles: TileProgram, p: TParam):
    """A function of the call (`_Call`) giving parameter `p`'s value: everything about `p` that
    does not depend on the data is decided here, once per program and schedule."""
    match p.kind:
        case "out":
            return lambda c, key=p.key: c.args.partial[key]
        case "coords":
            return _coords_binder(tiles, p.key)
        case "pointers":
            return _pointers_binder(tiles)
        case "values":
            # Values are read every call (never cached: they may change between calls).
            return lambda c: _to_device(c.args.driver.values, c.device)
        case "nnz":
            return lambda c: int(c.args.driver.nnz)
        case "dense":
            return lambda c, key=p.key: _to_device(c.args.dense[key], c.device)
        case "stored":
            return lambda c, key=p.key: _to_device(c.args.stored[key], c.device)
        case "stride":
            tensor, mode = p.key
            if tensor == "<out>":
                return lambda c, m=mode: int(_strides(tuple(c.args.partial.shape[1:]))[m])
            return lambda c, t=tensor, m=mode: int(_strides(tuple(c.args.dense[t].shape))[m])
        case "extent":
            return lambda c, key=p.key: int(c.args.extent(key))
        case "tiles":
            return lambda c: _device_constant(c.starts, c.device)
        case "block":
            size = _block_size(tiles, p.key)
            return lambda c: size
    raise ValueError(f"unknown kernel parameter {p}")


@functools.lru_cache(maxsize=256)
def _compiled(program: LoopProgram, schedule: Schedule) -> tuple:
    """(tile program, emitted kernel, the loaded kernel) of `program` under `schedule`:
    scheduled, emitted, hashed and loaded once per process (in front of the disk cache)."""
    tiles = apply_schedule(program, schedule)
    emitted = emit_kernel(tiles)
    return tiles, emitted, load_source(emitted.source, "triton").kernel


@functools.lru_cache(maxsize=256)
def _launch_plan(program: LoopProgram, schedule: Schedule) -> tuple:
    """(tile program, source, (name, binder) per parameter, kernel): a launch's data-independent part."""
    tiles, emitted, kernel = _compiled(program, schedule)
    return tiles, emitted.source, tuple((emitted.names[p], _binder(tiles, p)) for p in emitted.params), kernel


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
    """Choose the schedule (unless given; `arch` as for choose_schedule), allocate the output
    buffers on `device` (default: the arguments' CUDA device, or the CPU under the interpreter)
    and bind every kernel argument; the schedule's tile program, source, binders and loaded
    kernel are memoized per (program, schedule). `device="meta"` binds shapes and dtypes only
    (perf/aot.py compiles that specialization for sm_90 without a GPU)."""
    from .arguments import allocate

    shape = problem_shape(program, args)
    schedule = schedule or choose_schedule(program, args, arch, shape)
    tiles, source, binders, kernel = _launch_plan(program, schedule)
    if tiles.index_bits == 32 and shape.index_bits == 64:
        raise ScheduleError(f"{program.source}: index_bits=32, but this call has an extent, offset or nonzero count "
                            "of 2**31 or more; it needs index_bits=64")
    device = _device(args) if device is None else _torch_device(device)
    # The output lives on the device from the start; finish() reduces the buffers from there.
    allocate(args, program, tiles.buffers, device=device, single=tiles.buffers == 1)
    # The kernel stores both halves of a symmetric output itself: finish() must not mirror.
    args.output_mirrored = tiles.mirror
    n_work, grid, starts = _work_grid(tiles, args)
    call = _Call(args, device, starts)
    values = {name: bind(call) for name, bind in binders} if n_work else {}
    return Launch(tiles, source, kernel, values, grid, tiles.num_warps, n_work == 0)


def run_triton(program: LoopProgram, args, schedule: Schedule | None = None, *, poison: float | None = None) -> None:
    """Run `program` on `args` (backends.arguments.KernelArgs); leaves the result in `args.partial`
    (one buffer, or two that finish() reduces), torch tensors on the device (dense operands
    already there are used in place, no copy).

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


def specialize_triton(program: LoopProgram, args):
    """A run for the calls bound like `args` (one input signature: runtime.Launch prepares it):
    schedule, loaded kernel, grid, tile starts and every argument but the output buffers, the
    sparse values and the dense operands bound once; a call allocates its output, binds those
    and launches. A change of SYSTEC_TRITON_SCHEDULE or of the loaded schedule table sends the
    call through `run_triton` again. None when this signature has no launch (run_triton raises)."""
    import torch

    from .arguments import allocate, torch_dtype

    override, table = os.environ.get("SYSTEC_TRITON_SCHEDULE", ""), schedule_table.load_table()
    shape = problem_shape(program, args)
    schedule = choose_schedule(program, args, None, shape)
    tiles, emitted, kernel = _compiled(program, schedule)
    binders = _launch_plan(program, schedule)[2]
    if tiles.index_bits == 32 and shape.index_bits == 64:
        return None
    device = _device(args)
    probe = dataclasses.replace(args)  # the call's arguments stay as they are
    allocate(probe, program, tiles.buffers, device=device, single=tiles.buffers == 1)
    n_work, grid, starts = _work_grid(tiles, probe)
    call = _Call(probe, device, starts)
    per_call = ("out", "values", "dense")
    params = tuple(zip(emitted.params, binders, strict=True))
    constants = {name: bind(call) for p, (name, bind) in params if p.kind not in per_call} if n_work else {}
    # per-call arguments: (name, kind, key, conversion); a numpy operand on the CPU (the
    # interpreter) is wrapped, a tensor already on the device passed as is (the prepared bind
    # gives every call of this signature operands of the kinds `args` holds)
    slots = []
    for p, (name, _) in params:
        if p.kind in per_call:
            operand = None if p.kind == "out" else args.driver.values if p.kind == "values" else args.dense[p.key]
            if isinstance(operand, np.ndarray) and device.type == "cpu":
                convert = torch.from_numpy
            elif isinstance(operand, torch.Tensor) and operand.device == device:
                convert = None
            else:
                convert = functools.partial(_to_device, device=device)
            slots.append((name, p.kind, p.key, convert))
    buffer_shape, dtype, chunks = tuple(probe.partial.shape), torch_dtype(args.dtype), probe.chunks
    identity, bounds, mirror = algebra.operator(program.reduce).identity, probe.bounds, tiles.mirror
    launcher = kernel[grid]
    constants["num_warps"] = tiles.num_warps  # a launch option, passed with the arguments

    def run(args) -> None:
        if os.environ.get("SYSTEC_TRITON_SCHEDULE", "") != override or schedule_table.load_table() is not table:
            run_triton(program, args)
            return
        partial = torch.full(buffer_shape, identity, dtype=dtype, device=device)
        args.partial, args.chunks, args.bounds, args.output_mirrored = partial, chunks, bounds, mirror
        if not n_work:
            return  # nothing to visit: the output stays the identity
        values = constants.copy()
        for name, kind, key, convert in slots:
            if kind == "out":
                values[name] = view = partial[key]
                if key == 0:
                    args.first_buffer = view
                continue
            operand = args.driver.values if kind == "values" else args.dense[key]
            values[name] = operand if convert is None else convert(operand)
        launcher(**values)

    return run


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


__all__ = ["Launch", "choose_schedule", "prepare_launch", "run_triton", "specialize_triton"]
