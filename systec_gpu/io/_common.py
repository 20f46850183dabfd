"""Shared pieces of the readers: the logger, symmetry arguments, entry errors -> file lines."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

from ..storage import EntryError, SparseTensor, SymmetricTensor
from .errors import FormatError

logger = logging.getLogger("systec_gpu.io")

Symmetric = Any  # None | bool | "full" | sequence of mode groups


def wanted_groups(symmetric: Symmetric, ndim: int) -> Any:
    """None for 'decide from the file'; otherwise a groups spec for normalize_groups."""
    if symmetric is None:
        return None
    if symmetric is True:
        return "full"
    if symmetric is False:
        return ()
    return symmetric


def entry_error(path: str | os.PathLike[str], err: EntryError,
                line_of: Callable[[int], int | None]) -> FormatError:
    """Re-raise an entry conflict as a FormatError naming the file and the lines involved."""
    lines = [line_of(p) for p in err.positions]
    lines = [n for n in lines if n is not None]
    msg = str(err)
    if len(lines) > 1:
        msg += f" (0-based indices; file lines {' and '.join(map(str, lines))})"
    return FormatError(path, msg, lines[0] if lines else None)


def declare(path: str | os.PathLike[str], idx: Any, vals: Any, shape: tuple[int, ...],
            groups: Any, *, check: bool, atol: float, rtol: float,
            line_of: Callable[[int], int | None], stored: str = "full") -> SparseTensor:
    """Entries given as COO with declared symmetry groups (() = none, duplicates then summed);
    ``stored`` as for SymmetricTensor.from_coo ("full": every permutation is in the file)."""
    try:
        if groups == () or groups == []:
            return SparseTensor.from_coo(idx, vals, shape)
        return SymmetricTensor.from_coo(idx, vals, shape, groups, stored=stored, check=check,
                                        atol=atol, rtol=rtol)
    except EntryError as e:
        raise entry_error(path, e, line_of) from None
    except ValueError as e:  # bad groups for this shape
        raise FormatError(path, str(e)) from None
