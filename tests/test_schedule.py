"""Schedules: which loops become tiles, lanes, scalar loops and masks, and what is refused."""

import dataclasses

import pytest

from systec_gpu import compile as compile_kernel
from systec_gpu.backends.triton_backend import _tile_starts
from systec_gpu.backends.triton_emit import emit_kernel
from systec_gpu.budget import MIN_PROGRAMS, default_schedule
from systec_gpu.catalog import compile_catalog
from systec_gpu.ir.loop import Update
from systec_gpu.ir.tile import (
    BlockAxis,
    ContractionLoop,
    DotUpdate,
    NonzeroTile,
    OwnedRowUpdate,
    RowBlock,
    ScalarLoop,
    SegmentedUpdate,
    format_tile_program,
)
from systec_gpu.passes.lower_loops import ScheduleError
from systec_gpu.schedule import (
    DenseTriangleSchedule,
    ProblemShape,
    RowBlockSchedule,
    SparseTileSchedule,
    apply_schedule,
    validate,
)


def test_mttkrp_is_nonzero_tiles_with_rank_as_second_axis():
    tiles = apply_schedule(compile_catalog("mttkrp3").loops, SparseTileSchedule(nnz_per_tile=128, dense_block=16))
    headers = [lv.header for lv in tiles.levels[1:]]
    assert isinstance(headers[0], NonzeroTile) and headers[0].size == 128
    assert isinstance(headers[1], BlockAxis) and headers[1].axis == 1 and not headers[1].gridded
    assert headers[1].block == 16
    assert tiles.write == "atomic"
    assert "program per 128 canonical nonzeros of A" in format_tile_program(tiles)


def test_ssyrk_is_triangle_blocks_with_owned_output():
    tiles = apply_schedule(compile_catalog("ssyrk").loops, DenseTriangleSchedule(block=8, dot=False))
    i_axis, j_axis, k_loop = (lv.header for lv in tiles.levels[1:])
    assert i_axis.gridded and j_axis.gridded and (i_axis.axis, j_axis.axis) == (0, 1)
    assert j_axis.lower == i_axis.index  # the triangle: j >= i
    assert isinstance(k_loop, ScalarLoop)
    assert tiles.write == "owned"


def test_ssyrk_contracts_with_tl_dot():
    """The k loop of a dense contraction becomes blocks of tl.dot, at the stated precision."""
    tiles = apply_schedule(compile_catalog("ssyrk").loops, DenseTriangleSchedule(block=32, k_block=16))
    k_loop = tiles.levels[-1].header
    (dot,) = tiles.levels[-1].stmts
    assert isinstance(k_loop, ContractionLoop) and k_loop.block == 16
    assert isinstance(dot, DotUpdate) and dot.input_precision == "ieee"
    assert (str(dot.left), str(dot.right)) == ("A[i,k]", "A[j,k]")
    assert "tl.dot" in format_tile_program(tiles) and tiles.mirror
    tf32 = apply_schedule(compile_catalog("ssyrk").loops, DenseTriangleSchedule(input_precision="tf32"))
    assert tf32.levels[-1].stmts[0].input_precision == "tf32"


def test_tl_dot_refuses_small_blocks_and_says_why():
    with pytest.raises(ScheduleError, match="at least 16.*dot=False"):
        apply_schedule(compile_catalog("ssyrk").loops, DenseTriangleSchedule(block=8))


@pytest.mark.parametrize("expr,why", [
    ("C[i,j] += A[i,k]*B[k,j]*D[i,j]", "not a product of two reads"),
    ("C[i,j] max= A[i,k] + B[k,j]", "not one unscaled"),
    ("C[i,j] += A[i,k]*B[j,i]", "not plain reads"),  # B[j,i] is read outside the k loop
    ("C[i,j] += A[i,k]*B[j,k]*D[j]", "not a product of two reads"),
    ("C[i,j] += X[i,j,k]*Y[k]", "do not pair"),
])
def test_non_contractions_keep_the_scalar_loop_and_say_why(expr, why):
    tiles = apply_schedule(compile_kernel(expr).loops, DenseTriangleSchedule(block=8))
    assert isinstance(tiles.levels[-1].header, ScalarLoop)
    assert any(why in note for note in tiles.notes), tiles.notes


