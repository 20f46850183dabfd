"""The Triton backend: emission (triton_emit.py: source from a TileProgram) and launch
(triton_launch.py: schedule choice, argument binders, grid). This module keeps the public names
(and the memoized launch plans the tests and perf/host_overhead.py look at)."""

from __future__ import annotations

from .triton_emit import _Emitter, emit_kernel, triton_source
from .triton_launch import (
    Launch,
    _compiled,
    _launch_plan,
    _tile_starts,
    choose_schedule,
    interpreting,
    prepare_launch,
    run_triton,
    specialize_triton,
)

__all__ = ["Launch", "_Emitter", "_compiled", "_launch_plan", "_tile_starts", "choose_schedule", "emit_kernel",
           "interpreting", "prepare_launch", "run_triton", "specialize_triton", "triton_source"]
