"""binsparse containers (``.npz``, ``.h5``/``.hdf5``, ``.zarr``) through the ``binsparse`` package.

Reading accepts every binsparse format (predefined or custom levels, with ``transpose``) by
walking its level tree into COO. Symmetry comes from the descriptor:

* ``"structure": "symmetric_lower"`` / ``"symmetric_upper"`` (the spec's matrix structures)
  become a SymmetricTensor straight from the stored triangle; ``skew_symmetric_*`` and
  ``hermitian_*`` load expanded as general tensors;
* ``"systec_gpu": {"groups": [[0, 1, 2], ...]}``: our extension key for tensors of any order
  whose stored entries are canonical (other readers see the canonical entries only).

Writing: vectors as CVEC, matrices as COOR (a symmetric matrix as its upper triangle with
``structure: symmetric_upper``), higher orders as a custom COO level of full rank. Value and
index dtypes are kept exactly.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from ..storage import EntryError, SparseTensor, SymmetricTensor, _to_numpy, normalize_groups
from ._common import declare, entry_error, wanted_groups
from .errors import FormatError

_EXT_KEY = "systec_gpu"


def _bs() -> Any:
    try:
        import binsparse
    except ImportError as e:  # optional dependency
        raise ImportError("binsparse files need the 'binsparse' package (pip install "
                          "systec_gpu[io])") from e
    return binsparse


@contextlib.contextmanager
def _container(path: str | os.PathLike[str], mode: str) -> Iterator[Any]:
    bs = _bs()
    suffix = os.fspath(path).lower().rsplit(".", 1)[-1]
    if suffix == "npz":
        if mode == "r":
            with np.load(path, allow_pickle=False) as archive:
                yield bs.NPZBinsparseContainer(archive)
        else:
            archive: dict[str, np.ndarray] = {}
            yield bs.NPZBinsparseContainer(archive)
            np.savez(path, **archive)
    elif suffix in ("h5", "hdf5"):
        import h5py

        with h5py.File(path, mode) as f:
            yield bs.HDF5BinsparseContainer(f)
    elif suffix == "zarr":
        import zarr

        yield bs.ZarrBinsparseContainer(zarr.open_group(path, mode=mode))
    else:
        raise FormatError(path, "binsparse files end in .npz, .h5, .hdf5 or .zarr")


def _walk(level: Any, shape: tuple[int, ...], depth: int, pos: np.ndarray,
          coords: list[np.ndarray], dense: bool) -> tuple[list[np.ndarray], np.ndarray, bool]:
    """Expand a level tree: stored-mode coordinates, values, and whether a level was dense."""
    bs = _bs()
    if isinstance(level, bs.ElementLevel):
        return coords, np.asarray(level.values)[pos], dense
    if isinstance(level, bs.DenseLevel):
        sizes = shape[depth:depth + level.rank]
        n = math.prod(sizes)
        child = (pos[:, None] * n + np.arange(n)).reshape(-1)
        coords = [c.repeat(n) for c in coords]
        coords += [np.tile(u, pos.size) for u in np.unravel_index(np.arange(n), sizes)]
        return _walk(level.level, shape, depth + level.rank, child, coords, True)
    if isinstance(level, bs.SparseLevel):
        ind = [np.asarray(i, dtype=np.int64) for i in level.indices]
        if level.pointers_to_next is None:  # root sparse level: one parent holding everything
            child = np.arange(ind[0].size if ind else 0)
            parent = np.zeros(child.size, dtype=np.int64)
        else:
            ptr = np.asarray(level.pointers_to_next, dtype=np.int64)
            lo, counts = ptr[pos], ptr[pos + 1] - ptr[pos]
            parent = np.repeat(np.arange(pos.size), counts)
            child = lo[parent] + np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts,
                                                                      counts)
        coords = [c[parent] for c in coords] + [i[child] for i in ind]
        return _walk(level.level, shape, depth + level.rank, child, coords, dense)
    raise FormatError("binsparse", f"unsupported level {type(level).__name__}")


def from_binsparse(bt: Any, symmetric: Any = None, *, header: dict[str, Any] | None = None,
                   check: bool = True, atol: float = 0.0, rtol: float = 0.0,
                   path: str = "binsparse tensor", stored: str | None = None) -> SparseTensor:
    """Convert a ``binsparse.BinsparseTensor`` (and its descriptor, for symmetry) to our storage."""
    bs = _bs()
    header = header or {}
    if bt.fill is True and bt.fill_value not in (0, False):
        raise FormatError(path, f"fill value {np.asarray(bt.fill_value).item()!r} is not zero")
    if not isinstance(bt, bs.CustomTensor):  # predefined formats as their level trees
        c = bs.InMemoryBinsparseContainer()
        bt.serialize(c, alias=False)
        bt = bs.BinsparseTensor.parse(c, alias=False)
    shape = tuple(int(s) for s in bt.shape)
    perm = bt.transpose or tuple(range(len(shape)))
    stored_shape = tuple(shape[p] for p in perm)
    coords, vals, dense = _walk(bt.level, stored_shape, 0, np.zeros(1, dtype=np.int64), [],
                                False)
    idx = np.empty((len(shape), vals.size), dtype=np.int64)
    for k, p in enumerate(perm):  # stored mode k holds the coordinate of mode perm[k]
        idx[p] = coords[k]
    if dense:
        keep = vals != 0
        idx, vals = idx[:, keep], vals[keep]
    structure = header.get("structure")
    groups = wanted_groups(symmetric, len(shape))
    file_groups: Any = ()
    if structure in ("symmetric_lower", "symmetric_upper"):
        file_groups = ((0, 1),)
    elif structure is not None:
        kind = structure.rsplit("_", 1)[0]
        if kind not in ("skew_symmetric", "hermitian"):
            raise FormatError(path, f"unknown structure {structure!r}")
        off = idx[0] != idx[1]
        mirror = -vals[off] if kind == "skew_symmetric" else np.conj(vals[off])
        idx = np.concatenate([idx, idx[::-1, off]], axis=1)
        vals = np.concatenate([vals, mirror])
    elif _EXT_KEY in header:
        file_groups = header[_EXT_KEY].get("groups", ())
    try:
        file_groups = normalize_groups(file_groups, shape)
        wanted = file_groups if groups is None else normalize_groups(groups, shape)
    except ValueError as e:
        raise FormatError(path, str(e)) from None
    if file_groups:
        if structure == "symmetric_lower":
            idx = idx[::-1]
        try:
            t = SymmetricTensor.from_canonical(idx, vals, shape, file_groups)
        except EntryError as e:
            raise entry_error(path, e, lambda p: None) from None
        if wanted == file_groups:
            return t
        e = t.expanded()
        idx, vals = e.indices, e.values
    # expanded above from the file's structure: every permutation is there; otherwise the
    # entries are what the caller says (default: every permutation)
    full = structure is not None or bool(file_groups)
    return declare(path, idx, vals, shape, wanted, check=check, atol=atol, rtol=rtol,
                   line_of=lambda p: None, stored="full" if full else (stored or "full"))


def to_binsparse(t: SparseTensor) -> tuple[Any, dict[str, Any]]:
    """A ``binsparse.BinsparseTensor`` and the extra descriptor keys that carry symmetry."""
    bs = _bs()
    vals = _to_numpy(t.values)  # numpy, or torch values (e.g. from with_values)
    rows = tuple(t.indices)
    extra: dict[str, Any] = {}
    groups = getattr(t, "groups", ())
    if t.ndim == 1:
        bt = bs.CVECVector(t.shape, t.nnz, indices_0=rows[0], values=vals)
    elif t.ndim == 2:
        bt = bs.COORMatrix(t.shape, t.nnz, indices_0=rows[0], indices_1=rows[1], values=vals)
    elif t.ndim >= 3:
        level = bs.SparseLevel(t.ndim, bs.ElementLevel(vals), rows)
        bt = bs.CustomTensor(t.shape, t.nnz, level=level)
    else:
        raise ValueError("binsparse: cannot store a tensor with no modes")
    if groups == ((0, 1),) and t.ndim == 2:
        extra["structure"] = "symmetric_upper"  # canonical entries are the upper triangle
    elif groups:
        extra[_EXT_KEY] = {"groups": [list(g) for g in groups]}
    return bt, extra


def read_binsparse(path: str | os.PathLike[str], symmetric: Any = None, *, check: bool = True,
                   atol: float = 0.0, rtol: float = 0.0, stored: str | None = None) -> SparseTensor:
    """Read a binsparse container (symmetry from its descriptor when ``symmetric=None``)."""
    bs = _bs()
    try:
        with _container(path, "r") as c:
            header = c.read_header()
            bt = bs.BinsparseTensor.parse(c, alias=False)
    except (bs.BinsparseParseError, KeyError, TypeError) as e:
        raise FormatError(path, f"invalid binsparse container: {e}") from None
    return from_binsparse(bt, symmetric, header=header, check=check, atol=atol, rtol=rtol,
                          path=os.fspath(path), stored=stored)


def write_binsparse(path: str | os.PathLike[str], t: SparseTensor) -> None:
    bt, extra = to_binsparse(t)
    with _container(path, "w") as c:
        bt.serialize(c)
        if extra:
            c.write_header({**c.read_header(), **extra})
