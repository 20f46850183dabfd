"""The Triton schedules under the CPU interpreter, against the numpy oracle: CSR row blocks (the
row's own output in registers, the mirrored half scattered; stored or atomic row writes),
segmented writes, class factors as selects, int32 and int64 index arithmetic, the schedule
overrides and the device-tuned table.

TRITON_INTERPRET must be set before a generated kernel is decorated (see test_triton_backend.py).
"""

import json
import os

os.environ["TRITON_INTERPRET"] = "1"

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from systec_gpu import compile as compile_kernel  # noqa: E402
from systec_gpu import schedule_table  # noqa: E402
from systec_gpu.backends.triton_backend import choose_schedule, prepare_launch, run_triton, triton_source  # noqa: E402
from systec_gpu.budget import default_schedule  # noqa: E402
from systec_gpu.catalog import CATALOG, compile_catalog  # noqa: E402
from systec_gpu.passes.lower_loops import ScheduleError  # noqa: E402
from systec_gpu.runtime import bind, finish  # noqa: E402
from systec_gpu.schedule import (  # noqa: E402
    DenseTriangleSchedule,
    ProblemShape,
    RowBlockSchedule,
    SparseTileSchedule,
)
from systec_gpu.storage import SymmetricTensor  # noqa: E402

from .symdata import symmetric_sparse  # noqa: E402
from .test_triton_backend import inputs_for, oracle  # noqa: E402

MATRIX_KERNELS = ["ssymv", "syprd", "ssymm", "bellman"]

# tiny blocks: several blocks and steps, ragged last blocks, single lanes; both row writes, both widths
ROW_SCHEDULES = [
    RowBlockSchedule(rows_per_block=2, lanes_per_row=2, dense_block=2, row_write="store", index_bits=32),
    RowBlockSchedule(rows_per_block=4, lanes_per_row=4, dense_block=2, row_write="atomic", index_bits=64),
    RowBlockSchedule(rows_per_block=1, lanes_per_row=1, dense_block=1, row_write="store", num_warps=1),
    RowBlockSchedule(rows_per_block=8, lanes_per_row=16, dense_block=4, row_write="atomic", num_warps=2),
]


def run(kernel, inputs, schedule, poison=None):
    args = bind(kernel.loops, kernel.program, inputs)
    run_triton(kernel.loops, args, schedule, poison=poison)
    return finish(args, kernel.loops, kernel.program).numpy(), args


@pytest.mark.parametrize("schedule", ROW_SCHEDULES, ids=lambda s: f"{s.rows_per_block}x{s.lanes_per_row}-{s.row_write}")
@pytest.mark.parametrize("case", ["classes", "single", "empty"])
@pytest.mark.parametrize("symmetry", [True, False], ids=["sym", "nosym"])
@pytest.mark.parametrize("name", MATRIX_KERNELS)
def test_row_blocks_match_numpy(name, symmetry, case, schedule):
    rng = np.random.default_rng(7)
    kernel = compile_catalog(name, backend="triton", symmetry=symmetry)
    inputs = inputs_for(name, case, rng)
    if case == "classes":
        inputs["A"] = symmetric_sparse(2, 6, rng, per_class=6)  # rows of several nonzeros
    result, args = run(kernel, inputs, schedule)
    np.testing.assert_allclose(result, oracle(kernel, inputs), rtol=1e-10, atol=1e-10)
    assert ("rows",) not in {key[0] for key in args.driver.device_copies}  # no row index per nonzero


def _rows_matrix(rng, lengths, size, symmetric=True):
    """A matrix whose canonical row i holds lengths[i] nonzeros in columns >= i."""
    rows, cols = [], []
    for i, length in enumerate(lengths):
        picked = rng.choice(np.arange(i, size), length, replace=False)
        rows += [i] * length
        cols += sorted(picked.tolist())
    coords = np.array([rows, cols], dtype=np.int64).reshape(2, -1)
    return SymmetricTensor.from_canonical(coords, rng.uniform(-2, 2, len(rows)), (size, size), "full")


