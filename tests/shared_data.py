"""The real-data folder `../shared/data` (next to the repository; CI has it) and what a test
does when it is missing: fail, unless SYSTEC_ALLOW_MISSING_DATA=1 says a skip is intended."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
ALLOW_MISSING = "SYSTEC_ALLOW_MISSING_DATA"


def require_data(needed: str = "manifest.tsv") -> Path:
    """DATA, if it holds `needed`; otherwise fail (or skip with SYSTEC_ALLOW_MISSING_DATA=1)."""
    if (DATA / needed).exists():
        return DATA
    message = (f"real data missing: {DATA / needed} not found (CI clones the repository next to "
               f"../shared/data); set {ALLOW_MISSING}=1 to skip the tests that read it")
    if os.environ.get(ALLOW_MISSING) == "1":
        pytest.skip(message)
    pytest.fail(message)
