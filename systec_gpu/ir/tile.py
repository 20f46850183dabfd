"""Tile-level IR: the loop program cut into GPU programs (tiles) with lanes, masks and writes.

A `TileProgram` is a chain of levels, outermost first, like the loop chain it comes from:

- `NonzeroTile`: one program per `size` consecutive canonical nonzeros of the driver (COO); the
  nonzeros are the lanes of tile axis 0.
- `RowBlock`: one program per `rows` consecutive rows of a CSR driver; tile axis 0 holds the
  rows, axis 1 `lanes` nonzeros of each row at a time (a loop steps through the longest row of
  the block). No row index is stored per nonzero: the row is the lane's axis-0 position.
- `BlockAxis`: a dense loop as a tile axis (0 or 1) of `block` lanes. `gridded` axes are cut
  into blocks across programs (the launch enumerates the block tuples, canonical ones only);
  the others loop over blocks inside the program.
- `ScalarLoop`: a dense loop kept as a scalar `for` inside the program.
- `ContractionLoop`: the innermost dense loop of a dense contraction, stepped `block` at a time
  and reduced by `tl.dot` (a `DotUpdate` at its level).
- `Mask`: a canonical-order filter (`lhs <= rhs`); it narrows the lanes, never branches.

Loop bounds that refer to lane indices become masks too. Every update carries how it writes:
`atomic` (lanes of several programs may hit one element) or `owned` (the program's lanes own
their output elements: accumulate in registers, one store at the end).

A sparse tile's update may be a `SegmentedUpdate`: its lanes are reduced inside the tile before
any write (one atomic per run of lanes sharing an output element). A row block's update of the
row's own output is an `OwnedRowUpdate`: reduced in registers, written once per row. An owned
store may be `mirror`ed: a symmetric 2-mode output written to both halves from the same registers.

`num_warps` and `index_bits` (32: int32 address arithmetic, every extent below 2**31) are part of
the program: they change the generated code, so they are part of the kernel's cache key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from ..formats import StorageFormat
from ..ir.einsum import Access, Index
from ..ir.loop import Extent, Let, LoopProgram, Update, format_lexpr


@dataclass(frozen=True)
class NonzeroTile:
    tensor: str
    indices: tuple[Index, ...]
    format: StorageFormat  # the driver's format in the loop IR; the launch always passes COO rows
    size: int  # nonzeros per program (a power of two)


@dataclass(frozen=True)
class RowBlock:
    tensor: str
    indices: tuple[Index, ...]  # (row, column) of the CSR driver
    rows: int  # rows per program (a power of two): tile axis 0
    lanes: int  # nonzeros of each row visited at once (a power of two): tile axis 1
    # the first dense loop (tile axis 2) runs outside the steps through the rows' nonzeros
    dense_outside: bool = False


@dataclass(frozen=True)
class BlockAxis:
    index: Index
    extent: Extent
    lower: Index | None
    upper: Index | None
    axis: int  # 0 or 1: the tile dimension the lanes lie along
    block: int  # lanes per block (a power of two)
    gridded: bool  # True: blocks across programs; False: a loop over blocks inside one program


@dataclass(frozen=True)
class ScalarLoop:
    index: Index
    extent: Extent
    lower: Index | None
    upper: Index | None


@dataclass(frozen=True)
class ContractionLoop:
    index: Index
    extent: Extent
    block: int  # the contraction step of tl.dot (a power of two >= 16)


@dataclass(frozen=True)
class Mask:
    lhs: Index
    rhs: Index


@dataclass(frozen=True)
class SegmentedUpdate:
    """`update`, reduced over the nonzero lanes (tile axis 0) before it writes.

    `key` is the driver's leading index, the only output index that varies along the lanes:
    nonzeros are sorted by it, so lanes with one output element form runs; each run is reduced
    (a segmented scan) and its last lane writes once. `key` None: no output index varies along
    the lanes, so the whole tile reduces to one write per element.
    """

    update: Update
    key: Index | None


@dataclass(frozen=True)
class OwnedRowUpdate:
    """`update` of the row's own output (indexed by the row, not by a column): reduced over the
    row's lanes (tile axis 1) into a register accumulator of the program, written once per row
    after the last step; `write` says how: "store" (a plain store into the stored buffer, while
    the scattered updates go to a second buffer summed after the kernel) or "atomic" (one relaxed
    atomic per row into the one buffer)."""

    update: Update
    write: str


@dataclass(frozen=True)
class DotUpdate:
    """`update` (output += left * right, summed over the ContractionLoop's index) as
    acc = tl.dot(left block, right block, acc): `left` spans the first grid axis and the
    contraction, `right` the second grid axis and the contraction."""

    update: Update
    left: Access
    right: Access
    input_precision: str  # "ieee" | "tf32" | "tf32x3" (fp32 inputs; fp64 is always exact)


TileHeader = Union[NonzeroTile, RowBlock, BlockAxis, ScalarLoop, ContractionLoop, Mask]  # noqa: UP007


@dataclass(frozen=True)
class TileLevel:
    header: TileHeader | None  # None: the top level
    stmts: tuple  # loop-IR Let / Update statements evaluated at this level


@dataclass(frozen=True)
class TileProgram:
    loops: LoopProgram
    levels: tuple[TileLevel, ...]
    write: str  # "atomic" or "owned"
    notes: tuple[str, ...] = ()
    # owned writes of a symmetric 2-mode output: each canonical block also stores the mirror
    # half (C[j,i] for i < j), so the output leaves the kernel complete and needs no host mirror
    mirror: bool = False
    num_warps: int = 4
    index_bits: int = 64  # 32: int32 coordinates and offsets (the launch checked every extent)
    # output buffers: 2 when row-owned stores and atomics write the same output (summed after)
    buffers: int = 1

    @property
    def sparse(self) -> NonzeroTile | None:
        return next((lv.header for lv in self.levels if isinstance(lv.header, NonzeroTile)), None)

    @property
    def stores(self) -> bool:
        """Some output element is written by a plain store (owned writes, stored rows): buffer 0."""
        return self.write == "owned" or any(
            isinstance(s, OwnedRowUpdate) and s.write == "store" for lv in self.levels for s in lv.stmts)

    @property
    def rows(self) -> RowBlock | None:
        return next((lv.header for lv in self.levels if isinstance(lv.header, RowBlock)), None)

    @property
    def grid_axes(self) -> tuple[BlockAxis, ...]:
        return tuple(lv.header for lv in self.levels if isinstance(lv.header, BlockAxis) and lv.header.gridded)

    @property
    def inner_axes(self) -> tuple[BlockAxis, ...]:
        return tuple(lv.header for lv in self.levels if isinstance(lv.header, BlockAxis) and not lv.header.gridded)


def format_tile_program(program: TileProgram) -> str:
    mirror = ", both halves of the symmetric output" if program.mirror else ""
    buffers = f", {program.buffers} output buffers summed after" if program.buffers > 1 else ""
    lines = [f"tiles for {program.loops.source} (writes: {program.write}{mirror}{buffers}; "
             f"{program.num_warps} warps, int{program.index_bits} indices)"]
    lines += [f"  note: {note}" for note in program.notes]
    depth = 1
    for level in program.levels:
        pad = "  " * depth
        match level.header:
            case NonzeroTile(tensor=t, indices=idx, size=size):
                lines.append(f"{pad}program per {size} canonical nonzeros of {t}: lanes ({', '.join(map(str, idx))})")
            case RowBlock(tensor=t, indices=idx, rows=rows, lanes=lanes, dense_outside=outside):
                lines.append(f"{pad}program per {rows} rows of {t} (CSR): rows {idx[0]} on tile axis 0, "
                             f"{lanes} of each row's nonzeros ({', '.join(map(str, idx[1:]))}) at a time on axis 1"
                             + (" (inside the next loop's blocks)" if outside else ""))
            case ContractionLoop(index=i, extent=e, block=block):
                lines.append(f"{pad}for {i} in 0..{e} - 1, {block} at a time (tl.dot)")
            case BlockAxis(index=i, extent=e, lower=lo, upper=hi, axis=axis, block=block, gridded=gridded):
                how = "programs over" if gridded else "loop over"
                bounds = f" in {lo or 0}..{hi or str(e) + ' - 1'}"
                lines.append(f"{pad}{how} blocks of {block} {i}{bounds} (tile axis {axis})")
            case ScalarLoop(index=i, extent=e, lower=lo, upper=hi):
                lines.append(f"{pad}for {i} in {lo or 0}..{hi or str(e) + ' - 1'}")
            case Mask(lhs=a, rhs=b):
                lines.append(f"{pad}mask {a} <= {b}")
        if level.header is not None:
            depth += 1
        for stmt in level.stmts:
            lines.append(f"{'  ' * depth}{_format_stmt(stmt)}")
    return "\n".join(lines)


def _format_stmt(stmt) -> str:
    if isinstance(stmt, Let):
        return f"{stmt.name} = {format_lexpr(stmt.value)}"
    if isinstance(stmt, Update):
        factor = "" if stmt.factor is None else f"  by {format_lexpr(stmt.factor)}"
        return f"{stmt.output} {stmt.reduce}= {format_lexpr(stmt.value)}{factor}"
    if isinstance(stmt, SegmentedUpdate):
        how = f"runs of equal {stmt.key} reduced" if stmt.key is not None else "the tile reduced"
        return f"{_format_stmt(stmt.update)}  ({how}, then one write each)"
    if isinstance(stmt, OwnedRowUpdate):
        how = "stored once per row" if stmt.write == "store" else "one atomic per row"
        return f"{_format_stmt(stmt.update)}  (the row's lanes reduced in registers, {how})"
    if isinstance(stmt, DotUpdate):
        return (f"{_format_stmt(stmt.update)}  (tl.dot of {stmt.left} by {stmt.right}, "
                f"input_precision={stmt.input_precision})")
    return repr(stmt)
