"""Schedule sizes from a register budget (DESIGN.md section 8: no spills, enough programs).

A tile of E elements per thread keeps a few registers per element alive for every value the
program computes on its dense lanes: each dense read, each partial product, and for each
scattered update its 64-bit address and value. `lane_cost` counts them from the tile program;
the sizes are then the largest powers of two whose elements per thread fit the budget, with
`num_warps` chosen with them, never so large that the GPU gets fewer programs than it has SMs
several times over. The constants were fitted to `perf/aot.py` compilations for sm_90 (ptxas
registers of every catalog kernel over a sweep of tile sizes); `tests/test_aot.py` checks that
the defaults compile without spills.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

from .ir.loop import Access, Call, DenseLoop, Let, LoopProgram, SparseLoop, Update
from .ir.tile import ContractionLoop
from .ir.traverse import walk
from .passes.lower_loops import ScheduleError
from .schedule import (
    DenseTriangleSchedule,
    ProblemShape,
    RowBlockSchedule,
    Schedule,
    SparseTileSchedule,
    apply_schedule,
)

SMS = 132  # streaming multiprocessors of an H100 SXM (the smallest count the budget plans for)
MIN_PROGRAMS = 4 * SMS  # below this the tile shrinks: idle SMs cost more than small tiles
REGISTER_TARGET = 96  # per thread: no spills with room, and at least 5 programs of 4 warps per SM
BASE_REGISTERS = 24  # program ids, loop counters, row spans, masks
SLOPE = 1.2  # ptxas registers per counted value and element, fitted (and rounded up) on sm_90
# A large call (16M nonzeros over 1M rows, rank 32, 4096-wide dense operands): the schedule a
# kernel's source is shown with when no call says otherwise.
TYPICAL = ProblemShape(nnz=2**24, rows=2**20, dense_extent=32, grid_extent=4096, contraction=4096, index_bits=64)


@dataclass(frozen=True)
class LaneCost:
    """What the program keeps alive per element of its dense tile (per 4-byte value)."""

    reads: int  # dense reads inside the innermost scope (the dense loop, else the nonzero)
    products: int  # multiplications and other calls there
    scattered: int  # updates written per lane by an atomic (address + value)
    reduced: int  # updates reduced in registers first (segmented runs, owned rows, whole tile)
    coordinates: int  # coordinates of the sparse driver (per element when there is no dense axis)
    dense_axis: bool  # a dense loop is a tile axis: per-nonzero values are shared along it

    def per_element(self, itemsize: int) -> float:
        words = itemsize / 4
        cost = words * (self.reads + 0.5 * self.products) + self.scattered * (2 + words) + self.reduced * (1 + words)
        if not self.dense_axis:
            # every element is a nonzero: its coordinates, its value and its gather address
            cost += self.coordinates + words + 2
        return cost


@functools.lru_cache(maxsize=256)  # chosen per call: walk each program once
def lane_cost(loops: LoopProgram) -> LaneCost:
    """Count what the body of the program's innermost scope computes per lane."""
    sparse = next((n for n in walk(loops.body) if isinstance(n, SparseLoop)), None)
    scope = sparse.body if sparse is not None else loops.body
    dense = next((n for n in walk(scope) if isinstance(n, DenseLoop)), None)
    body = dense.body if dense is not None else scope
    reads = products = scattered = reduced = 0
    lanes = tuple(sparse.indices) if sparse is not None else ()
    for node in walk(body):
        if isinstance(node, Let | Update):
            reads += sum(1 for n in walk(node.value) if isinstance(n, Access))
            products += sum(len(n.args) - 1 for n in walk(node.value) if isinstance(n, Call))
        if isinstance(node, Update):
            keyed = [i for i in node.output.indices if i in lanes]
            if sparse is not None and (not keyed or keyed == [lanes[0]]):
                reduced += 1  # segmented by the leading index, or reduced over the whole tile
            else:
                scattered += 1
    return LaneCost(reads, products, scattered, reduced, max(len(lanes) - 1, 0), dense is not None)


def _floor_power_of_two(n: float) -> int:
    return 1 << max(0, int(n).bit_length() - 1) if n >= 1 else 1


