"""CSF: one level per mode, runs of equal leading coordinates stored once (TACO's compressed levels).

Level 0 holds the distinct leading coordinates (the roots); level m > 0 holds, for each fiber of
level m-1, the distinct coordinates of mode m under it (`pointers[m]` delimit them); the last
level is one entry per nonzero, in storage order, so the values are the COO values as they are.
Built from sorted, duplicate-free coordinates (the storage invariant: canonical for a symmetric
tensor), cached on the driver's structure (shared by `with_values`, never holding values).

Bytes read: COO reads `ndim` coordinates per nonzero; CSF reads one coordinate per fiber of each
level and `fibers + 1` pointers per level below the roots. For order >= 3 and runs of shared
leading coordinates (hypergraph tensors: many edges per node pair) the levels are smaller; for
tensors whose leading pairs are mostly distinct, the pointers make CSF larger. `reads_fewer_bytes`
is the rule the CPU backends choose by (formats/choice.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from .base import StorageFormat


@dataclass
class Fibers:
    """The CSF levels of one driver structure (host numpy arrays)."""

    coords: list  # per level: one coordinate per fiber (level ndim-1: per nonzero)
    pointers: list  # per level: None at level 0; else fibers of level m under each fiber of level m-1
    root_starts: np.ndarray  # nonzero position where each root's entries start
    nnz: int
    bounds: dict = field(default_factory=dict)  # chunks -> root boundaries

    def nbytes(self) -> int:
        """Structure bytes a walk over every level reads once."""
        return sum(c.nbytes for c in self.coords) + sum(p.nbytes for p in self.pointers if p is not None)

    def chunk_bounds(self, chunks: int) -> np.ndarray:
        """Root boundaries of `chunks` chunks with about equal nonzero counts."""
        if chunks not in self.bounds:
            targets = np.linspace(0, self.nnz, chunks + 1).round().astype(np.int64)
            found = np.searchsorted(self.root_starts, targets, side="left").astype(np.int64)
            found[0], found[-1] = 0, len(self.root_starts)
            self.bounds[chunks] = found
        return self.bounds[chunks]


def build_fibers(coords: list, nnz: int) -> Fibers:
    """CSF levels of sorted, duplicate-free coordinates (one array per mode, length nnz)."""
    ndim = len(coords)
    position = np.uint32 if nnz < 2**31 else np.int64  # positions of fibers: what pointers hold
    starts: list[np.ndarray] = []
    change = np.zeros(max(nnz - 1, 0), dtype=bool)
    for m in range(ndim - 1):
        change |= coords[m][1:] != coords[m][:-1]
        first = np.concatenate((np.ones(min(nnz, 1), dtype=bool), change))
        starts.append(np.flatnonzero(first))
    starts.append(np.arange(nnz))
    level_coords = [np.ascontiguousarray(coords[m][starts[m]]) for m in range(ndim - 1)]
    level_coords.append(coords[ndim - 1])
    pointers: list = [None]
    for m in range(1, ndim):
        inner = np.searchsorted(starts[m], starts[m - 1], side="left")
        pointers.append(np.append(inner, len(starts[m])).astype(position))
    return Fibers(level_coords, pointers, starts[0], nnz)


def fibers(driver) -> Fibers:
    """The CSF levels of a bound driver (runtime DriverArrays), built once per structure."""
    cache = driver.structure.levels
    if "csf" not in cache:
        cache["csf"] = build_fibers([np.asarray(driver.coords[m]) for m in range(len(driver.coords))], driver.nnz)
    return cache["csf"]


def coo_nbytes(driver) -> int:
    """Structure bytes of the driver's COO coordinates (one per mode and nonzero)."""
    itemsize = np.asarray(driver.coords[0]).itemsize if len(driver.coords) else 0
    return driver.nnz * len(driver.coords) * itemsize


def reads_fewer_bytes(driver) -> bool:
    """The rule: CSF where its levels read fewer structure bytes than COO's coordinates (the
    values are read once either way)."""
    return driver.nnz > 0 and fibers(driver).nbytes() < coo_nbytes(driver)


class Csf(StorageFormat):
    key = name = "csf"
    fiber_levels = True
    tile_note = ("CSF driver tiled as its COO nonzeros: a tile's lanes are nonzeros, and walking CSF levels would "
                 "serialize a tile over fibers of unequal length; the launch passes one coordinate per mode")

    def modes_error(self, tensor: str, ndim: int) -> str | None:
        if ndim < 3:
            return (f"formats[{tensor!r}] = 'csf' needs 3 or more modes (one level per mode; a matrix is 'csr'), "
                    f"{tensor} has {ndim}")
        return None

    def arrays(self, ndim: int) -> tuple[tuple[str, int | None], ...]:
        arrays: list[tuple[str, int | None]] = [("fiber_coords", 0)]
        for level in range(1, ndim):
            arrays += [("fiber_pointers", level), ("fiber_coords", level)]
        return tuple(arrays)

    def lead_array(self, ndim: int) -> tuple[str, int | None] | None:
        return ("fiber_coords", 0)

    def loop_levels(self, tensor: str, indices: tuple) -> tuple[tuple[tuple, frozenset], ...]:
        return tuple((("level", tensor, m), frozenset((index,))) for m, index in enumerate(indices))

    def chunk_bounds(self, driver, chunks: int):
        return fibers(driver).chunk_bounds(chunks)

    def visit(self, driver) -> Iterator[tuple[tuple[int, ...], int]]:
        levels = fibers(driver)
        last = len(levels.coords) - 1

        def walk(level: int, lo: int, hi: int, prefix: tuple) -> Iterator[tuple[tuple[int, ...], int]]:
            for p in range(lo, hi):
                here = (*prefix, int(levels.coords[level][p]))
                if level == last:
                    yield here, p
                else:
                    below = levels.pointers[level + 1]
                    yield from walk(level + 1, int(below[p]), int(below[p + 1]), here)

        yield from walk(0, 0, len(levels.coords[0]), ())

    def array(self, driver, kind: str, key: int):
        """A kernel argument of this format (`arrays`) for a bound driver."""
        levels = fibers(driver)
        return levels.coords[key] if kind == "fiber_coords" else levels.pointers[key]


CSF = Csf()
