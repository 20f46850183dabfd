"""Benchmark inputs: real files from ../shared/data and generated tensors, as float64 SymmetricTensors.

Loading prefers `systec_gpu.io.load`; while that module is unfinished the fallbacks (fast_matrix_market
for .mtx, the FROSTT reader for .tns) give the same canonical tensors.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

import systec_gpu as sg

REPO = Path(__file__).resolve().parents[1]


def default_data_dir() -> Path:
    """../shared/data relative to the repo root, overridable by SYSTEC_DATA."""
    env = os.environ.get("SYSTEC_DATA")
    return Path(env) if env else (REPO.parent / "shared" / "data")


def find_file(data_dir: Path, stem: str) -> Path:
    """The file for a data set name like 'bcsstk16' or 'tags-math-sx_sym3' (plain or .gz)."""
    for ext in (".mtx", ".mtx.gz", ".tns", ".tns.gz"):
        p = data_dir / f"{stem}{ext}"
        if p.exists():
            return p
    raise FileNotFoundError(f"data set {stem!r} not found in {data_dir} (looked for {stem}.mtx[.gz], .tns[.gz])")


def _as_float(t: sg.SymmetricTensor) -> sg.SymmetricTensor:
    vals = np.asarray(t.values)
    if vals.dtype == np.float64:
        return t
    return t.with_values(vals.astype(np.float64))


def _load_mtx(path: Path) -> sg.SymmetricTensor:
    import scipy.sparse as sp
    from fast_matrix_market import mmread

    a = sp.coo_matrix(mmread(str(path)))  # fmm expands a symmetric header to both triangles
    a.sum_duplicates()
    if a.nnz and (a != a.T).nnz:
        # SySTeC's convention for general matrices: use A + A^T.
        a = sp.coo_matrix(a + a.T)
    data = a.data.astype(np.float64)
    if not np.any(data):  # pattern matrices: all ones
        data = np.ones_like(data)
    return sg.SymmetricTensor.from_coo(np.vstack([a.row, a.col]), data, a.shape, check=False)


def load(path: Path) -> sg.SymmetricTensor:
    """A real data file as a float64 SymmetricTensor (general matrices symmetrized as A + A^T)."""
    name = path.name
    try:
        from systec_gpu.io import load as io_load  # type: ignore[attr-defined]
    except Exception:  # io not finished yet: use the fallbacks below
        io_load = None
    if io_load is not None:
        try:
            t = io_load(path, symmetric=True) if ".tns" in name else io_load(path)
            if isinstance(t, sg.SymmetricTensor):
                return _as_float(t)
        except Exception:
            pass
    if ".mtx" in name:
        return _load_mtx(path)
    from systec_gpu.io.frostt import read_tns

    return _as_float(read_tns(path, symmetric=True))


def random_symmetric(order: int, n: int, nnz: int, seed: int = 0, distinct: bool = True) -> sg.SymmetricTensor:
    """`nnz` canonical entries of a random fully symmetric order-`order` tensor with mode size n.

    distinct=True draws strictly increasing coordinates (hypergraph-like, the dominant class of
    real symmetric tensors); otherwise coordinates are sorted random draws (diagonals included).
    """
    rng = np.random.default_rng(seed)
    want = nnz
    idx = np.empty((order, 0), dtype=np.int64)
    while idx.shape[1] < want:
        draw = np.sort(rng.integers(0, n, size=(order, 2 * want)), axis=0)
        if distinct:
            draw = draw[:, np.all(np.diff(draw, axis=0) > 0, axis=0)]
        idx = np.unique(np.concatenate([idx, draw], axis=1), axis=1)
    idx = idx[:, rng.permutation(idx.shape[1])[:want]]
    vals = rng.random(want) + 0.5
    return sg.SymmetricTensor.from_canonical(idx, vals, (n,) * order, "full")


def random_symmetric_matrix(n: int, per_row: int, seed: int = 0) -> sg.SymmetricTensor:
    """A random symmetric sparse n x n matrix with about `per_row` stored nonzeros per row."""
    return random_symmetric(2, n, max(1, n * per_row // 2), seed=seed, distinct=False)


def dense_matrix(rows: int, cols: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((rows, cols))


def bytes_model_spmv(n: int, nnz_full: int, nnz_canonical: int, index_bytes: int = 4, value_bytes: int = 8) -> dict:
    """Bytes moved by one SpMV: full CSR vs canonical COO (row + col index + value per entry).

    Why: at few nonzeros per row, vector traffic (x read, y read-modify-write) is a large share,
    and half storage only halves the matrix part, so the best case ratio is far below 2x.
    """
    csr = nnz_full * (index_bytes + value_bytes) + (n + 1) * 8 + n * value_bytes * 2  # ptr, x, y
    # canonical COO: i, j, value per entry; x read, y written (and scattered y[j] updates re-read y)
    coo = nnz_canonical * (2 * index_bytes + value_bytes) + n * value_bytes * 3
    return {"csr_bytes": csr, "sym_coo_bytes": coo, "ratio": csr / coo if coo else math.nan,
            "nnz_per_row": nnz_full / n if n else math.nan}
