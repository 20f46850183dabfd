"""Random expressions of order <= 5 (the property tests' generator) compiled for sm_90 at their
default schedules, symmetric and not: 0 spill bytes, 0 fenced atomics. Run by tests/test_aot.py
in a process of its own: triton must be imported without TRITON_INTERPRET for its own jit
helpers (tl.sum, tl.max, ...) to compile.

    python -m tests.aot_random [examples]
"""

from __future__ import annotations

import importlib.util
import os
import sys
import warnings
from pathlib import Path

from hypothesis import HealthCheck, given, settings

from systec_gpu.ir.einsum import accesses

from .test_properties import expressions

_AOT = Path(__file__).resolve().parents[1] / "perf" / "aot.py"
_spec = importlib.util.spec_from_file_location("systec_perf_aot", _AOT)
aot = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = aot
_spec.loader.exec_module(aot)


def stated_input(kernel):
    """A realistic input for a random expression: extents of 4096 (512 for the dense B) and 1M
    canonical nonzeros for a sparse A; a dense operand of about 2**27 values."""
    reads = accesses(kernel.program.einsum.rhs)
    order = max(len(a.indices) for a in reads)
    dense_order = max([len(a.indices) for a in reads if a.tensor in kernel.loops.dense_inputs], default=1)
    size = 4096 if dense_order <= 2 else max(8, int(2 ** (27 / dense_order)))
    sizes = {}
    for access in reads:
        for i in access.indices:
            sizes.setdefault(i.name, min(512, size) if access.tensor == "B" else size)
    return aot.StatedInput("random expression", sizes, 1_000_000, 1_000_000 * min(120, 2 ** order))


def check(case) -> None:
    import systec_gpu as sg

    text, groups, fmt, _order, _specials = case
    for symmetry in (True, False):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            kernel = sg.compile(text, symmetric={"A": groups} if groups is not None else None, formats={"A": fmt},
                                symmetry=symmetry, backend="triton")
        row = aot.aot_kernel(kernel, stated_input(kernel))
        if not row["compiled"] and "no loops" in row.get("error", ""):
            continue  # nothing to tile: the numba/reference backends run it
        assert row["compiled"], (text, groups, fmt, row)
        assert row["spill_bytes"] == 0 and row["fenced_atomics"] == 0, (text, groups, fmt, symmetry, row)


def main(examples: int) -> None:
    @settings(max_examples=examples, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(expressions())
    def run(case):
        check(case)

    run()


if __name__ == "__main__":
    assert os.environ.get("TRITON_INTERPRET", "0") in ("", "0"), "run without TRITON_INTERPRET"
    os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 6)