def test_only_canonical_blocks_are_launched():
    kernel = compile_catalog("ssyrk")
    tiles = apply_schedule(kernel.loops, DenseTriangleSchedule(block=8, dot=False))
    starts = _tile_starts(tiles, (20, 20))
    assert sorted(map(tuple, starts.tolist())) == [(0, 0), (0, 8), (0, 16), (8, 8), (8, 16), (16, 16)]
    nosym = compile_catalog("ssyrk", symmetry=False)
    assert len(_tile_starts(apply_schedule(nosym.loops, DenseTriangleSchedule(block=8, dot=False)), (20, 20))) == 9


def test_scalar_output_of_a_dense_loop_is_atomic():
    tiles = apply_schedule(compile_kernel("y[] += x[i]*z[i]").loops)
    assert tiles.write == "atomic"


@pytest.mark.parametrize("schedule,match", [
    (DenseTriangleSchedule(), "needs a SparseTileSchedule"),
    (SparseTileSchedule(nnz_per_tile=100), "power of two"),
    (SparseTileSchedule(dense_block=0), "power of two"),
])
def test_bad_schedules_for_sparse_kernels_are_refused(schedule, match):
    with pytest.raises(ScheduleError, match=match):
        apply_schedule(compile_catalog("ssymm").loops, schedule)


def test_dense_kernel_needs_dense_schedule():
    with pytest.raises(ScheduleError, match="needs a DenseTriangleSchedule"):
        apply_schedule(compile_catalog("ssyrk").loops, SparseTileSchedule())
    with pytest.raises(ScheduleError, match="power of two"):
        apply_schedule(compile_catalog("ssyrk").loops, DenseTriangleSchedule(block=48))


def test_kernel_without_loops_is_refused_with_a_reason():
    with pytest.raises(ScheduleError, match="no loops"):
        apply_schedule(compile_kernel("y[] += a[] * b[]").loops)


def test_default_schedule_scales_with_work_and_dtype():
    """Tiles shrink for small work, fp64 and costly programs; CSR drivers get row blocks."""
    ssymm = compile_catalog("ssymm").loops
    small = default_schedule(ssymm, ProblemShape(nnz=10, rows=6, dense_extent=3))
    assert isinstance(small, RowBlockSchedule) and small.dense_block == 4 and small.rows_per_block == 1
    mttkrp = compile_catalog("mttkrp3").loops
    large = default_schedule(mttkrp, ProblemShape(nnz=10**7, dense_extent=32))
    assert isinstance(large, SparseTileSchedule) and large.dense_block == 32
    fp64 = default_schedule(mttkrp, ProblemShape(nnz=10**7, dense_extent=32, itemsize=8))
    assert fp64.nnz_per_tile * fp64.dense_block < large.nnz_per_tile * large.dense_block
    cheap = default_schedule(compile_catalog("mttkrp3", symmetry=False).loops, ProblemShape(nnz=10**7, dense_extent=32))
    assert cheap.nnz_per_tile > large.nnz_per_tile  # one update per nonzero, not three
    dense = default_schedule(compile_catalog("ssyrk").loops, ProblemShape(grid_extent=1000, contraction=50))
    assert isinstance(dense, DenseTriangleSchedule) and dense.dot and dense.num_warps == 8
    assert default_schedule(mttkrp, nnz=10**7, dense_extent=32) == large  # keyword sizes, as before


