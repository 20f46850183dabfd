"""Symmetry of dense arrays: checking a declaration, and filling an array from its canonical part."""

from __future__ import annotations

import functools

import numpy as np

from .storage import EntryError, check_dense_symmetry


def check_symmetric(name: str, array: np.ndarray, groups, atol: float = 0.0, rtol: float = 0.0) -> None:
    """Raise ValueError naming one pair of entries that breaks the declared symmetry."""
    for group in groups:
        if len({array.shape[m] for m in group}) > 1:
            sizes = ", ".join(f"mode {m}: {array.shape[m]}" for m in group)
            raise ValueError(f"{name} is declared symmetric in modes {group} but its sizes differ ({sizes})")
    try:
        check_dense_symmetry(array, tuple(groups), name, atol, rtol)
    except EntryError as error:
        raise ValueError(f"{error} (pass check=False to read only its canonical part)") from None


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
            _mirror_pair()(front)
        else:
            n = front.shape[0]
            grid = np.indices((n,) * len(group)).reshape(len(group), -1)
            canonical = front[tuple(np.sort(grid, axis=0))]
            front[tuple(grid)] = canonical


@functools.cache
def _mirror_pair():
    """The compiled pair mirror (numba is imported on first use: `import systec_gpu` stays light)."""
    import numba

    @numba.njit(cache=True)
    def mirror_pair(front):
        # front[b, a] = front[a, b] for a < b: one pass over the strictly lower half, in place.
        n = front.shape[0]
        for a in range(n):
            for b in range(a + 1, n):
                front[b, a] = front[a, b]

    return mirror_pair