# empty rows first, inside and last; rows longer than many steps; 13 rows: a ragged last block
LENGTHS = [0, 9, 0, 1, 5, 0, 0, 3, 2, 1, 0, 2, 0]


@pytest.mark.parametrize("schedule", ROW_SCHEDULES, ids=lambda s: f"{s.rows_per_block}x{s.lanes_per_row}-{s.row_write}")
@pytest.mark.parametrize("name", MATRIX_KERNELS)
def test_row_blocks_with_empty_and_long_rows(name, schedule):
    """Stored row writes are poisoned first: every row, empty or not, must be stored."""
    rng = np.random.default_rng(3)
    size = len(LENGTHS)
    kernel = compile_catalog(name, backend="triton")
    inputs = {"A": _rows_matrix(rng, LENGTHS, size), "x": rng.uniform(-1, 1, size), "X": rng.uniform(-1, 1, (size, 5))}
    inputs = {n: v for n, v in inputs.items() if f"{n}[" in CATALOG[name].expression}
    tiles_store = schedule.row_write == "store" and name != "syprd"  # SYPRD has no row-owned output
    result, args = run(kernel, inputs, schedule, poison=np.nan if tiles_store else None)
    np.testing.assert_allclose(result, oracle(kernel, inputs), rtol=1e-10, atol=1e-10)
    if tiles_store:
        assert args.partial.shape[0] == 2  # stored rows, then the scattered half: summed by finish()
        assert not np.isnan(args.partial[0].numpy()).any()  # every row stored, empty ones included


def test_row_blocks_min_with_infinite_inputs():
    """Bellman with unreachable vertices: +inf in x, never 0 * inf, the identity where no edge."""
    rng = np.random.default_rng(2)
    size = len(LENGTHS)
    kernel = compile_catalog("bellman", backend="triton")
    inputs = {"A": _rows_matrix(rng, LENGTHS, size), "x": rng.uniform(-1, 1, size)}
    inputs["x"][[1, 4, 12]] = np.inf
    for schedule in ROW_SCHEDULES:
        np.testing.assert_array_equal(run(kernel, inputs, schedule)[0], oracle(kernel, inputs))


@pytest.mark.parametrize("expr", [
    "y[i] += A[i,j] * x[j]",
    "y[i] max= A[i,j] + x[j]",
    "C[i,r] += A[i,j] * X[j,r]",
    "C[r,i] += A[i,j] * X[j,r]",  # the output's modes in the other order
    "z[r] min= A[i,j] + X[j,r]",  # no lane index: reduced over the block, one atomic per program
    "z[r] += A[i,j] * X[j,r]",
    "y[i] += A[i,j] * X[j,r]",  # the row's output summed over the dense axis too
    "s[] += A[i,j] * X[i,r] * X[j,r]",
])
def test_row_block_writes(expr):
    rng = np.random.default_rng(5)
    size = len(LENGTHS)
    kernel = compile_kernel(expr, symmetric={"A": [(0, 1)]}, formats={"A": "csr"}, backend="triton")
    inputs = {"A": _rows_matrix(rng, LENGTHS, size), "x": rng.uniform(-1, 1, size), "X": rng.uniform(-1, 1, (size, 5))}
    inputs = {n: v for n, v in inputs.items() if f"{n}[" in expr}
    expected = oracle(kernel, inputs)
    for schedule in ROW_SCHEDULES:
        np.testing.assert_allclose(run(kernel, inputs, schedule)[0], expected, rtol=1e-10, atol=1e-10)


