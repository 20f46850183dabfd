"""The `systec-gpu bench` harness end to end on CPU (two kernels, --quick) plus its error paths."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

pytest.importorskip("tqdm")
pytest.importorskip("matplotlib")
pytest.importorskip("sparse")

from systec_gpu.cli_bench import bench_main, find_harness  # noqa: E402

from .shared_data import require_data  # noqa: E402


def test_harness_is_found() -> None:
    path = find_harness()
    assert path is not None and path.name == "bench.py"


def test_unknown_kernel_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_main(["--kernels", "ssymv,nosuch", "--out", str(tmp_path), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "nosuch" in err and "ssymv" in err


def test_missing_data_folder_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "no-data"
    assert bench_main(["--quick", "--data", str(missing), "--out", str(tmp_path), "--device", "cpu"]) == 2
    assert "no-data" in capsys.readouterr().err


def test_quick_bench_writes_sane_results(tmp_path: Path) -> None:
    data = require_data()
    rc = bench_main(["--quick", "--kernels", "ssymv,mttkrp3", "--budget", "0.05", "--device", "cpu",
                     "--out", str(tmp_path), "--data", str(data)])
    assert rc == 0
    (folder,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert folder.name.startswith("cpu-")
    doc = json.loads((folder / "results.json").read_text())
    rows = doc["rows"]
    assert {r["kernel"] for r in rows} == {"ssymv", "mttkrp3"}
    methods = {r["method"] for r in rows}
    assert {"systec symmetric", "systec symmetry=False", "scipy CSR SpMV", "pydata sparse.einsum"} <= methods
    for r in rows:
        assert r["ok"], r
        assert math.isfinite(r["median"]) and r["median"] > 0
        assert r["min"] <= r["median"] <= r["max"]
        assert math.isfinite(r["speedup"]) and r["speedup"] > 0
    assert all(r["speedup"] == 1.0 for r in rows if r["method"] == "systec symmetric")
    with (folder / "results.csv").open() as f:
        csv_rows = list(csv.DictReader(f))
    assert len(csv_rows) == len(rows)
    assert all(row["device"] == folder.name and "numba" in row["versions"] for row in csv_rows)
    md = (folder / "results.md").read_text()
    assert "| ssymv |" in md and "| mttkrp3 |" in md
    for name in ("speedups.png", "speedup-ssymv.png", "speedup-mttkrp3.png"):
        png = folder / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
