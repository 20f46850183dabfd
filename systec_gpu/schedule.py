"""Schedules: how a loop program is cut into GPU tiles (see ir/tile.py and DESIGN.md section 5).

`apply_schedule(loops, schedule)` maps the loop chain onto tile levels or raises ScheduleError
with the reason. Sizes are powers of two because `tl.arange` needs them.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import algebra
from .ir.loop import Access, DenseLoop, Guard, Let, LoopProgram, SparseLoop, Update
from .ir.tile import BlockAxis, Mask, NonzeroTile, ScalarLoop, SegmentedUpdate, TileLevel, TileProgram
from .passes.loop_nest import unnest
from .passes.lower_loops import ScheduleError


@dataclass(frozen=True)
class SparseTileSchedule:
    """One program per `nnz_per_tile` canonical nonzeros; the first dense loop inside is a
    second tile axis of `dense_block` lanes (looped over in blocks).

    `segmented`: updates whose output varies along the nonzeros only through the (sorted)
    leading index, or not at all, are reduced inside the tile before one write per output
    element (`SegmentedUpdate`); False keeps one masked atomic per lane (tests compare both)."""

    nnz_per_tile: int = 256
    dense_block: int = 32
    segmented: bool = True


@dataclass(frozen=True)
class DenseTriangleSchedule:
    """Programs over `block`-sized blocks of the two outermost dense loops (only blocks that
    meet the canonical triangle are launched); inner loops stay scalar loops."""

    block: int = 32


Schedule = SparseTileSchedule | DenseTriangleSchedule


def _power_of_two(name: str, value: int) -> None:
    if not isinstance(value, int) or value < 1 or value & (value - 1):
        raise ScheduleError(f"{name} must be a power of two >= 1 (tl.arange needs it), got {value!r}")


def _next_power_of_two(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


def default_schedule(loops: LoopProgram, *, nnz: int = 0, dense_extent: int = 0, itemsize: int = 4) -> Schedule:
    """A heuristic schedule: tiles of ~4096 lane-elements (half for fp64, which doubles the
    registers per lane), never much larger than the work itself."""
    budget = 4096 if itemsize <= 4 else 2048
    if loops.driver is not None:
        dense_block = min(_next_power_of_two(max(dense_extent, 1)), 64)
        per_tile = max(16, min(1024, budget // dense_block))
        per_tile = min(per_tile, max(16, _next_power_of_two(max(nnz, 1))))
        return SparseTileSchedule(nnz_per_tile=per_tile, dense_block=dense_block)
    block = 64 if itemsize <= 4 else 32
    return DenseTriangleSchedule(block=min(block, max(16, _next_power_of_two(max(dense_extent, 1)))))


def apply_schedule(loops: LoopProgram, schedule: Schedule | None = None) -> TileProgram:
    """The tile program of `loops` under `schedule` (None: the default sizes)."""
    levels = unnest(loops.body)
    if len(levels) == 1:
        raise ScheduleError(
            f"{loops.source}: the kernel has no loops (every index is fixed), so there is nothing to tile; "
            "use the numba or reference backend"
        )
    if any(isinstance(s, Update) for s in levels[0].stmts):
        raise ScheduleError(f"{loops.source}: updates outside every loop cannot be tiled")
    first = levels[1].header
    if isinstance(first, SparseLoop):
        schedule = schedule or SparseTileSchedule()
        if not isinstance(schedule, SparseTileSchedule):
            raise ScheduleError(f"{loops.source} is driven by sparse {first.tensor}: it needs a SparseTileSchedule")
        return _sparse(loops, levels, schedule)
    if any(isinstance(lv.header, SparseLoop) for lv in levels):
        raise ScheduleError(f"{loops.source}: a sparse loop nested inside dense loops is not supported by the tiler")
    if not isinstance(first, DenseLoop):
        raise ScheduleError(f"{loops.source}: the outermost loop is a guard, which binds nothing to tile over")
    schedule = schedule or DenseTriangleSchedule()
    if not isinstance(schedule, DenseTriangleSchedule):
        raise ScheduleError(f"{loops.source} has no sparse driver: it needs a DenseTriangleSchedule")
    return _dense(loops, levels, schedule)


def _sparse(loops: LoopProgram, levels, schedule: SparseTileSchedule) -> TileProgram:
    _power_of_two("nnz_per_tile", schedule.nnz_per_tile)
    _power_of_two("dense_block", schedule.dense_block)
    out: list[TileLevel] = [TileLevel(None, levels[0].stmts)]
    vector_axis_used = False
    for level in levels[1:]:
        match level.header:
            case SparseLoop(tensor=t, indices=idx, format=fmt):
                if out[-1].header is not None:
                    raise ScheduleError(f"{loops.source}: more than one sparse loop")
                header = NonzeroTile(t, idx, fmt, schedule.nnz_per_tile)
            case DenseLoop(index=i, extent=e, lower=lo, upper=hi):
                # The first dense loop (factor-matrix columns, rank) is the second tile axis:
                # its lanes read contiguous rows. Deeper ones stay scalar loops.
                if not vector_axis_used:
                    header = BlockAxis(i, e, lo, hi, axis=1, block=schedule.dense_block, gridded=False)
                    vector_axis_used = True
                else:
                    header = ScalarLoop(i, e, lo, hi)
            case Guard(lhs=a, rhs=b):
                header = Mask(a, b)
            case _:
                raise ScheduleError(f"{loops.source}: cannot tile {type(level.header).__name__}")
        out.append(TileLevel(header, level.stmts))
    notes = ["scattered outputs: masked atomics (nonzeros of several tiles can hit one element)"]
    if schedule.segmented:
        tile = next(lv.header for lv in out if isinstance(lv.header, NonzeroTile))
        out = [TileLevel(lv.header, tuple(_segment(s, tile) for s in lv.stmts)) for lv in out]
        keys = {s.key for lv in out for s in lv.stmts if isinstance(s, SegmentedUpdate)}
        if tile.indices[0] in keys:
            notes.append(f"outputs indexed by the sorted leading index {tile.indices[0]}: runs of equal "
                         f"{tile.indices[0]} reduced in the tile (segmented scan), one atomic per run")
        if None in keys:
            notes.append("outputs indexed by no lane index: reduced over the tile, one atomic per element")
    return TileProgram(loops, tuple(out), "atomic", tuple(notes))


def _segment(stmt, tile: NonzeroTile):
    """`stmt` as a SegmentedUpdate when its lanes can be reduced before writing: the output
    varies along the nonzero lanes only through the leading (sorted) driver index, or not at
    all. Other updates (e.g. y[j] of SSYMV) scatter: their lanes rarely share an element."""
    if not isinstance(stmt, Update) or algebra.operator(stmt.reduce).name not in ("add", "min", "max"):
        return stmt
    lanes = [i for i in stmt.output.indices if i in tile.indices]
    if not lanes:
        return SegmentedUpdate(stmt, None)
    if lanes == [tile.indices[0]]:
        return SegmentedUpdate(stmt, tile.indices[0])
    return stmt


def _dense(loops: LoopProgram, levels, schedule: DenseTriangleSchedule) -> TileProgram:
    _power_of_two("block", schedule.block)
    out: list[TileLevel] = [TileLevel(None, levels[0].stmts)]
    axes = 0
    for level in levels[1:]:
        match level.header:
            case DenseLoop(index=i, extent=e, lower=lo, upper=hi):
                # Only the leading dense loops become grid axes; once a scalar loop opened, the
                # rest must stay scalar (a grid axis cannot sit inside a loop).
                leading = all(isinstance(lv.header, BlockAxis | Mask) for lv in out[1:])
                if axes < 2 and leading:
                    header = BlockAxis(i, e, lo, hi, axis=axes, block=schedule.block, gridded=True)
                    axes += 1
                else:
                    header = ScalarLoop(i, e, lo, hi)
            case Guard(lhs=a, rhs=b):
                header = Mask(a, b)
            case _:
                raise ScheduleError(f"{loops.source}: cannot tile {type(level.header).__name__}")
        out.append(TileLevel(header, level.stmts))
    write, notes = _dense_write(loops, out)
    mirror = write == "owned" and _mirrorable(loops, out)
    if mirror:
        notes += ("symmetric output: each canonical block stores both halves, no host mirror",)
    return TileProgram(loops, tuple(out), write, notes, mirror)


def _mirrorable(loops: LoopProgram, levels: list[TileLevel]) -> bool:
    """True when the owned output is one symmetric pair C[i,j] = C[j,i] and the grid is its
    canonical triangle (j >= i): the program holding C[i,j] can store C[j,i] too."""
    axes = [lv.header for lv in levels if isinstance(lv.header, BlockAxis) and lv.header.gridded]
    (output,) = {s.output for lv in levels for s in lv.stmts if isinstance(s, Update)}
    if len(axes) != 2 or len(output.indices) != 2 or loops.output_groups != ((0, 1),):
        return False
    first, second = axes
    return (
        {first.index, second.index} == set(output.indices)
        and first.lower is None and first.upper is None
        and second.lower == first.index and second.upper is None
        and first.block == second.block  # the mirror of a block is a block of the same shape
    )


def _dense_write(loops: LoopProgram, levels: list[TileLevel]) -> tuple[str, tuple[str, ...]]:
    """`owned` when each output element belongs to exactly one lane of one program: then the
    program reduces in registers over its scalar loops and stores once, no atomics."""
    lanes = [lv.header.index for lv in levels if isinstance(lv.header, BlockAxis)]
    updates = [(k, s) for k, lv in enumerate(levels) for s in lv.stmts if isinstance(s, Update)]
    outputs = {s.output for _, s in updates}
    if len(outputs) != 1 or any(k != len(levels) - 1 for k, _ in updates):
        return "atomic", ("several output accesses or levels of updates: atomics",)
    (output,) = outputs
    assert isinstance(output, Access)
    if len(set(output.indices)) != len(output.indices) or set(output.indices) != set(lanes):
        return "atomic", ("the output is not indexed by exactly the grid axes: atomics",)
    if any(s.reduce != loops.reduce for _, s in updates):
        return "atomic", ("mixed reductions: atomics",)
    # Lets are per-level values; an owned accumulator only needs the updates innermost.
    assert all(isinstance(s, Let | Update) for lv in levels for s in lv.stmts)
    return "owned", ("each output element is owned by one lane: registers, one store",)
