"""`systec-gpu bench` and `systec-gpu aot`: locate a perf/ script of the source checkout
(perf/bench.py, perf/aot.py) and run it.

The harness lives outside the package (it imports plotting and peer libraries the package does not
need), so it is found relative to the package source: an editable install or a repo checkout.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path


def find_harness(script: str = "bench") -> Path | None:
    """perf/<script>.py next to the package source, or None when the package is installed without it."""
    import systec_gpu

    candidate = Path(systec_gpu.__file__).resolve().parents[1] / "perf" / f"{script}.py"
    return candidate if candidate.is_file() else None


def bench_main(argv: list[str] | None = None) -> int:
    """Run the harness with `argv` (the arguments after `bench`); returns its exit status."""
    return perf_main("bench", argv)


def perf_main(script: str, argv: list[str] | None = None) -> int:
    """Run perf/<script>.py's main with `argv`; returns its exit status."""
    path = find_harness(script)
    if path is None:
        import systec_gpu

        print(f"systec-gpu {script}: perf/{script}.py was not found next to the package source "
              f"({Path(systec_gpu.__file__).resolve().parents[1]}); run it from a repository checkout "
              "installed with `pip install -e .[bench]`", file=sys.stderr)
        return 2
    spec = importlib.util.spec_from_file_location(f"systec_perf_{script}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # dataclasses look their module up in sys.modules while the class body executes.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return int(module.main(list(argv) if argv is not None else sys.argv[1:]))
