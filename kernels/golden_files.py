"""Golden snapshots of every catalog kernel: its explained program and generated source.

Refresh on purpose only, then read the diff:  python kernels/refresh_golden.py
"""

from __future__ import annotations

from pathlib import Path

GOLDEN = Path(__file__).resolve().parent / "golden"
BACKENDS = ("numba", "triton")


def snapshots() -> dict[str, str]:
    """File name -> expected text, for every catalog kernel and program (symmetric and not; a
    program with a sparse output has no non-symmetric form)."""
    from systec_gpu.catalog import CATALOG, PROGRAMS, compile_catalog, compile_program_catalog
    from systec_gpu.spgemm import SparseOutputError

    files = {}
    compilers = [(name, compile_catalog) for name in CATALOG] + [(name, compile_program_catalog) for name in PROGRAMS]
    for name, compile_entry in compilers:
        for symmetry in (True, False):
            try:
                kernel = compile_entry(name, symmetry=symmetry)
            except SparseOutputError:
                continue
            stem = name if symmetry else f"{name}.nosym"
            files[f"{stem}.explain.txt"] = kernel.explain()
            for backend in BACKENDS:
                try:
                    files[f"{stem}.{backend}.py.txt"] = kernel.source(backend)
                except ImportError:  # a backend whose module is absent in this checkout
                    continue
    return files
