"""The format a backend reads a sparse driver in, when it is not simply the declared one.

- A declared CSF driver whose nonzeros are visited expanded (symmetry not exploited) is read as
  COO: expanded nonzeros are not sorted by every mode (`loop_format`, at lowering, with a note).
- The default format of a symmetric input of order >= 3 (COO_OR_CSF) is read as CSF by the CPU
  backends (numba, reference) when the kernel does dense work per nonzero (a dense loop inside
  the nonzero loop, e.g. MTTKRP's rank axis: CSF computes the products of outer levels once per
  fiber, R lanes each) and, on the call, its CSF levels read fewer structure bytes than its COO
  coordinates (`read_as`, per call, from the driver's cached structure). Kernels with scalar work
  per nonzero (TTV) stay COO: measured slower as CSF on every shared order-3/4 tensor
  (perf/results/formats-vm-2026-11-27.json: 0.78-0.94x at one thread), where the fiber loops'
  overhead outweighs the bytes saved. Triton tiles the COO nonzeros (`describe` states the rule
  in explain()).
"""

from __future__ import annotations

import dataclasses
import functools

from ..ir.loop import DenseLoop, LoopProgram, SparseLoop
from ..ir.traverse import postwalk, walk
from .base import StorageFormat
from .coo import COO
from .csf import CSF, reads_fewer_bytes


def loop_format(fmt: StorageFormat, tensor: str, expanded: bool) -> tuple[StorageFormat, str | None]:
    """(the format a sparse loop over `tensor` reads, a note when it is not `fmt`)."""
    if fmt is CSF and expanded:
        return COO, (f"{tensor} is declared CSF but its nonzeros are visited expanded (symmetry not exploited), "
                     "which are not sorted by every mode: read as COO")
    return fmt, None


@functools.lru_cache(maxsize=256)
def _sparse_loop(program: LoopProgram) -> SparseLoop | None:
    return next((n for n in walk(program.body) if isinstance(n, SparseLoop)), None)


@functools.lru_cache(maxsize=256)
def fiber_variant(program: LoopProgram) -> LoopProgram | None:
    """`program` with its COO_OR_CSF driver read as CSF, or None when the rule does not apply
    (another format, an expanded walk, fewer than 3 modes)."""
    loop = _sparse_loop(program)
    if loop is None or not getattr(loop.format, "fibers_when_smaller", False) or loop.expanded:
        return None
    if CSF.modes_error(loop.tensor, len(loop.indices)) is not None:
        return None
    if not dense_work_per_nonzero(loop):
        return None

    def rule(node):
        return dataclasses.replace(node, format=CSF) if isinstance(node, SparseLoop) else None

    return dataclasses.replace(program, body=postwalk(program.body, rule))


def dense_work_per_nonzero(loop: SparseLoop) -> bool:
    """The nonzero loop runs a dense loop per nonzero (a rank axis): what CSF's hoisted outer-level
    products pay off on (measured: perf/formats.py)."""
    return any(isinstance(node, DenseLoop) for node in walk(loop.body))


def read_as(program: LoopProgram, driver) -> LoopProgram:
    """The loop program a CPU backend runs on this call's driver (runtime DriverArrays)."""
    variant = fiber_variant(program)
    if variant is None or driver is None:
        return program
    return variant if reads_fewer_bytes(driver) else program


def describe(program: LoopProgram) -> list[str]:
    """explain()'s lines on how the driver's format is read."""
    if fiber_variant(program) is None:
        return []
    loop = _sparse_loop(program)
    return [f"format {loop.tensor}: COO, read as CSF (one level per mode, runs of equal leading coordinates stored "
            "once) by the numba and reference backends on a call where CSF's levels read fewer structure bytes "
            "than COO's coordinates (per call, from the stored nonzeros), because the kernel does dense work per "
            "nonzero (products of outer levels computed once per fiber; scalar work per nonzero stays COO: "
            "measured slower as CSF); Triton tiles the COO nonzeros; "
            f"formats={{{loop.tensor!r}: 'coo'}} or 'csf' fixes it"]
