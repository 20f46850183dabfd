"""Symmetry of dense arrays: checking a declaration, and filling an array from its canonical part."""

from __future__ import annotations

import itertools

import numba
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
    mirror_in_place(result, groups)
    return np.ascontiguousarray(result)


def mirror_in_place(array: np.ndarray, groups) -> None:
    """Overwrite every non-canonical entry of `array` (any strides) with its canonical entry."""
    for group in groups:
        front = np.moveaxis(array, group, range(len(group)))  # a view: writes reach `array`
        if front.shape[0] == 0:
            continue
        if len(group) == 2:
            _mirror_pair(front)
        else:
            n = front.shape[0]
            grid = np.indices((n,) * len(group)).reshape(len(group), -1)
            canonical = front[tuple(np.sort(grid, axis=0))]
            front[tuple(grid)] = canonical


@numba.njit(cache=True)
def _mirror_pair(front):
    # front[b, a] = front[a, b] for a < b: one pass over the strictly lower half, in place.
    n = front.shape[0]
    for a in range(n):
        for b in range(a + 1, n):
            front[b, a] = front[a, b]
