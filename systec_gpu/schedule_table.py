"""The device-tuned schedule table: measured best schedules per program, shape class and GPU arch.

Package data `data/schedules.json`, filled on a GPU by `perf/tune.py` (Triton's autotuner cannot
run under the interpreter, so the measurements are kept as data). The schedule chooser asks it
first and falls back to the register-budget heuristic (budget.py) when it has no entry. It holds
the winners of one H200 run (sm_90: SSYMV, SYPRD, Bellman and SSYMM on stencil matrices); every
other arch, program and shape class takes the heuristic's schedule.

An entry is keyed by the architecture ("sm_90"), the program (a digest of its loop program's
text: the symmetrized kernel, independent of the data) and the shape class of the call (sizes
bucketed by powers of two; see `shape_class`). The entry's index width is not stored: the call
decides it (`ProblemShape.index_bits`).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from pathlib import Path

from .ir.loop import LoopProgram, format_loop_program
from .schedule import DenseTriangleSchedule, ProblemShape, RowBlockSchedule, Schedule, SparseTileSchedule, validate

TABLE = Path(__file__).resolve().parent / "data" / "schedules.json"
KINDS = {k.__name__: k for k in (SparseTileSchedule, RowBlockSchedule, DenseTriangleSchedule)}


def program_key(loops: LoopProgram) -> str:
    """A stable digest of the symmetrized program (its printed loop IR)."""
    return hashlib.sha256(format_loop_program(loops).encode()).hexdigest()[:16]


def _bucket(n: int) -> int:
    """n rounded up to a power of two (0 stays 0): sizes of one bucket share a schedule."""
    return 0 if n <= 0 else 1 << (int(n) - 1).bit_length()


SMALL_WORK = 2**22  # nonzeros (or dense extent squared) below which the data mostly fits in L2


def shape_class(shape: ProblemShape) -> str:
    """The bucketed sizes that select a tuned entry: the work's class ("small": about L2-resident,
    "large": streamed from HBM), nonzeros per row (CSR), dense extent, contraction, value size."""
    per_row = _bucket(round(shape.nnz / shape.rows)) if shape.rows else 0
    work = shape.nnz or shape.grid_extent**2
    return (f"work={'small' if work < SMALL_WORK else 'large'},per_row={per_row},"
            f"dense={_bucket(shape.dense_extent)},k={_bucket(shape.contraction)},bytes={shape.itemsize}")


def schedule_to_json(schedule: Schedule) -> dict:
    fields = dataclasses.asdict(schedule)
    fields.pop("index_bits")
    return {"kind": type(schedule).__name__, **fields}


def schedule_from_json(entry: dict, index_bits: int = 64) -> Schedule:
    fields = dict(entry)
    kind = KINDS[fields.pop("kind")]
    return validate(kind(**fields, index_bits=index_bits))


@functools.lru_cache(maxsize=4)
def load_table(path: Path = TABLE) -> dict:
    """(arch, program, shape class) -> schedule JSON, from the table file (empty when absent)."""
    if not path.exists():
        return {}
    data = json.loads(path.read_text())
    return {(e["arch"], e["program"], e["shape_class"]): e["schedule"] for e in data.get("entries", [])}


def tuned_schedule(loops: LoopProgram, shape: ProblemShape, arch: str | None, path: Path = TABLE) -> Schedule | None:
    """The table's schedule for this program, shape class and arch, or None."""
    if arch is None:
        return None
    table = load_table(path)
    if not table:
        return None
    entry = table.get((arch, program_key(loops), shape_class(shape)))
    return schedule_from_json(entry, shape.index_bits) if entry is not None else None
