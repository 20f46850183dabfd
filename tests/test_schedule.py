"""Schedules: which loops become tiles, lanes, scalar loops and masks, and what is refused."""

import pytest

from systec_gpu import compile as compile_kernel
from systec_gpu.backends.triton_backend import _tile_starts
from systec_gpu.catalog import compile_catalog
from systec_gpu.ir.loop import Update
from systec_gpu.ir.tile import BlockAxis, NonzeroTile, ScalarLoop, SegmentedUpdate, format_tile_program
from systec_gpu.passes.lower_loops import ScheduleError
from systec_gpu.schedule import DenseTriangleSchedule, SparseTileSchedule, apply_schedule, default_schedule


def test_mttkrp_is_nonzero_tiles_with_rank_as_second_axis():
    tiles = apply_schedule(compile_catalog("mttkrp3").loops, SparseTileSchedule(nnz_per_tile=128, dense_block=16))
    headers = [lv.header for lv in tiles.levels[1:]]
    assert isinstance(headers[0], NonzeroTile) and headers[0].size == 128
    assert isinstance(headers[1], BlockAxis) and headers[1].axis == 1 and not headers[1].gridded
    assert headers[1].block == 16
    assert tiles.write == "atomic"
    assert "program per 128 canonical nonzeros of A" in format_tile_program(tiles)


def test_ssyrk_is_triangle_blocks_with_owned_output():
    tiles = apply_schedule(compile_catalog("ssyrk").loops, DenseTriangleSchedule(block=8))
    i_axis, j_axis, k_loop = (lv.header for lv in tiles.levels[1:])
    assert i_axis.gridded and j_axis.gridded and (i_axis.axis, j_axis.axis) == (0, 1)
    assert j_axis.lower == i_axis.index  # the triangle: j >= i
    assert isinstance(k_loop, ScalarLoop)
    assert tiles.write == "owned"


def test_only_canonical_blocks_are_launched():
    kernel = compile_catalog("ssyrk")
    tiles = apply_schedule(kernel.loops, DenseTriangleSchedule(block=8))
    starts = _tile_starts(tiles, (20, 20))
    assert sorted(map(tuple, starts.tolist())) == [(0, 0), (0, 8), (0, 16), (8, 8), (8, 16), (16, 16)]
    nosym = compile_catalog("ssyrk", symmetry=False)
    assert len(_tile_starts(apply_schedule(nosym.loops, DenseTriangleSchedule(block=8)), (20, 20))) == 9


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
    loops = compile_catalog("ssymm").loops
    small = default_schedule(loops, nnz=10, dense_extent=3)
    large = default_schedule(loops, nnz=10**7, dense_extent=64)
    assert small.nnz_per_tile == 16 and small.dense_block == 4
    assert large.dense_block == 64 and large.nnz_per_tile == 64
    assert default_schedule(loops, nnz=10**7, dense_extent=64, itemsize=8).nnz_per_tile == 32
    assert isinstance(default_schedule(compile_catalog("ssyrk").loops, dense_extent=1000), DenseTriangleSchedule)


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