def test_enough_programs_for_every_sm():
    """100k nonzeros never make fewer programs than 4 per SM of an H100 when tiles can shrink."""
    for name in ("ssymv", "mttkrp3", "mttkrp3"):
        loops = compile_catalog(name, symmetry=False).loops
        shape = ProblemShape(nnz=100_000, rows=10_000 if name == "ssymv" else 0, dense_extent=32)
        schedule = default_schedule(loops, shape)
        programs = (10_000 // schedule.rows_per_block if isinstance(schedule, RowBlockSchedule)
                    else 100_000 // schedule.nnz_per_tile)
        assert programs >= MIN_PROGRAMS


def test_row_blocks_for_csr_drivers():
    """SSYMV: the row's own y[i] is owned (registers, one write per row), y[j] scatters; no
    update reduced twice; the symmetric kernel writes rows by an atomic, the plain SpMV stores."""
    loops = compile_catalog("ssymv").loops
    tiles = apply_schedule(loops, RowBlockSchedule(rows_per_block=8, lanes_per_row=4, row_write="store"))
    header = tiles.levels[1].header
    assert isinstance(header, RowBlock) and (header.rows, header.lanes) == (8, 4)
    owned, scattered = [s for lv in tiles.levels for s in lv.stmts if isinstance(s, OwnedRowUpdate | Update)]
    assert isinstance(owned, OwnedRowUpdate) and str(owned.update.output) == "y[i]"
    assert isinstance(scattered, Update) and str(scattered.output) == "y[j]"
    assert tiles.buffers == 2 and tiles.stores  # stored rows + scattered atomics: two buffers
    one = apply_schedule(loops, RowBlockSchedule(row_write="atomic"))
    assert one.buffers == 1 and not one.stores
    assert default_schedule(loops, ProblemShape(nnz=100, rows=10)).row_write == "atomic"
    plain = compile_catalog("ssymv", symmetry=False).loops
    assert default_schedule(plain, ProblemShape(nnz=100, rows=10)).row_write == "store"
    assert apply_schedule(plain, RowBlockSchedule()).buffers == 1


def test_row_blocks_hoist_the_dense_axis_outside_the_steps():
    tiles = apply_schedule(compile_catalog("ssymm").loops, RowBlockSchedule())
    assert tiles.levels[1].header.dense_outside
    assert "outside the row steps" in format_tile_program(tiles)
    source = emit_kernel(tiles).source
    # X[i,r] is read once per row block and dense block, before the steps through the nonzeros
    assert source.index("X_i_r = tl.load") < source.index("for step in range")


def test_row_blocks_need_csr():
    with pytest.raises(ScheduleError, match="row blocks need a CSR driver"):
        apply_schedule(compile_catalog("mttkrp3").loops, RowBlockSchedule())


@pytest.mark.parametrize("schedule,match", [
    (RowBlockSchedule(rows_per_block=3), "rows_per_block must be a power of two"),
    (RowBlockSchedule(row_write="maybe"), "row_write"),
    (SparseTileSchedule(num_warps=3), "num_warps"),
    (SparseTileSchedule(index_bits=16), "index_bits"),
    (DenseTriangleSchedule(input_precision="fp8"), "input_precision"),
])
def test_illegal_schedules_say_why(schedule, match):
    with pytest.raises(ScheduleError, match=match):
        validate(schedule)


def test_schedules_are_frozen_data():
    schedule = RowBlockSchedule()
    with pytest.raises(dataclasses.FrozenInstanceError):
        schedule.rows_per_block = 4


def test_updates_by_the_leading_index_are_segmented():
    """SSYMV: y[i] (the sorted leading index) is reduced in the tile, y[j] scatters; off: both scatter."""
    loops = compile_catalog("ssymv").loops
    tiles = apply_schedule(loops, SparseTileSchedule(nnz_per_tile=16))
    stmts = [s for lv in tiles.levels for s in lv.stmts if isinstance(s, Update | SegmentedUpdate)]
    assert [type(s).__name__ for s in stmts] == ["SegmentedUpdate", "Update"]
    assert stmts[0].key.name == "i" and str(stmts[0].update.output) == "y[i]"
    assert "runs of equal i reduced" in format_tile_program(tiles)
    off = apply_schedule(loops, SparseTileSchedule(nnz_per_tile=16, segmented=False))
    assert not any(isinstance(s, SegmentedUpdate) for lv in off.levels for s in lv.stmts)


def test_output_without_lane_index_is_reduced_over_the_tile():
    tiles = apply_schedule(compile_catalog("syprd").loops)
    (update,) = [s for lv in tiles.levels for s in lv.stmts if isinstance(s, SegmentedUpdate)]
    assert update.key is None
    assert "the tile reduced" in format_tile_program(tiles)


def test_ttm_outputs_scatter():
    """TTM writes C[j,l,:] and the like: never indexed by the leading index alone."""
    tiles = apply_schedule(compile_catalog("ttm").loops)
    assert not any(isinstance(s, SegmentedUpdate) for lv in tiles.levels for s in lv.stmts)


def test_symmetric_pair_output_is_stored_to_both_halves():
    assert apply_schedule(compile_catalog("ssyrk").loops).mirror
    assert not apply_schedule(compile_catalog("ssyrk", symmetry=False).loops).mirror  # full square launched
    assert not apply_schedule(compile_kernel("C[i,j] += A[i,k]*B[k,j]").loops).mirror
