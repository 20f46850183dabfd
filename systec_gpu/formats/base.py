"""What every storage format answers (`StorageFormat`), and the dense one.

A format is one object (a singleton): the IR holds it (`Program.formats`, `SparseLoop.format`,
`NonzeroTile.format`) and prints it by its spelling, so a generated kernel's header reads as before;
passes, schedules, emitters and the runtime ask it (`fmt.sparse`, `fmt.row_pointers`,
`fmt.arrays(ndim)`, `fmt.loop_levels(...)`) instead of comparing spellings. Nothing here imports the
IR or a backend: formats sit below both.
"""

from __future__ import annotations

from collections.abc import Iterator


class StorageFormat:
    """One way of storing a tensor.

    - `name`: the user-facing spelling (`formats={"A": name}`), also what the IR prints.
    - `sparse`: stored nonzeros are visited (a sparse loop); else every entry is read densely.
    - `row_pointers`: mode 0 is walked as rows through pointers (the row is a position, not a
      stored coordinate): chunk bounds are rows, row-block tiles apply, the row's own output
      accumulates in registers.
    - `fiber_levels`: one nested loop per mode (CSF levels), each over the fibers under the
      enclosing one.
    - `sparse_output`: a spelling for a sparse symmetric output (canonical nonzeros, spgemm.py).
    - `tile_note`: how a nonzero tile (Triton) reads this format when not as stored, with why
      (None: as stored).

    Formats are singletons compared by identity; `key` names each one uniquely (two objects may
    share a spelling) and is what a pickle holds, so an unpickled IR compares equal. Not a
    dataclass: the IR traversal descends into dataclass fields, and a format is a leaf.
    """

    key: str = ""
    name: str = ""
    sparse: bool = True
    row_pointers: bool = False
    fiber_levels: bool = False
    sparse_output: bool = False
    tile_note: str | None = None

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"<format {self.key}>"

    def __reduce__(self):
        from . import by_key  # the registry imports this module

        return by_key, (self.key,)

    def modes_error(self, tensor: str, ndim: int) -> str | None:
        """Why `tensor` with `ndim` modes cannot be stored in this format (None: it can)."""
        return None

    def arrays(self, ndim: int) -> tuple[tuple[str, int | None], ...]:
        """The structure arrays a kernel reads, as (kind, key) kernel parameters, before the
        values: ("coords", mode) per stored coordinate, ("pointers", None) for row pointers,
        ("fiber_coords", level) / ("fiber_pointers", level) for per-mode levels."""
        return tuple(("coords", mode) for mode in range(ndim))

    def lead_array(self, ndim: int) -> tuple[str, int | None] | None:
        """The kernel parameter holding the leading coordinate of each outermost position (the
        chunk bounds index it); None when the position is the coordinate (rows)."""
        return ("coords", 0)

    def loop_levels(self, tensor: str, indices: tuple) -> tuple[tuple[tuple, frozenset], ...]:
        """The nested positions a CPU loop over the stored entries opens, outermost first, each as
        (key, the indices bound there): where registers can accumulate an output fixed inside."""
        return ((("nonzeros", tensor), frozenset(indices)),)

    def chunk_bounds(self, driver, chunks: int):
        """Outer-loop boundaries of `chunks` chunks balanced by nonzeros (positions of the
        outermost level: nonzeros, rows or fibers)."""
        return driver.chunk_bounds(chunks)

    def visit(self, driver) -> Iterator[tuple[tuple[int, ...], int]]:
        """(coordinates per mode, position of the value) of each stored entry in storage order:
        the reference interpreter's walk."""
        coords = [driver.coords[m] for m in range(len(driver.coords))]
        for p in range(driver.nnz):
            yield tuple(int(c[p]) for c in coords), p


class Dense(StorageFormat):
    """Every entry stored; read by index (no sparse loop)."""

    key = name = "dense"
    sparse = False


DENSE = Dense()