@st.composite
def matrix_expressions(draw):
    """Random expressions over a symmetric CSR matrix A[i,j] and dense operands."""
    reduce = draw(st.sampled_from(["+=", "min=", "max="]))
    combine = "*" if reduce == "+=" else "+"
    operands = [("A", ["i", "j"])]
    for name in draw(st.lists(st.sampled_from(["x", "X", "w"]), max_size=2, unique=True)):
        if name == "x":
            operands.append(("x", [draw(st.sampled_from("ij"))]))
        elif name == "X":
            operands.append(("X", [draw(st.sampled_from("ij")), "r"]))
        else:
            operands.append(("w", ["r"]))
    used = sorted({i for _, idx in operands for i in idx})
    output = draw(st.lists(st.sampled_from(used), unique=True, max_size=2))
    rhs = f" {combine} ".join(f"{n}[{','.join(idx)}]" for n, idx in operands)
    return f"Y[{','.join(output)}] {reduce} {rhs}"


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(matrix_expressions(), st.sampled_from(ROW_SCHEDULES), st.integers(0, 2**16))
def test_random_matrix_expressions_through_row_blocks(expr, schedule, seed):
    rng = np.random.default_rng(seed)
    size = 7
    a = _rows_matrix(rng, rng.integers(0, 4, size).clip(max=size - np.arange(size)).tolist(), size)
    inputs = {"A": a, "x": rng.uniform(-1, 1, size), "X": rng.uniform(-1, 1, (size, 3)), "w": rng.uniform(-1, 1, 3)}
    inputs = {n: v for n, v in inputs.items() if f"{n}[" in expr}
    for symmetry in (True, False):
        kernel = compile_kernel(expr, symmetric={"A": [(0, 1)]}, formats={"A": "csr"}, backend="triton",
                                symmetry=symmetry)
        np.testing.assert_allclose(run(kernel, inputs, schedule)[0], oracle(kernel, inputs), rtol=1e-10,
                                   atol=1e-10, err_msg=f"{expr} symmetry={symmetry} {schedule}")


