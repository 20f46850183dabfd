"""Storage formats: one object per format (see base.py for what each answers).

User spellings (`formats={"A": "csr"}`) are resolved here, once (`resolve`); the IR holds the
objects. A new format is one module and one row of `FORMATS`.
"""

from __future__ import annotations

from .base import DENSE, StorageFormat
from .coo import COO, COO_OR_CSF
from .csf import CSF
from .csr import CSR

FORMATS: tuple[StorageFormat, ...] = (DENSE, COO, CSR, CSF)  # the spellings users write, in order
SPELLINGS: tuple[str, ...] = tuple(f.name for f in FORMATS)
_BY_KEY = {f.key: f for f in (*FORMATS, COO_OR_CSF)}

__all__ = ["COO", "COO_OR_CSF", "CSF", "CSR", "DENSE", "FORMATS", "SPELLINGS", "StorageFormat", "by_key",
           "default_sparse", "resolve", "sparse_output_spellings"]


def by_key(key: str) -> StorageFormat:
    return _BY_KEY[key]


def resolve(value: object) -> StorageFormat | None:
    """The format a user spelling (or a format object, passed through) names; None if none."""
    if isinstance(value, StorageFormat):
        return value
    return next((f for f in FORMATS if f.name == value), None) if isinstance(value, str) else None


def default_sparse(ndim: int) -> StorageFormat:
    """A symmetric input's format when none is declared: CSR for matrices (rows accumulate in
    registers), COO for higher orders, read as CSF by the CPU backends where that reads fewer bytes."""
    return CSR if ndim == 2 else COO_OR_CSF


def sparse_output_spellings() -> tuple[str, ...]:
    """The spellings of a sparse symmetric output (`formats={"C": "coo"}`)."""
    return tuple(f.name for f in FORMATS if f.sparse_output)
