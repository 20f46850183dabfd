"""Spills of the dense scalar-loop programs (DenseTriangleSchedule without a contraction) at one
and two warps, over the property tests' random expressions, compiled for sm_90 (perf/aot.py):

    python perf/aot_dense_warps.py [examples] [--json PATH]

Each random expression (symmetric and not) whose default schedule is an 8 x 8 dense triangle is
compiled at num_warps 1 and 2; the registers and spill bytes of each are written as JSON.
Evidence for budget._dense (two warps: one element per thread).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("examples", type=int, nargs="?", default=40)
    parser.add_argument("--json", default=None)
    options = parser.parse_args()
    from hypothesis import HealthCheck, given, settings

    import systec_gpu as sg
    from systec_gpu.backends.triton_launch import choose_schedule
    from systec_gpu.budget import _contracts
    from systec_gpu.schedule import DenseTriangleSchedule
    from tests.aot_random import aot, stated_input
    from tests.test_properties import expressions

    warnings.simplefilter("ignore")
    rows = []

    @settings(max_examples=options.examples, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(expressions())
    def run(case):
        text, groups, fmt, _order, _specials = case
        for symmetry in (True, False):
            kernel = sg.compile(text, symmetric={"A": groups} if groups is not None else None, formats={"A": fmt},
                                symmetry=symmetry, backend="triton")
            stated = stated_input(kernel)
            try:
                schedule = choose_schedule(kernel.loops, aot.meta_args(kernel, stated), "sm_90")
            except Exception:  # noqa: BLE001 (nothing to tile: the CPU backends run it)
                continue
            if not isinstance(schedule, DenseTriangleSchedule) or _contracts(kernel.loops):
                continue
            row = {"expression": text, "symmetry": symmetry}
            for warps in (1, 2):
                found = aot.aot_kernel(kernel, stated, schedule=dataclasses.replace(schedule, num_warps=warps))
                row[f"warps{warps}"] = {k: found.get(k) for k in ("registers", "spill_bytes", "compiled")}
            rows.append(row)

    run()
    report = {"arch": "sm_90", "date": datetime.datetime.now().isoformat(timespec="seconds"),
              "examples": options.examples, "programs": len(rows),
              "spilling": {w: sum(1 for r in rows if r[f"warps{w}"]["spill_bytes"]) for w in (1, 2)}, "rows": rows}
    text = json.dumps(report, indent=2) + "\n"
    if options.json:
        Path(options.json).write_text(text)
    print(json.dumps(report["spilling"]), len(rows), "dense programs")


if __name__ == "__main__":
    main()