def _ceil_power_of_two(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


@functools.lru_cache(maxsize=256)
def elements_per_thread(loops: LoopProgram, itemsize: int) -> int:
    """The largest power of two of dense-tile elements one thread may hold within the target."""
    cost = SLOPE * lane_cost(loops).per_element(itemsize)
    return _floor_power_of_two(max(1.0, (REGISTER_TARGET - BASE_REGISTERS) / max(cost, 1.0)))


@functools.lru_cache(maxsize=256)  # a schedule is chosen per call: walk each program once
def _structure(loops: LoopProgram) -> tuple:
    """(the sparse loop or None, whether a dense loop inside it gives a vector tile axis, whether
    a CSR row's own output is the only write of the output)."""
    sparse = next((n for n in walk(loops.body) if isinstance(n, SparseLoop)), None)
    if sparse is None:
        return None, False, False
    vector = any(isinstance(n, DenseLoop) for n in walk(sparse.body))
    # The row's own output leaves the registers by a plain store when nothing else writes the
    # output; beside scattered (mirrored) updates, by one relaxed atomic per row: a store would
    # need a second buffer and a pass summing the two after the kernel.
    alone = all(set(u.output.indices) & set(sparse.indices) == {sparse.indices[0]}
                for u in walk(sparse) if isinstance(u, Update))
    return sparse, vector, alone


def default_schedule(loops: LoopProgram, shape: ProblemShape | None = None, **sizes) -> Schedule:
    """The heuristic schedule of `loops` for `shape` (or ProblemShape(**sizes)); without sizes,
    the schedule of a large call (TYPICAL; 64-bit indices: always valid), e.g. for Kernel.source()."""
    if shape is None:
        shape = ProblemShape(**sizes) if sizes else TYPICAL
    sparse, vector, alone = _structure(loops)
    bits = shape.index_bits
    per_thread = elements_per_thread(loops, shape.itemsize)
    if sparse is None:
        return _dense(loops, shape)
    dense_block = min(_ceil_power_of_two(max(shape.dense_extent, 1)), 64) if vector else 1
    if sparse.format.row_pointers:
        # rank-axis rows at most 32 lanes wide (see _rows)
        return _rows(shape, per_thread, min(dense_block, 32), bits, "store" if alone else "atomic")
    warps = 4
    per_tile = _floor_power_of_two(per_thread * 32 * warps / dense_block)
    enough = _floor_power_of_two(max(shape.nnz, 1) / MIN_PROGRAMS)  # enough programs for every SM
    per_tile = max(16, min(per_tile, 1024, enough, _ceil_power_of_two(max(shape.nnz, 1))))
    # at the smallest tile, a costly program (high-order fp64 MTTKRP) narrows its dense axis
    while dense_block > 8 and per_tile * dense_block > per_thread * 32 * warps:
        dense_block //= 2
    # a small tile takes fewer warps rather than replicating lanes
    warps = _warps(min(warps, max(1, per_tile * dense_block // 32)))
    return SparseTileSchedule(nnz_per_tile=per_tile, dense_block=dense_block, num_warps=warps, index_bits=bits)


def _warps(n: int) -> int:
    return min(8, _floor_power_of_two(max(1, n)))


def _rows(shape: ProblemShape, per_thread: int, dense_block: int, bits: int, row_write: str) -> RowBlockSchedule:
    """Lanes per row: the power of two nearest the mean row length (few idle lanes, few steps);
    rows per block to fill the register target; enough programs for every SM.
    Rows with a rank axis (SSYMM-like) take 2 warps and at most 32 rank lanes: the H200 tuning run
    (perf/results/tune-nvidia-h200-2026-11-27.log: R = 16-128 on a 3-D stencil, symmetric and
    not) chose 1-2 warps in all 8 cases, 1.5-2.1x faster than 4 warps at the same elements per
    thread, and 32 rank lanes over 64 in 3 of the 4 cases with R >= 64."""
    mean = shape.nnz / shape.rows if shape.rows else 1.0
    lanes = max(4, min(32, 1 << round(math.log2(max(mean, 1.0)))))
    warps = 2 if dense_block > 1 else 4
    rows = _floor_power_of_two(per_thread * 32 * warps / (lanes * dense_block))
    enough = _floor_power_of_two(max(shape.rows, 1) / MIN_PROGRAMS)
    rows = max(1, min(rows, 256, enough, _ceil_power_of_two(max(shape.rows, 1))))
    warps = _warps(min(warps, max(1, rows * lanes * dense_block // 32)))
    return RowBlockSchedule(rows_per_block=rows, lanes_per_row=lanes, dense_block=dense_block, row_write=row_write,
                            num_warps=warps, index_bits=bits)


@functools.lru_cache(maxsize=256)
def _contracts(loops: LoopProgram) -> bool:
    """The program is a dense contraction that tl.dot runs (see schedule._contraction)."""
    try:
        tiles = apply_schedule(loops, DenseTriangleSchedule(block=64, k_block=32))
    except ScheduleError:
        return False
    return any(isinstance(lv.header, ContractionLoop) for lv in tiles.levels)


def _dense(loops: LoopProgram, shape: ProblemShape) -> DenseTriangleSchedule:
    """A contraction (SSYRK): 64 x 64 output blocks over 8 warps (about 80 registers on sm_90,
    fp32 and fp64), the contraction 32 (fp32) or 16 (fp64) at a time. Other dense programs keep
    scalar loops over [block, block] lanes."""
    small = max(16, _ceil_power_of_two(max(shape.grid_extent, 1)))
    k_block = 32 if shape.itemsize <= 4 else 16
    if _contracts(loops):
        block = min(64, small)
        return DenseTriangleSchedule(block=block, k_block=k_block, num_warps=8 if block == 64 else 4,
                                     index_bits=shape.index_bits)
    # Nested scalar loops keep every value of the block live across iterations: 8 x 8 lanes on
    # two warps (1 per thread). Larger blocks (16 x 16 over 2 or 4 warps, 32 x 32) made ptxas
    # spill a few bytes, predicates mostly, in random 4- and 5-D programs (perf/aot.py sweeps of
    # the property tests' generator). 8 x 8 on one warp (2 per thread) spilled in 5 of the 64
    # dense programs of a 40-example sweep (5-D min= with 10 updates, 96 registers); on two
    # warps in 1 (8 bytes; 2 once min=/max= propagate nan), at 56 registers or fewer.
    block, warps = min(8, small), 2
    return DenseTriangleSchedule(block=block, k_block=k_block, num_warps=warps, index_bits=shape.index_bits)
