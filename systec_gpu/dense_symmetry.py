"""Symmetry of dense arrays: checking a declaration, and filling an array from its canonical part."""

from __future__ import annotations

import itertools

import numpy as np


def _agree(a: np.ndarray, b: np.ndarray, atol: float, rtol: float) -> np.ndarray:
    same = (a == b) | (np.isnan(a) & np.isnan(b)) if a.dtype.kind in "fc" else a == b
    if atol or rtol:
        with np.errstate(invalid="ignore"):
            same |= np.abs(a - b) <= atol + rtol * np.abs(b)
    return same


def check_symmetric(name: str, array: np.ndarray, groups, atol: float = 0.0, rtol: float = 0.0) -> None:
    """Raise ValueError naming one pair of entries that breaks the declared symmetry."""
    for group in groups:
        if len({array.shape[m] for m in group}) > 1:
            sizes = ", ".join(f"mode {m}: {array.shape[m]}" for m in group)
            raise ValueError(f"{name} is declared symmetric in modes {group} but its sizes differ ({sizes})")
        for p, q in itertools.pairwise(group):  # adjacent transpositions generate the group
            bad = ~_agree(array, np.swapaxes(array, p, q), atol, rtol)
            if bad.any():
                x = np.unravel_index(int(np.argmax(bad)), array.shape)
                y = list(x)
                y[p], y[q] = x[q], x[p]
                raise ValueError(
                    f"{name} is declared symmetric in modes {group} but "
                    f"{name}[{', '.join(map(str, x))}] = {array[x]!r} while "
                    f"{name}[{', '.join(map(str, y))}] = {array[tuple(y)]!r} "
                    "(pass check=False to read only its canonical part)"
                )


def mirror_canonical(array: np.ndarray, groups) -> np.ndarray:
    """A new array whose every entry is the canonical entry (sorted group coordinates) of `array`.

    Only the canonical part of `array` is read.
    """
    result = np.array(array, copy=True)
    for group in groups:
        moved = np.moveaxis(result, group, range(result.ndim - len(group), result.ndim))
        n = moved.shape[-1]
        if len(group) == 2:
            upper = np.triu(moved)
            full = upper + np.swapaxes(np.triu(moved, 1), -1, -2)
        else:
            grid = np.sort(np.indices((n,) * len(group)).reshape(len(group), -1), axis=0)
            full = moved[(..., *grid)].reshape(moved.shape)
        result = np.moveaxis(full, range(result.ndim - len(group), result.ndim), group)
    return np.ascontiguousarray(result)
