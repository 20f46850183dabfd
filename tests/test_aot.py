"""sm_90 ahead-of-time compilation without a GPU (perf/aot.py, DESIGN.md section 8): sampled
catalog kernels and random expressions at their default schedules compile with no register
spills and no fenced (acq_rel) atomics. Skipped only where the triton wheel's ptxas/cuobjdump
cannot run."""

from __future__ import annotations

import os

# Like every Triton test module: the interpreter flag is set before triton is first imported
# (triton reads parts of it at import). perf/aot.py decorates the kernels it compiles with the
# flag off, and the CLI test runs in a process of its own without it.
os.environ["TRITON_INTERPRET"] = "1"

import importlib.util  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
triton = pytest.importorskip("triton")


def _load_aot():
    spec = importlib.util.spec_from_file_location("systec_perf_aot_test", ROOT / "perf" / "aot.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


aot = _load_aot()
pytestmark = pytest.mark.skipif(not aot.toolchain_available(), reason="triton's ptxas/cuobjdump cannot run here")


def test_catalog_sample_compiles_without_spills_or_fences(tmp_path):
    """The CLI entry (`systec-gpu aot`), in a process of its own (no TRITON_INTERPRET), on one
    kernel of each schedule kind: row blocks, nonzero tiles, tl.dot triangle blocks."""
    out = tmp_path / "aot.json"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, "-m", "systec_gpu.cli", "aot", "--arch", "sm_90",
                           "--kernels", "ssymv,mttkrp3,ssyrk", "--json", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(out.read_text())
    rows = {(r["kernel"], r["symmetry"]): r for r in report["rows"]}
    assert set(rows) == {(k, s) for k in ("ssymv", "mttkrp3", "ssyrk") for s in (True, False)}
    for row in rows.values():
        assert row["compiled"], row
        assert row["spill_bytes"] == 0, row
        assert row["fenced_atomics"] == 0, row
        assert row["registers"] <= 255 and row["num_warps"] == row["schedule"]["num_warps"]
    assert rows[("ssymv", True)]["schedule"]["kind"] == "RowBlockSchedule"
    assert rows[("ssymv", True)]["atomics"] > 0  # the mirrored half
    assert rows[("ssymv", False)]["atomics"] == 0  # a plain SpMV: every row stored once
    assert rows[("mttkrp3", True)]["vector_atomics"] == rows[("mttkrp3", True)]["atomics"] > 0
    assert rows[("ssyrk", True)]["schedule"]["dot"] and rows[("ssyrk", True)]["atomics"] == 0


def test_fenced_atomics_are_detected():
    """The SASS reader recognizes Triton's acq_rel wrapping (the bug this gate exists for)."""
    acq_rel = ["MEMBAR.ALL.GPU", "ERRBAR", "CGAERRBAR", "ATOMG.E.ADD.F32.FTZ.RN.STRONG.GPU PT, RZ, [R2.64], R28",
               "CCTL.IVALL", "REDG.E.ADD.F32x4.FTZ.RN.STRONG.GPU [R4.64], R8", "EXIT"]
    report = aot.atomic_report(acq_rel)
    assert (report["atomics"], report["fenced_atomics"], report["vector_atomics"]) == (2, 1, 1)


def test_random_expressions_compile_without_spills():
    """Random expressions of order <= 5 (tests/aot_random.py, a derandomized sample of the
    property tests' generator), in a process of its own without TRITON_INTERPRET."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, "-m", "tests.aot_random", "8"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
