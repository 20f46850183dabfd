"""The Triton backend: emission (triton_emit.py: source from a TileProgram) and launch
(triton_launch.py: schedule choice, argument binding, grid). This module keeps the public names."""

from __future__ import annotations

from .triton_emit import emit_kernel, triton_source
from .triton_launch import _tile_starts, choose_schedule, interpreting, prepare_launch, run_triton

__all__ = ["choose_schedule", "emit_kernel", "interpreting", "prepare_launch", "run_triton", "triton_source",
           "_tile_starts"]
