"""perf/tune.py --tiny runs end to end on CPU under the Triton interpreter and writes a valid table."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from systec_gpu import schedule_table

ROOT = Path(__file__).resolve().parents[1]


def test_tune_tiny_writes_a_table_the_chooser_reads(tmp_path):
    table = tmp_path / "schedules.json"
    shutil.copy(schedule_table.TABLE, table)
    env = dict(os.environ, TRITON_INTERPRET="1", CUDA_VISIBLE_DEVICES="")
    done = subprocess.run([sys.executable, str(ROOT / "perf" / "tune.py"), "--tiny", "--table", str(table)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    data = json.loads(table.read_text())
    assert data["version"] == 1
    shipped = json.loads(schedule_table.TABLE.read_text())["entries"]
    assert [e for e in data["entries"] if e["arch"] != "interpreter"] == shipped  # the GPU's entries kept
    for entry in data["entries"]:
        assert entry["ms"] < entry["heuristic_ms"]
        schedule_table.schedule_from_json(entry["schedule"])  # legal
    assert schedule_table.load_table(table) is not None
