"""Converters between our storage and numpy, torch, scipy.sparse, pydata ``sparse``, binsparse.

``symmetric`` everywhere: None (no symmetry declared; SparseTensor/SymmetricTensor pass through),
``"full"`` or True, False/() (plain SparseTensor), or a list of mode groups. Declared symmetry is
checked (``check``, within ``atol``/``rtol``); a violation is a ValueError naming the operand and
one offending pair of entries. Library semantics are kept: duplicates in scipy, torch and pydata
COO inputs are summed before symmetry is checked. Exports of a SymmetricTensor are expanded.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..storage import SparseTensor, SymmetricTensor, _to_numpy, normalize_groups
from ._common import wanted_groups
from .binsparse_io import from_binsparse

__all__ = [
    "as_sparse_tensor",
    "from_numpy",
    "from_pydata",
    "from_scipy",
    "from_torch",
    "to_numpy",
    "to_pydata",
    "to_scipy",
    "to_torch",
]


def _declare(t: SparseTensor, symmetric: Any, check: bool, atol: float, rtol: float,
             name: str) -> SparseTensor:
    """Apply a symmetry declaration to a tensor (regrouping a SymmetricTensor if asked)."""
    if symmetric is None:
        return t
    groups = normalize_groups(wanted_groups(symmetric, t.ndim), t.shape, name)
    if isinstance(t, SymmetricTensor):
        if t.groups == groups:
            return t
        t = t.expanded()
    if not groups:
        return t
    return SymmetricTensor.from_coo(t.indices, t.values, t.shape, groups, check=check,
                                    atol=atol, rtol=rtol, name=name)


def _expanded(t: SparseTensor) -> SparseTensor:
    return t.expanded() if isinstance(t, SymmetricTensor) else t


def from_numpy(a: Any, symmetric: Any = None, *, check: bool = True, atol: float = 0.0,
               rtol: float = 0.0, name: str = "A") -> SparseTensor:
    """The nonzeros of a dense array (canonical ones only when symmetric)."""
    a = _to_numpy(a)
    if symmetric is not None:
        groups = normalize_groups(wanted_groups(symmetric, a.ndim), a.shape, name)
        if groups:
            return SymmetricTensor.from_dense(a, groups, check=check, atol=atol, rtol=rtol,
                                              name=name)
    return SparseTensor.from_dense(a)


def to_numpy(t: SparseTensor) -> np.ndarray:
    """Dense numpy array (all permutations filled for a SymmetricTensor)."""
    return _to_numpy(t.to_dense())


def from_scipy(m: Any, symmetric: Any = None, *, check: bool = True, atol: float = 0.0,
               rtol: float = 0.0, name: str = "A") -> SparseTensor:
    """Any scipy.sparse matrix or array (duplicates summed, explicit zeros kept)."""
    coo = m.tocoo()
    coords = getattr(coo, "coords", None) or (coo.row, coo.col)
    t = SparseTensor.from_coo(np.stack([np.asarray(c, dtype=np.int64) for c in coords]),
                              coo.data, coo.shape, name=name)
    return _declare(t, symmetric, check, atol, rtol, name)


def to_scipy(t: SparseTensor, format: str = "csr") -> Any:
    """A scipy.sparse array of the expanded matrix in the given format (csr, coo, csc, ...)."""
    import scipy.sparse as sp

    e = _expanded(t).numpy()
    vals = _to_numpy(e.values)
    if e.ndim != 2:
        raise ValueError(f"to_scipy: scipy.sparse holds matrices; this tensor has {e.ndim} modes")
    if format == "csr":
        return sp.csr_array((vals, e.indices[1], e.csr_pointers()), shape=e.shape)
    return sp.coo_array((vals, (e.indices[0], e.indices[1])), shape=e.shape).asformat(format)


def from_torch(x: Any, symmetric: Any = None, *, check: bool = True, atol: float = 0.0,
               rtol: float = 0.0, name: str = "A") -> SparseTensor:
    """A dense or sparse (COO, CSR, CSC, BSR, ...; coalesced or not) torch tensor."""
    import torch

    if x.layout == torch.strided:
        return from_numpy(x, symmetric, check=check, atol=atol, rtol=rtol, name=name)
    if x.layout == torch.sparse_csr and x.dim() == 2 and x.values().dim() == 1:
        crow = _to_numpy(x.crow_indices()).astype(np.int64)
        rows = np.repeat(np.arange(x.shape[0], dtype=np.int64), np.diff(crow))
        idx = np.stack([rows, _to_numpy(x.col_indices()).astype(np.int64)])
        vals = _to_numpy(x.values())
    else:
        coo = (x if x.layout == torch.sparse_coo else x.to_sparse_coo()).coalesce()
        if coo.values().dim() != 1:
            raise ValueError(f"{name}: hybrid sparse tensors (dense value blocks) are unsupported")
        idx, vals = _to_numpy(coo.indices()), _to_numpy(coo.values())
    t = SparseTensor.from_coo(idx, vals, tuple(x.shape), name=name)
    return _declare(t, symmetric, check, atol, rtol, name)


def to_torch(t: SparseTensor, layout: Any = "coo", *, device: Any = None) -> Any:
    """A torch tensor of the expanded tensor: layout "coo", "csr", "strided" or a torch.layout."""
    import torch

    names = {torch.sparse_coo: "coo", torch.sparse_csr: "csr", torch.strided: "strided"}
    kind = names.get(layout, layout)
    if kind == "strided":
        out = torch.as_tensor(t.to_dense())
    else:
        e = _expanded(t).numpy()
        vals = torch.as_tensor(_to_numpy(e.values))
        if kind == "coo":
            # our COO is sorted and unique: valid and coalesced by construction
            out = torch.sparse_coo_tensor(torch.from_numpy(e.indices), vals, e.shape,
                                          is_coalesced=True, check_invariants=False)
        elif kind == "csr":
            if e.ndim != 2:
                raise ValueError(f"to_torch: CSR needs a matrix, this tensor has {e.ndim} modes")
            out = torch.sparse_csr_tensor(torch.from_numpy(e.csr_pointers()),
                                          torch.from_numpy(e.indices[1].copy()), vals, e.shape,
                                          check_invariants=False)
        else:
            raise ValueError(f"to_torch: unsupported layout {layout!r}")
    return out if device is None else out.to(device)


def from_pydata(a: Any, symmetric: Any = None, *, check: bool = True, atol: float = 0.0,
                rtol: float = 0.0, name: str = "A") -> SparseTensor:
    """A pydata ``sparse`` array (COO, GCXS, DOK, ...) with fill value 0."""
    import sparse

    if a.fill_value != 0:  # NaN fill values are refused too
        raise ValueError(f"{name}: pydata sparse array with nonzero fill value {a.fill_value!r}")
    coo = a if isinstance(a, sparse.COO) else a.asformat("coo")
    t = SparseTensor.from_coo(coo.coords, coo.data, coo.shape, name=name)
    return _declare(t, symmetric, check, atol, rtol, name)


def to_pydata(t: SparseTensor, format: str = "coo") -> Any:
    """A pydata ``sparse`` array (format "coo" or "gcxs", ...) of the expanded tensor."""
    import sparse

    e = _expanded(t).numpy()
    coo = sparse.COO(e.indices, _to_numpy(e.values), shape=e.shape, has_duplicates=False,
                     sorted=True)
    return coo if format == "coo" else coo.asformat(format)


def as_sparse_tensor(obj: Any, symmetric: Any = None, *, check: bool = True, atol: float = 0.0,
                     rtol: float = 0.0, name: str = "A") -> SparseTensor:
    """Any supported input as a SparseTensor/SymmetricTensor (the compiler's entry point)."""
    if isinstance(obj, SparseTensor):
        return _declare(obj, symmetric, check, atol, rtol, name)
    module = type(obj).__module__.split(".")[0]
    kw = {"check": check, "atol": atol, "rtol": rtol, "name": name}
    if module == "torch":
        return from_torch(obj, symmetric, **kw)
    if module == "scipy":
        return from_scipy(obj, symmetric, **kw)
    if module == "sparse":
        return from_pydata(obj, symmetric, **kw)
    if module == "binsparse":
        return from_binsparse(obj, symmetric, check=check, atol=atol, rtol=rtol, path=name)
    if isinstance(obj, np.ndarray | list | tuple | int | float | complex | np.generic):
        return from_numpy(np.asarray(obj), symmetric, **kw)
    raise TypeError(f"{name}: cannot use a {type(obj).__module__}.{type(obj).__name__} as a "
                    "sparse tensor")
