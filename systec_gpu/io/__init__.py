"""File I/O and converters for SparseTensor / SymmetricTensor.

``load``/``save`` pick the format from the file name: ``.mtx[.gz]`` (Matrix Market), ``.tns[.gz]``
(FROSTT), ``.npz``/``.h5``/``.hdf5``/``.zarr`` (binsparse).
"""

from __future__ import annotations

import os
from typing import Any

from ..storage import SparseTensor, SymmetricTensor, normalize_groups
from ._common import logger, wanted_groups
from .binsparse_io import from_binsparse, read_binsparse, to_binsparse, write_binsparse
from .convert import (
    as_sparse_tensor,
    from_numpy,
    from_pydata,
    from_scipy,
    from_torch,
    to_numpy,
    to_pydata,
    to_scipy,
    to_torch,
)
from .errors import FormatError
from .frostt import read_tns, write_tns
from .matrix_market import read_mtx, write_mtx

__all__ = [
    "FormatError",
    "as_sparse_tensor",
    "from_binsparse",
    "from_numpy",
    "from_pydata",
    "from_scipy",
    "from_torch",
    "load",
    "read_binsparse",
    "read_mtx",
    "read_tns",
    "save",
    "to_binsparse",
    "to_numpy",
    "to_pydata",
    "to_scipy",
    "to_torch",
    "write_binsparse",
    "write_mtx",
    "write_tns",
]

_READERS = {"mtx": read_mtx, "tns": read_tns, "binsparse": read_binsparse}
_WRITERS = {"mtx": write_mtx, "tns": write_tns, "binsparse": write_binsparse}


def _format(path: str | os.PathLike[str]) -> str:
    name = os.fspath(path).lower()
    base = name[:-3] if name.endswith(".gz") else name
    if base.endswith(".mtx"):
        return "mtx"
    if base.endswith(".tns"):
        return "tns"
    if name.endswith((".npz", ".h5", ".hdf5", ".zarr")):
        return "binsparse"
    raise FormatError(path, "unknown file type: use .mtx, .mtx.gz, .tns, .tns.gz (text) or "
                      ".npz, .h5, .hdf5, .zarr (binsparse)")


def load(path: str | os.PathLike[str], symmetric: Any = None, *, symmetrize: str | None = None,
         check: bool = True, atol: float = 0.0, rtol: float = 0.0,
         stored: str | None = None) -> SparseTensor:
    """Load a tensor file.

    ``symmetric``: None = as the file says (Matrix Market header, binsparse structure; for .tns
    full symmetry is detected and logged on the ``systec_gpu.io`` logger); True/"full" or a list
    of mode groups = declared and checked (``check``, ``atol``, ``rtol``); False = plain
    SparseTensor (a symmetric file is expanded).

    Data read as symmetric from a file that does not say it holds one triangle (a Matrix Market
    ``general`` file, an unmarked .tns) must store every permutation of each entry: an entry
    without its mirror is an error naming both (``check=False`` reads the canonical entries only).
    ``stored="one"`` says the file stores each symmetric entry once, in any arrangement.

    ``symmetrize`` ("sum" = A + Aᵀ, "average", "upper", "lower") turns data that is not already
    symmetric into a SymmetricTensor over the groups in ``symmetric`` (default: all modes);
    data the file already marks (or, for .tns, shows) as symmetric is returned unchanged.
    """
    reader = _READERS[_format(path)]
    if symmetrize is None:
        return reader(path, symmetric, check=check, atol=atol, rtol=rtol, stored=stored)
    t = reader(path, None, check=check, atol=atol, rtol=rtol, stored=stored)
    groups = wanted_groups(symmetric, t.ndim)
    groups = normalize_groups("full" if groups is None else groups, t.shape)
    if isinstance(t, SymmetricTensor) and t.groups == groups:
        logger.info("%s: already symmetric in %s; symmetrize=%r not applied", os.fspath(path),
                    groups, symmetrize)
        return t
    return t.symmetrize(symmetrize, groups)


def save(path: str | os.PathLike[str], tensor: Any) -> None:
    """Save a tensor (anything ``as_sparse_tensor`` accepts); the format follows the file name.

    A SymmetricTensor is stored compactly: a ``symmetric`` Matrix Market file (one triangle), a
    binsparse ``symmetric_upper`` structure (or the ``systec_gpu.groups`` key beyond matrices),
    or, in .tns, its canonical entries only (read back with ``load(path, symmetric=...)``).
    """
    t = tensor if isinstance(tensor, SparseTensor) else as_sparse_tensor(tensor)
    _WRITERS[_format(path)](path, t)
