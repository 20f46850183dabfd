"""The explained program and generated source of every catalog kernel match kernels/golden/."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "kernels"))

from golden_files import GOLDEN, snapshots  # noqa: E402

EXPECTED = snapshots()


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_golden_snapshot(name):
    path = GOLDEN / name
    assert path.exists(), f"missing golden file {path}: run python kernels/refresh_golden.py and read it"
    assert EXPECTED[name] == path.read_text(), f"{name} changed: refresh on purpose and read the diff"


def test_no_stale_golden_files():
    assert {p.name for p in GOLDEN.iterdir()} == set(EXPECTED)


def test_generation_is_deterministic():
    assert snapshots() == EXPECTED
