"""The worked examples under examples/ run (small settings) and reach what they claim."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]


def run(script: str, *args: str) -> str:
    done = subprocess.run([sys.executable, str(ROOT / "examples" / script), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_fitting_symmetric_values_by_gradient_descent():
    out = run("fit_symmetric_values.py", "--n", "40", "--steps", "150")
    error = float(out.strip().splitlines()[-1].rsplit(" ", 1)[1])
    assert error < 0.1, out


def test_symmetric_cp_matches_the_nonsymmetric_decomposition(tmp_path):
    plot = tmp_path / "fit.png"
    out = run("symmetric_cp.py", "--rank", "4", "--iterations", "12", "--plot", str(plot))
    difference = float(out.split("max difference of the fits ")[1].split()[0])
    assert difference < 1e-8, out
    assert plot.stat().st_size > 1000
