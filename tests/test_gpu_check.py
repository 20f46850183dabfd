"""perf/gpu_check.py --tiny runs end to end on CPU under the Triton interpreter."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_tiny_writes_a_passing_row_per_kernel(tmp_path):
    env = dict(os.environ, TRITON_INTERPRET="1", CUDA_VISIBLE_DEVICES="")
    done = subprocess.run([sys.executable, str(ROOT / "perf" / "gpu_check.py"), "--tiny", "--out", str(tmp_path)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    (path,) = tmp_path.glob("gpu-*.json")
    report = json.loads(path.read_text())
    assert {(r["kernel"], r["dtype"]) for r in report["checks"]} == {
        (k, d) for k in ("ssymv", "ssyrk", "mttkrp3", "bellman") for d in ("float64", "float32")}
    assert all(r["ok"] is True for r in report["checks"])
    assert {r["kernel"] for r in report["timings"]} == {"ssymv", "syprd", "ssymm", "bellman", "ssyrk", "mttkrp3"}
    assert {r["dtype"] for r in report["timings"] if r["kernel"] == "ssymv"} == {"float32", "float64"}
    assert all(r["ok"] is True and r["kernel_ms"] > 0 and r["call_ms"] > 0 for r in report["timings"])
    assert all(r["memory_bound"] > 1 for r in report["timings"] if r["kernel"] == "mttkrp3")
    assert all(r["speedup_vs_peer"] > 0 for r in report["timings"] if r["kernel"] in ("ssymv", "ssymm", "ssyrk"))
    assert report["ok"] is True and report["skipped"] == []
    assert report["errors"] == [] and {r["gpu_plan"] for r in report["timings"] if r["kernel"] == "ssymm"} == {
        "expanded"}


def test_gpu_check_records_a_failing_section_and_runs_the_rest(tmp_path):
    # a device lease is short: one section's exception must not lose the others
    env = dict(os.environ, TRITON_INTERPRET="1", CUDA_VISIBLE_DEVICES="")
    script = ("import sys; sys.path.insert(0, sys.argv[1]); import gpu_check\n"
              "def broken(*args, **kwargs): raise RuntimeError('injected')\n"
              "gpu_check.time_ssyrk = broken\n"
              "sys.exit(gpu_check.main(['--tiny', '--out', sys.argv[2]]))\n")
    done = subprocess.run([sys.executable, "-c", script, str(ROOT / "perf"), str(tmp_path)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stdout + done.stderr
    (path,) = tmp_path.glob("gpu-*.json")
    report = json.loads(path.read_text())
    assert [e["section"] for e in report["errors"]] == ["ssyrk 40x24"]
    assert "RuntimeError: injected" in report["errors"][0]["error"] and report["ok"] is False
    assert {r["kernel"] for r in report["timings"]} == {"ssymv", "syprd", "ssymm", "bellman", "mttkrp3"}
