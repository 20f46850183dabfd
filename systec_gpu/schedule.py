"""Schedules: how a loop program is cut into GPU tiles (see ir/tile.py and DESIGN.md sections 5, 8).

A schedule is data (a frozen dataclass); `apply_schedule(loops, schedule)` maps the loop chain
onto tile levels or raises ScheduleError with the reason. Sizes are powers of two because
`tl.arange` needs them.

- `SparseTileSchedule`: one program per fixed count of canonical nonzeros (COO drivers; CSR ones
  too, with a row index expanded per nonzero).
- `RowBlockSchedule`: one program per block of CSR rows: the row's own output accumulates in
  registers and is written once; only the mirrored half is scattered.
- `DenseTriangleSchedule`: programs over blocks of the two outermost dense loops (canonical
  blocks only), `tl.dot` where the program is a dense contraction.

`budget.default_schedule(loops, shape)` chooses one from a `ProblemShape` (sizes, never values):
sizes come from a register budget that counts the program's values per lane, so that no default
schedule spills; a device-tuned table (schedule_table.py) overrides it when it has an entry for
the GPU at hand.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from . import algebra
from .ir.einsum import Call, Index
from .ir.loop import Access, DenseLoop, Guard, Let, LoopProgram, Ref, SparseLoop, Update
from .ir.tile import (
    BlockAxis,
    ContractionLoop,
    DotUpdate,
    Mask,
    NonzeroTile,
    OwnedRowUpdate,
    RowBlock,
    ScalarLoop,
    SegmentedUpdate,
    TileLevel,
    TileProgram,
)
from .passes.loop_nest import unnest
from .passes.lower_loops import ScheduleError

WARPS = (1, 2, 4, 8, 16)
PRECISIONS = ("ieee", "tf32", "tf32x3")


@dataclass(frozen=True)
class SparseTileSchedule:
    """One program per `nnz_per_tile` canonical nonzeros; the first dense loop inside is a
    second tile axis of `dense_block` lanes (looped over in blocks).

    `segmented`: updates whose output varies along the nonzeros only through the (sorted)
    leading index, or not at all, are reduced inside the tile before one write per output
    element (`SegmentedUpdate`); False keeps one masked atomic per lane (tests compare both).
    `index_bits` 32: int32 coordinates and offsets (valid only when every extent, offset and
    the nonzero count stay below 2**31; the launch decides)."""

    nnz_per_tile: int = 256
    dense_block: int = 32
    segmented: bool = True
    num_warps: int = 4
    index_bits: int = 64


@dataclass(frozen=True)
class RowBlockSchedule:
    """One program per `rows_per_block` rows of a CSR driver, `lanes_per_row` nonzeros of each
    row at a time; the first dense loop is a third tile axis of `dense_block` lanes.

    `row_write`: how the row's own output (y[i]) leaves the registers: "store" (a plain store;
    scattered updates then go to a second output buffer, summed after the kernel) or "atomic"
    (one relaxed atomic per row and dense lane into the one buffer)."""

    rows_per_block: int = 16
    lanes_per_row: int = 16
    dense_block: int = 32
    row_write: str = "store"
    num_warps: int = 4
    index_bits: int = 64


@dataclass(frozen=True)
class DenseTriangleSchedule:
    """Programs over `block`-sized blocks of the two outermost dense loops (only blocks that
    meet the canonical triangle are launched); inner loops stay scalar loops, except that with
    `dot` a dense contraction (output += X[i,k] * Y[j,k]) steps its k loop `k_block` at a time
    through `tl.dot` at `input_precision` ("ieee": exact fp32 products, like cuBLAS without TF32;
    "tf32"/"tf32x3": tensor-core TF32). Blocks must be >= 16 where tl.dot is used."""

    block: int = 64
    k_block: int = 32
    dot: bool = True
    input_precision: str = "ieee"
    num_warps: int = 4
    index_bits: int = 64


Schedule = SparseTileSchedule | RowBlockSchedule | DenseTriangleSchedule


@dataclass(frozen=True)
class ProblemShape:
    """The sizes a schedule is chosen from (never values): stored nonzeros of the sparse driver
    (0: no driver), rows of a CSR driver, the extent of the dense loop that becomes a tile axis,
    the extents of the dense grid loops and the contraction, the value size in bytes, and the
    index width the launch needs (32 when every extent, offset and count is below 2**31)."""

    nnz: int = 0
    rows: int = 0
    dense_extent: int = 0
    grid_extent: int = 0
    contraction: int = 0
    itemsize: int = 4
    index_bits: int = 32


def _power_of_two(name: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1 or value & (value - 1):
        raise ScheduleError(f"{name} must be a power of two >= 1 (tl.arange needs it), got {value!r}")


def validate(schedule: Schedule) -> Schedule:
    """`schedule`, or ScheduleError saying which field is illegal and why."""
    if not isinstance(schedule, SparseTileSchedule | RowBlockSchedule | DenseTriangleSchedule):
        raise ScheduleError(f"not a schedule: {schedule!r}")
    if schedule.num_warps not in WARPS:
        raise ScheduleError(f"num_warps must be one of {WARPS}, got {schedule.num_warps!r}")
    if schedule.index_bits not in (32, 64):
        raise ScheduleError(f"index_bits must be 32 or 64, got {schedule.index_bits!r}")
    match schedule:
        case SparseTileSchedule():
            _power_of_two("nnz_per_tile", schedule.nnz_per_tile)
            _power_of_two("dense_block", schedule.dense_block)
        case RowBlockSchedule():
            _power_of_two("rows_per_block", schedule.rows_per_block)
            _power_of_two("lanes_per_row", schedule.lanes_per_row)
            _power_of_two("dense_block", schedule.dense_block)
            if schedule.row_write not in ("store", "atomic"):
                raise ScheduleError(f"row_write must be 'store' or 'atomic', got {schedule.row_write!r}")
        case DenseTriangleSchedule():
            _power_of_two("block", schedule.block)
            _power_of_two("k_block", schedule.k_block)
            if schedule.input_precision not in PRECISIONS:
                raise ScheduleError(f"input_precision must be one of {PRECISIONS}, got {schedule.input_precision!r}")
    return schedule


# ---------------------------------------------------------------------------------------------
# Applying a schedule


@functools.lru_cache(maxsize=256)  # pure in (program, schedule): launches repeat it per call
def apply_schedule(loops: LoopProgram, schedule: Schedule | None = None) -> TileProgram:
    """The tile program of `loops` under `schedule` (None: the default kind at its default sizes:
    row blocks for CSR drivers, nonzero tiles for COO ones, triangle blocks without a driver)."""
    levels = unnest(loops.body)
    if len(levels) == 1:
        raise ScheduleError(
            f"{loops.source}: the kernel has no loops (every index is fixed), so there is nothing to tile; "
            "use the numba or reference backend"
        )
    if any(isinstance(s, Update) for s in levels[0].stmts):
        raise ScheduleError(f"{loops.source}: updates outside every loop cannot be tiled")
    first = levels[1].header
    if schedule is None:
        if isinstance(first, SparseLoop):
            schedule = RowBlockSchedule() if first.format.row_pointers else SparseTileSchedule()
        else:
            schedule = DenseTriangleSchedule()
    validate(schedule)
    if isinstance(first, SparseLoop):
        if isinstance(schedule, RowBlockSchedule):
            return _rows(loops, levels, schedule)
        if not isinstance(schedule, SparseTileSchedule):
            raise ScheduleError(f"{loops.source} is driven by sparse {first.tensor}: it needs a SparseTileSchedule "
                                "or (CSR drivers) a RowBlockSchedule")
        return _sparse(loops, levels, schedule)
    if any(isinstance(lv.header, SparseLoop) for lv in levels):
        raise ScheduleError(f"{loops.source}: a sparse loop nested inside dense loops is not supported by the tiler")
    if not isinstance(first, DenseLoop):
        raise ScheduleError(f"{loops.source}: the outermost loop is a guard, which binds nothing to tile over")
    if not isinstance(schedule, DenseTriangleSchedule):
        raise ScheduleError(f"{loops.source} has no sparse driver: it needs a DenseTriangleSchedule")
    return _dense(loops, levels, schedule)


def _inner_headers(loops: LoopProgram, levels, first_axis: int, dense_block: int) -> list:
    """Tile headers of the levels inside the sparse loop: the first dense loop becomes the
    vector tile axis `first_axis` (factor-matrix columns, rank: contiguous rows), deeper ones
    scalar loops, guards masks."""
    headers, vector_axis_used = [], False
    for level in levels:
        match level.header:
            case SparseLoop():
                raise ScheduleError(f"{loops.source}: more than one sparse loop")
            case DenseLoop(index=i, extent=e, lower=lo, upper=hi):
                if not vector_axis_used:
                    headers.append(BlockAxis(i, e, lo, hi, axis=first_axis, block=dense_block, gridded=False))
                    vector_axis_used = True
                else:
                    headers.append(ScalarLoop(i, e, lo, hi))
            case Guard(lhs=a, rhs=b):
                headers.append(Mask(a, b))
            case _:
                raise ScheduleError(f"{loops.source}: cannot tile {type(level.header).__name__}")
    return headers


def _sparse(loops: LoopProgram, levels, schedule: SparseTileSchedule) -> TileProgram:
    sparse = levels[1].header
    tile = NonzeroTile(sparse.tensor, sparse.indices, sparse.format, schedule.nnz_per_tile)
    headers = [tile, *_inner_headers(loops, levels[2:], 1, schedule.dense_block)]
    out = [TileLevel(None, levels[0].stmts)] + [TileLevel(h, lv.stmts) for h, lv in zip(headers, levels[1:],
                                                                                          strict=True)]
    notes = ["scattered outputs: relaxed atomics (nonzeros of several tiles can hit one element)"]
    if sparse.format.tile_note:
        notes.append(sparse.format.tile_note)
    if schedule.segmented:
        out = [TileLevel(lv.header, tuple(_segment(s, tile) for s in lv.stmts)) for lv in out]
        keys = {s.key for lv in out for s in lv.stmts if isinstance(s, SegmentedUpdate)}
        if tile.indices[0] in keys:
            notes.append(f"outputs indexed by the sorted leading index {tile.indices[0]}: runs of equal "
                         f"{tile.indices[0]} reduced in the tile (segmented scan), one atomic per run")
        if None in keys:
            notes.append("outputs indexed by no lane index: reduced over the tile, one atomic per element")
    return TileProgram(loops, tuple(out), "atomic", tuple(notes), num_warps=schedule.num_warps,
                       index_bits=schedule.index_bits)


def _segment(stmt, tile: NonzeroTile):
    """`stmt` as a SegmentedUpdate when its lanes can be reduced before writing: the output
    varies along the nonzero lanes only through the leading (sorted) driver index, or not at
    all. Other updates (e.g. y[j] of SSYMV) scatter: their lanes rarely share an element."""
    if not isinstance(stmt, Update) or algebra.operator(stmt.reduce).atomic is None:
        return stmt
    lanes = [i for i in stmt.output.indices if i in tile.indices]
    if not lanes:
        return SegmentedUpdate(stmt, None)
    if lanes == [tile.indices[0]]:
        return SegmentedUpdate(stmt, tile.indices[0])
    return stmt


def _rows(loops: LoopProgram, levels, schedule: RowBlockSchedule) -> TileProgram:
    """Row blocks of a CSR driver. The row's own output (indexed by the row and no column) is an
    OwnedRowUpdate; outputs indexed by no lane index are reduced over the block (one atomic per
    element and program); the rest (the mirrored half, y[j]) scatter with relaxed atomics."""
    sparse = levels[1].header
    if not sparse.format.row_pointers:
        raise ScheduleError(f"{loops.source}: row blocks need a CSR driver, but {sparse.tensor} is iterated as "
                            f"{sparse.format}; use a SparseTileSchedule")
    inner = _inner_headers(loops, levels[2:], 2, schedule.dense_block)
    vector = next((h for h in inner if isinstance(h, BlockAxis)), None)
    # The dense loop runs outside the row steps when it directly follows the sparse loop and the
    # sparse level holds no update (its statements are then re-run per dense block: lets only).
    dense_outside = bool(inner) and isinstance(inner[0], BlockAxis) and not any(
        isinstance(s, Update) for s in levels[1].stmts)
    header = RowBlock(sparse.tensor, sparse.indices, schedule.rows_per_block, schedule.lanes_per_row, dense_outside)
    headers = [header, *inner]
    owned_access: Access | None = None
    out = [TileLevel(None, levels[0].stmts)]
    for k, (h, level) in enumerate(zip(headers, levels[1:], strict=True)):
        enclosing = headers[1:k + 1]
        stmts = []
        for s in level.stmts:
            if isinstance(s, Update) and algebra.operator(s.reduce).atomic is not None:
                kind = _row_update_kind(s, sparse.indices, enclosing, vector, dense_outside)
                if kind == "owned" and owned_access not in (None, s.output):
                    kind = "scatter"  # one owned access: its elements are stored by one program each
                if kind == "owned":
                    owned_access = s.output
                    s = OwnedRowUpdate(s, schedule.row_write)
                elif kind == "block":
                    s = SegmentedUpdate(s, None)
            stmts.append(s)
        out.append(TileLevel(h, tuple(stmts)))
    updates = [s for lv in out for s in lv.stmts]
    stores = any(isinstance(s, OwnedRowUpdate) and s.write == "store" for s in updates)
    atomics = any(isinstance(s, Update | SegmentedUpdate) or (isinstance(s, OwnedRowUpdate) and s.write == "atomic")
                  for s in updates)
    notes = [f"rows of {sparse.tensor} in blocks: no row index per nonzero (the row is the lane's position)"]
    if owned_access is not None:
        how = "stored once per row" if schedule.row_write == "store" else "written by one atomic per row"
        notes.append(f"{owned_access}: the row's own output, reduced in registers, {how}")
    if any(isinstance(s, Update) for s in updates):
        notes.append("other outputs (the mirrored half): relaxed atomics per lane")
    if dense_outside and vector is not None:
        notes.append(f"the {vector.index} blocks run outside the row steps (row-invariant reads hoisted)")
    buffers = 2 if stores and atomics else 1
    if buffers == 2:
        notes.append("stored rows and atomics write separate output buffers, summed after the kernel")
    return TileProgram(loops, tuple(out), "rows", tuple(notes), num_warps=schedule.num_warps,
                       index_bits=schedule.index_bits, buffers=buffers)


def _row_update_kind(update: Update, driver: tuple[Index, ...], enclosing, vector, dense_outside: bool) -> str:
    """owned (the row's own output), block (no lane index: reduced over the block) or scatter."""
    if any(isinstance(h, ScalarLoop) for h in enclosing):
        return "scatter"  # registers cannot hold an accumulator per scalar-loop iteration
    indices = update.output.indices
    lanes = [i for i in indices if i in driver]
    vector_index = vector.index if vector is not None else None
    if len(set(indices)) != len(indices) or any(i not in driver and i != vector_index for i in indices):
        return "scatter"
    if vector_index in indices and not dense_outside:
        return "scatter"  # the accumulator would have to span every dense block
    if lanes == [driver[0]]:
        return "owned"
    return "block" if not lanes else "scatter"


def _dense(loops: LoopProgram, levels, schedule: DenseTriangleSchedule) -> TileProgram:
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
    if write == "atomic":
        # Outputs indexed by grid axes only (or by nothing) are reduced over the program's lanes
        # and loops in registers and written once at its end, not by an atomic per lane and step.
        grid = {lv.header.index for lv in out if isinstance(lv.header, BlockAxis)}
        out = [TileLevel(lv.header, tuple(
            SegmentedUpdate(s, None) if isinstance(s, Update) and algebra.operator(s.reduce).atomic is not None
            and set(s.output.indices) <= grid and len(set(s.output.indices)) == len(s.output.indices) else s
            for s in lv.stmts)) for lv in out]
        if any(isinstance(s, SegmentedUpdate) for lv in out for s in lv.stmts):
            notes += ("outputs indexed by grid axes only: reduced in registers, one atomic per element at the end",)
    mirror = write == "owned" and _mirrorable(loops, out)
    if mirror:
        notes += ("symmetric output: each canonical block stores both halves, no host mirror",)
    if schedule.dot and write == "owned":
        contracted, reason = _contraction(out, schedule)
        if contracted is not None:
            out = contracted
            notes += (f"dense contraction: tl.dot over blocks of {schedule.k_block}, "
                      f"input_precision={schedule.input_precision}",)
        else:
            notes += (f"no tl.dot: {reason}",)
    return TileProgram(loops, tuple(out), write, notes, mirror, num_warps=schedule.num_warps,
                       index_bits=schedule.index_bits)


def _contraction(levels: list[TileLevel], schedule: DenseTriangleSchedule):
    """The levels with the innermost scalar loop as a ContractionLoop and its update as a
    DotUpdate, when the program is output[i,j] += X[..i..k..] * Y[..j..k..] over two grid axes
    (no factor, no mask inside); else (None, why not)."""
    axes = [lv.header for lv in levels if isinstance(lv.header, BlockAxis)]
    last = levels[-1]
    if len(axes) != 2 or not isinstance(last.header, ScalarLoop) or len(levels) != 4:
        return None, "not two grid axes around one scalar loop"
    k = last.header
    if k.lower is not None or k.upper is not None:
        return None, f"the {k.index} loop is bounded by another index"
    updates = [s for s in last.stmts if isinstance(s, Update)]
    if len(updates) != 1 or algebra.operator(updates[0].reduce).name != "add" or updates[0].factor is not None:
        return None, "not one unscaled += update"
    if updates[0].when:
        return None, "the update is guarded by the membership of a sparse factor"
    update = updates[0]
    lets = {s.name: s.value for s in last.stmts if isinstance(s, Let)}
    value = update.value
    if not (isinstance(value, Call) and value.op == "mul" and len(value.args) == 2):
        return None, "the value is not a product of two reads"
    reads = [lets.get(a.name) if isinstance(a, Ref) else a for a in value.args]
    if not all(isinstance(r, Access) for r in reads):
        return None, "the factors are not plain reads"
    first, second = axes[0].index, axes[1].index
    spans = [set(r.indices) for r in reads]
    if spans[0] == {second, k.index} and spans[1] == {first, k.index}:
        reads.reverse()
        spans.reverse()
    if spans != [{first, k.index}, {second, k.index}]:
        return None, f"the reads do not pair {first} with {k.index} and {second} with {k.index}"
    if len(lets) != len(last.stmts) - 1:
        return None, "other statements share the contraction loop"
    if schedule.block < 16 or schedule.k_block < 16:
        raise ScheduleError(f"tl.dot needs blocks of at least 16 (block={schedule.block}, "
                            f"k_block={schedule.k_block}); pass dot=False for smaller blocks")
    dot = DotUpdate(update, reads[0], reads[1], schedule.input_precision)
    header = ContractionLoop(k.index, k.extent, schedule.k_block)
    return [*levels[:-1], TileLevel(header, (dot,))], None


def _updates(levels: list[TileLevel]) -> list[Update]:
    found = []
    for lv in levels:
        for s in lv.stmts:
            if isinstance(s, Update):
                found.append(s)
            elif isinstance(s, SegmentedUpdate | OwnedRowUpdate | DotUpdate):
                found.append(s.update)
    return found


def _mirrorable(loops: LoopProgram, levels: list[TileLevel]) -> bool:
    """True when the owned output is one symmetric pair C[i,j] = C[j,i] and the grid is its
    canonical triangle (j >= i): the program holding C[i,j] can store C[j,i] too."""
    axes = [lv.header for lv in levels if isinstance(lv.header, BlockAxis) and lv.header.gridded]
    (output,) = {u.output for u in _updates(levels)}
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
