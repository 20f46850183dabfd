"""Rewrite kernels/golden/ from the current compiler. Read the diff before committing it."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from golden_files import GOLDEN, snapshots  # noqa: E402


def main() -> None:
    GOLDEN.mkdir(exist_ok=True)
    expected = snapshots()
    for stale in set(p.name for p in GOLDEN.iterdir()) - set(expected):
        (GOLDEN / stale).unlink()
    for name, text in sorted(expected.items()):
        (GOLDEN / name).write_text(text)
    print(f"wrote {len(expected)} golden files to {GOLDEN}")


if __name__ == "__main__":
    main()
