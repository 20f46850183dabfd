"""Golden snapshots of every catalog kernel: its explained program and generated source.

Refresh on purpose only, then read the diff:  python kernels/refresh_golden.py
"""

from __future__ import annotations

from pathlib import Path

GOLDEN = Path(__file__).resolve().parent / "golden"
BACKENDS = ("numba", "triton")


def snapshots() -> dict[str, str]:
    """File name -> expected text, for every catalog kernel (symmetric and not)."""
    from systec_gpu.catalog import CATALOG, compile_catalog

    files = {}
    for name in CATALOG:
        for symmetry in (True, False):
            kernel = compile_catalog(name, symmetry=symmetry)
            stem = name if symmetry else f"{name}.nosym"
            files[f"{stem}.explain.txt"] = kernel.explain()
            for backend in BACKENDS:
                try:
                    files[f"{stem}.{backend}.py.txt"] = kernel.source(backend)
                except ImportError:  # a backend whose module is absent in this checkout
                    continue
    return files
