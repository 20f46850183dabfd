"""The explained program and generated source of every catalog kernel match kernels/golden/.

The committed files are the reference: this process's generation must match them, and so must a
generation in fresh interpreters with other hash seeds (nothing memoized, set and dict orders of
str keys changed), so that output depending on hash() or on process state shows up here.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "kernels"))

from golden_files import GOLDEN, snapshots  # noqa: E402

EXPECTED = snapshots()
COMMITTED = {p.name: p.read_text() for p in GOLDEN.iterdir()}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_golden_snapshot(name):
    assert name in COMMITTED, f"missing golden file {GOLDEN / name}: run python kernels/refresh_golden.py and read it"
    assert EXPECTED[name] == COMMITTED[name], f"{name} changed: refresh on purpose and read the diff"


def test_no_stale_golden_files():
    assert set(COMMITTED) == set(EXPECTED)


def _generate_in_fresh_process(hash_seed: str) -> dict[str, str]:
    code = (
        "import json, sys\n"
        f"sys.path.insert(0, {str(ROOT / 'kernels')!r})\n"
        "from golden_files import snapshots\n"
        "json.dump(snapshots(), sys.stdout)\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.parametrize("hash_seed", ["1", "2024"])
def test_generation_is_deterministic_across_processes(hash_seed):
    if os.environ.get("PYTHONHASHSEED") == hash_seed:
        hash_seed = str(int(hash_seed) + 1)  # a seed other than this process's
    generated = _generate_in_fresh_process(hash_seed)
    assert set(generated) == set(COMMITTED)
    changed = sorted(name for name in generated if generated[name] != COMMITTED[name])
    assert not changed, f"PYTHONHASHSEED={hash_seed} generates other text for {changed}"
