"""The adversarial suite (tests/adversarial_cases.py) in a child process: a crash in generated
code (a segfault) fails this test with the child's output instead of killing the test run."""

import os
import subprocess
import sys
from pathlib import Path


def test_adversarial_suite_in_a_child_process(request):
    cases = Path(__file__).with_name("adversarial_cases.py")
    env = dict(os.environ, SYSTEC_SLOW="1" if request.config.getoption("--slow") else "0")
    child = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(cases)],
        cwd=Path(__file__).parents[1], env=env, capture_output=True, text=True, timeout=1800,
    )
    assert child.returncode == 0, f"exit {child.returncode}\n{child.stdout[-6000:]}\n{child.stderr[-3000:]}"
    assert " passed" in child.stdout and "failed" not in child.stdout.splitlines()[-1]