def test_row_blocks_fp32():
    rng = np.random.default_rng(4)
    for name in MATRIX_KERNELS:
        kernel = compile_catalog(name, backend="triton")
        inputs = inputs_for(name, "classes", rng, dtype=np.float32)
        result = run(kernel, inputs, RowBlockSchedule(rows_per_block=2, lanes_per_row=2, dense_block=2))[0]
        assert result.dtype == np.float32
        np.testing.assert_allclose(result, oracle(kernel, inputs), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("bits", [32, 64])
@pytest.mark.parametrize("name", list(CATALOG))
def test_index_widths_agree(name, bits):
    """int32 and int64 index arithmetic: the same results (the width is part of the source)."""
    rng = np.random.default_rng(8)
    kernel = compile_catalog(name, backend="triton")
    inputs = inputs_for(name, "classes", rng)
    if name == "ssyrk":
        schedule = DenseTriangleSchedule(block=16, k_block=16, index_bits=bits)
    elif name in MATRIX_KERNELS:
        schedule = RowBlockSchedule(rows_per_block=2, lanes_per_row=2, dense_block=2, index_bits=bits)
    else:
        schedule = SparseTileSchedule(nnz_per_tile=4, dense_block=2, index_bits=bits)
    assert ("tl.int64" in triton_source(kernel.loops, schedule)) == (bits == 64)
    np.testing.assert_allclose(run(kernel, inputs, schedule)[0], oracle(kernel, inputs), rtol=1e-10, atol=1e-10)


def test_int32_indices_are_refused_where_extents_do_not_fit():
    kernel = compile_catalog("ssymv", backend="triton")
    args = bind(kernel.loops, kernel.program, inputs_for("ssymv", "classes", np.random.default_rng(1)))
    assert choose_schedule(kernel.loops, args).index_bits == 32
    args.out_shape = (2**31,)  # as if y had 2**31 rows: offsets no longer fit in int32
    assert choose_schedule(kernel.loops, args).index_bits == 64
    with pytest.raises(ScheduleError, match="needs index_bits=64"):
        prepare_launch(kernel.loops, args, RowBlockSchedule(index_bits=32))


def test_class_factors_are_selects_not_table_loads():
    for name in CATALOG:
        source = triton_source(compile_catalog(name).loops)
        assert "mult +" not in source and "tl.load(mult" not in source
    assert "tl.where((cls == 2) | (cls == 3), 1.0, 2.0)" in triton_source(compile_catalog("mttkrp3").loops)


def test_atomics_are_relaxed_and_row_writes_plain_without_a_mirror():
    for name in CATALOG:
        source = triton_source(compile_catalog(name).loops)
        assert "tl.atomic_" not in source or 'sem="relaxed"' in source
        assert all('sem="relaxed"' in line for line in source.splitlines() if "tl.atomic_" in line)
    plain = triton_source(compile_catalog("ssymv", symmetry=False).loops)
    assert "tl.atomic_" not in plain and "tl.store(out + i" in plain  # the SpMV stores its rows


def test_segmented_write_mask_is_constant_along_the_dense_axis():
    """The run flags live on the nonzero axis: the atomic's mask is the run end and the dense
    bounds, nothing computed by the scan (so the write can be a vector atomic)."""
    source = triton_source(compile_catalog("mttkrp3").loops)
    assert "_segmented_add(" in source and "run_end & in_j)" in source
    assert "tl.associative_scan((value, start.to(tl.int32)), 0" in source  # the flags are not scanned into the mask
    assert 'tl.atomic_add(pointer, total, mask=write, sem="relaxed")' in source


def test_poison_needs_a_stored_buffer():
    kernel = compile_catalog("mttkrp3", backend="triton")
    args = bind(kernel.loops, kernel.program, inputs_for("mttkrp3", "classes", np.random.default_rng(1)))
    with pytest.raises(ValueError, match="only accumulates"):
        run_triton(kernel.loops, args, SparseTileSchedule(nnz_per_tile=4, dense_block=2), poison=np.nan)


def test_schedule_override_from_the_environment(monkeypatch):
    kernel = compile_catalog("ssymv", backend="triton")
    args = bind(kernel.loops, kernel.program, inputs_for("ssymv", "classes", np.random.default_rng(1)))
    monkeypatch.setenv("SYSTEC_TRITON_SCHEDULE", "rows_per_block=2, num_warps=1,row_write=store")
    schedule = choose_schedule(kernel.loops, args)
    assert (schedule.rows_per_block, schedule.num_warps, schedule.row_write) == (2, 1, "store")
    monkeypatch.setenv("SYSTEC_TRITON_SCHEDULE", "nnz_per_tile=8")
    with pytest.raises(ScheduleError, match="has no field 'nnz_per_tile'"):
        choose_schedule(kernel.loops, args)


def test_tuned_table_entry_is_used_for_its_arch_only(tmp_path):
    loops = compile_catalog("ssymv").loops
    shape = ProblemShape(nnz=3_000_000, rows=200_000, itemsize=4)
    tuned = RowBlockSchedule(rows_per_block=8, lanes_per_row=8, num_warps=2, row_write="store", index_bits=32)
    table = tmp_path / "schedules.json"
    entry = {"arch": "sm_90", "program": schedule_table.program_key(loops),
             "shape_class": schedule_table.shape_class(shape), "schedule": schedule_table.schedule_to_json(tuned)}
    table.write_text(json.dumps({"version": 1, "entries": [entry]}))
    assert schedule_table.tuned_schedule(loops, shape, "sm_90", table) == tuned
    assert schedule_table.tuned_schedule(loops, shape, "sm_80", table) is None
    assert schedule_table.tuned_schedule(loops, shape, None, table) is None
    other = ProblemShape(nnz=3_000_000, rows=20_000, itemsize=4)  # another nonzeros-per-row class
    assert schedule_table.tuned_schedule(loops, other, "sm_90", table) is None
    assert default_schedule(loops, shape) != tuned  # the heuristic stays the fallback


def test_shipped_table_is_valid_and_measured():
    # every entry: a legal schedule of a catalog program, measured faster than the heuristic on a GPU
    data = json.loads(schedule_table.TABLE.read_text())
    assert data["version"] == 1
    programs = {schedule_table.program_key(compile_catalog(name, symmetry=symmetry).loops)
                for name in CATALOG for symmetry in (True, False)}
    keys = set()
    for entry in data["entries"]:
        schedule_table.schedule_from_json(entry["schedule"])  # raises on an illegal schedule
        assert entry["arch"].startswith("sm_") and entry["program"] in programs, entry
        assert 0 < entry["ms"] < 0.97 * entry["heuristic_ms"] and entry["device"] and entry["date"], entry
        keys.add((entry["arch"], entry["program"], entry["shape_class"]))
    assert len(keys) == len(data["entries"])  # one entry per key
