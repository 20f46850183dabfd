"""Triton emission: a printer from tile IR (ir/tile.py) to readable Triton source.

Every value in a kernel is a tile (or a scalar) of the program's rank: a nonzero tile is 2-D
(axis 0 the nonzeros, axis 1 the dense loop's lanes), a row block 2-D or 3-D (rows, nonzeros of
each row, dense lanes), a dense-triangle program 2-D (its two grid axes). A lane is a point of
the loop nest; masks (bounds, canonical-order guards, the ragged last tile) switch lanes off,
never branches. Multiplicities of the diagonal classes are compile-time selects on the class
bits (`tl.where` with literal factors), not table loads.

Each mask term is its own variable with the tile axes it spans; a load uses only the terms
whose axes it spans, so loads stay as narrow as their addresses (all lanes' coordinates are in
bounds: masked-off nonzero lanes read coordinate 0). `bounds` terms say where an address is
valid; the others (canonical order, nonzero factors) only say which lanes contribute. Atomic
writes take their semantics from the algebra table (relaxed for commutative reductions: the
kernel never reads its output) and keep the mask of a vector write constant along the dense axis.
"""

from __future__ import annotations

import functools
from contextlib import contextmanager
from dataclasses import dataclass

from .. import __version__, algebra
from ..budget import default_schedule
from ..ir.einsum import Access, Call, Index, Literal
from ..ir.loop import (
    ClassOf,
    DriverValue,
    Extent,
    Factor,
    Let,
    LoopProgram,
    Ref,
    Select,
    Stored,
    Update,
    format_loop_program,
)
from ..ir.tile import (
    BlockAxis,
    ContractionLoop,
    DotUpdate,
    Mask,
    NonzeroTile,
    OwnedRowUpdate,
    RowBlock,
    ScalarLoop,
    SegmentedUpdate,
    TileProgram,
    format_tile_program,
)
from ..ir.traverse import walk
from ..passes.lower_loops import ScheduleError
from ..schedule import Schedule, apply_schedule
from .writer import CodeWriter, Namer, format_call, format_class_row


@dataclass(frozen=True)
class TParam:
    """One kernel argument: kind in out (key: buffer 0 or 1), coords, values, nnz, pointers,
    dense, stride, extent, tiles, block (a constexpr tile size); key says which."""

    kind: str
    key: object = None


@dataclass(frozen=True)
class Term:
    """A mask variable, the tile axes it spans, and whether it bounds addresses."""

    name: str
    dims: frozenset[int]
    bounds: bool


def _literal(value: float) -> str:
    if value == float("inf"):
        return 'float("inf")'
    if value == float("-inf"):
        return 'float("-inf")'
    return repr(float(value))


def _atomic(op: str, pointer: str, value: str, mask: str | None) -> str:
    """The atomic write of reduction `op`, with the semantics the algebra table gives it."""
    info = algebra.operator(op)
    if info.atomic is None:
        raise ScheduleError(f"no atomic for reduction {op!r}")
    masked = f", mask={mask}" if mask else ""
    operand = info.triton_atomic_operand.format(value=value)
    return f'tl.atomic_{info.atomic}({pointer}, {operand}{masked}, sem="{info.atomic_semantics}")'


def _reduced(op: str, value: str, axis: int | None = None) -> str:
    """`value` reduced by `op` along `axis` (kept as a length-1 axis), or all of it: Triton's
    function where the table names one, else `tl.reduce` with the `_combine_<op>` helper."""
    function = algebra.operator(op).triton_reduce
    if not function:
        if axis is None:
            return f"tl.reduce({value}, None, _combine_{op})"
        return f"tl.reduce({value}, {axis}, _combine_{op}, keep_dims=True)"
    return f"{function}({value})" if axis is None else f"{function}({value}, axis={axis}, keep_dims=True)"


def _needs_combine_helper(op: str) -> bool:
    return not algebra.operator(op).triton_reduce


def _combined(op: str, a: str, b: str) -> str:
    return algebra.operator(op).triton_call(a, b)


class _Emitter:
    def __init__(self, tiles: TileProgram):
        self.tiles = tiles
        self.loops = tiles.loops
        helpers = [f"_{kind}_{op}" for kind in ("combine", "scatter", "segmented", "tile", "run")
                   for op, info in algebra.OPERATORS.items() if info.atomic is not None]
        self.names = Namer(reserved=("triton", "tl", "kernel", *helpers))
        self.w = CodeWriter()
        self.params: list[TParam] = []
        self.pnames: dict[TParam, str] = {}
        self.dims: dict[Index, frozenset[int]] = {}  # tile axes each bound index spans
        self.let_dims: dict[str, frozenset[int]] = {}
        self.terms: list[Term] = []  # mask terms in force
        self.helpers: set[tuple[str, str]] = set()  # (kind, op) of the jit helpers used
        self.runs: tuple[str, str] | None = None  # run start / end flags of the leading index
        self.position: str | None = None  # the nonzero position of each lane (sparse tiles)
        self.ndim = 3 if tiles.rows is not None and tiles.inner_axes else 2
        self.wide = tiles.index_bits == 64
        # owned writes: the dense program's accumulator; row blocks: one per output access
        self.acc: str | None = None
        self.store_terms: list[Term] = []
        # row blocks: output access -> (accumulator, its axes, reduction, write, inside the dense blocks)
        self.row_accs: dict[Access, tuple[str, frozenset[int], str, str, bool]] = {}
        self.driver_dims = frozenset({0})  # the tile axes a nonzero's coordinates and value span
        self.columns: dict[str, list] = {}  # lets bound to a class factor -> its value per class

    # -- names -------------------------------------------------------------------------------

    def param(self, kind: str, key: object = None) -> str:
        p = TParam(kind, key)
        if p not in self.pnames:
            self.params.append(p)
            self.pnames[p] = self._param_name(p)
        return self.pnames[p]

    def _param_name(self, p: TParam) -> str:
        driver = self.loops.driver
        match p.kind:
            case "out":
                return self.names.fresh("out" if p.key == 0 else "out_atomic")
            case "coords":
                return self.names.fresh(f"{driver}_crd{p.key}")
            case "values":
                return self.names.fresh(f"{driver}_vals")
            case "pointers":
                return self.names.fresh(f"{driver}_pos")
            case "nnz":
                return self.names.fresh("nnz")
            case "dense":
                return self.names.user("tensor", p.key)
            case "stored":
                return self.names.fresh(f"{p.key}_stored")
            case "stride":
                tensor, mode = p.key
                return self.names.fresh(f"{'out' if tensor == '<out>' else tensor}_stride{mode}")
            case "extent":
                return self.names.fresh(f"{p.key.tensor}_size{p.key.mode}")
            case "tiles":
                return self.names.fresh("tile_starts")
            case "block":
                return self.names.fresh(f"BLOCK_{p.key}")
        raise ValueError(p)

    def out(self, atomic: bool) -> str:
        """The output buffer a write goes to: with two buffers, atomics use the second."""
        return self.param("out", 1 if atomic and self.tiles.buffers == 2 else 0)

    def index(self, index: Index) -> str:
        return self.names.user("index", index.name)

    def let(self, name: str) -> str:
        return self.names.user("let", name)

    def shaped(self, axis: int) -> str:
        """The indexing that puts a 1-D range on tile axis `axis`."""
        return "[" + ", ".join(":" if k == axis else "None" for k in range(self.ndim)) + "]"

    def term(self, base: str, code: str, dims: frozenset[int], bounds: bool = False) -> Term:
        term = Term(self.names.fresh(base), dims, bounds)
        self.w.line(f"{term.name} = {code}")
        self.terms.append(term)
        return term

    def mask_for(self, dims: frozenset[int]) -> str | None:
        parts = [t.name for t in self.terms if t.dims and t.dims <= dims]
        return " & ".join(parts) if parts else None

    def full_mask(self) -> str:
        parts = [t.name for t in self.terms]
        return " & ".join(parts) if parts else "True"

    def bounds_mask(self, dims: frozenset[int]) -> str | None:
        """The address bounds of the axes in `dims` (constant along every other axis)."""
        parts = [t.name for t in self.terms if t.bounds and t.dims and t.dims <= dims]
        return " & ".join(parts) if parts else None

    def int_index(self, code: str) -> str:
        """A loaded coordinate or position in the program's index width."""
        return f"{code}.to(tl.int64)" if self.wide else code

    # -- expressions -------------------------------------------------------------------------

    def expr_dims(self, expr) -> frozenset[int]:
        match expr:
            case Access(indices=idx) | Stored(access=Access(indices=idx)):
                return frozenset().union(*(self.dims[i] for i in idx)) if idx else frozenset()
            case DriverValue():
                return self.driver_dims
            case Ref(name=name):
                return self.let_dims[name]
            case ClassOf(chains=chains):
                return frozenset().union(*(self.dims[i] for c in chains for i in c))
            case Factor(row=row):
                return self.expr_dims(row)
            case Call(args=args):
                return frozenset().union(*(self.expr_dims(a) for a in args))
            case Select(when=when, value=value):
                return frozenset().union(*(self.expr_dims(a) for a in (*when, value)))
        return frozenset()

    def offset(self, tensor: str, indices: tuple[Index, ...], output: bool, names: dict | None = None) -> str:
        if not indices:
            return "0"
        terms = []
        for mode, i in enumerate(indices):
            stride = self.param("stride", ("<out>" if output else tensor, mode))
            terms.append(f"{(names or {}).get(i, self.index(i))} * {stride}")
        return " + ".join(terms)

    @property
    def accumulator_type(self) -> str:
        """The element type every value is computed in: the output's."""
        return f"{self.param('out', 0)}.dtype.element_ty"

    def expr(self, expr) -> str:
        match expr:
            case Access(tensor=t, indices=idx):
                # operands may be narrower than the accumulator (float16/bfloat16 in, float32
                # accumulation): every value is widened where it is loaded
                pointer = f"{self.param('dense', t)} + {self.offset(t, idx, False)}"
                mask = self.mask_for(self.expr_dims(expr))
                load = f"tl.load({pointer}, mask={mask}, other=0.0)" if mask else f"tl.load({pointer})"
                return f"{load}.to({self.accumulator_type})"
            case Stored(access=Access(tensor=t, indices=idx)):
                # the mask of t's stored entries, laid out as its values (their strides); a lane
                # masked off reads "not stored"
                pointer = f"{self.param('stored', t)} + {self.offset(t, idx, False)}"
                mask = self.mask_for(self.expr_dims(expr))
                load = f"tl.load({pointer}, mask={mask}, other=0)" if mask else f"tl.load({pointer})"
                return f"({load} != 0)"
            case DriverValue():
                mask = self.mask_for(self.expr_dims(expr))
                return (f"tl.load({self.param('values')} + {self.position}, mask={mask}, other=0.0)"
                        f".to({self.accumulator_type})")
            case Ref(name=name):
                return self.let(name)
            case Literal(value=v):
                return _literal(v)
            case ClassOf(chains=chains):
                return "(" + format_class_row(chains, self.index, "tl.where({a} == {b}, 1, 0)") + ")"
            case Factor():
                code, _ = self.factor(expr)
                return code
            case Call(op=op, args=args):
                return format_call(op, [self.expr(a) for a in args], algebra.Operator.triton_call)
            case Select(when=when, value=value, otherwise=otherwise):
                # an unstored sparse factor: the term's lanes hold the zero (not 0 * inf)
                test = " & ".join(self.expr(c) for c in when)
                return f"tl.where({test}, {self.expr(value)}, {self.expr(otherwise)})"
        raise TypeError(f"not a loop expression: {expr!r}")

    def factor(self, factor: Factor) -> tuple[str, float | None]:
        """A class factor as a compile-time select on the class row (the table's rows are
        constants): (code, its value when it is the same for every class, else None).
        The first row (all indices distinct, the common case) is the default."""
        column = self.column(factor)
        if len(set(column)) == 1:
            return _literal(column[0]), float(column[0])
        row = self.expr(factor.row)
        code = _literal(column[0])
        for value in sorted(set(column) - {column[0]}, reverse=True):
            classes = [k for k, v in enumerate(column) if v == value]
            test = " | ".join(f"({row} == {k})" for k in classes)
            code = f"tl.where({test}, {_literal(value)}, {code})"
        return code, None

    def column(self, factor: Factor) -> list:
        """The factor of each diagonal class (the table's column)."""
        table = next(t for t in self.loops.tables if t.name == factor.table)
        return [row[factor.column] for row in table.rows]

    # -- statements --------------------------------------------------------------------------

    def stmts(self, stmts) -> None:
        for s in stmts:
            if isinstance(s, Let):
                self.w.line(f"{self.let(s.name)} = {self.expr(s.value)}")
                self.let_dims[s.name] = self.expr_dims(s.value)
                if isinstance(s.value, Factor):
                    self.columns[s.name] = self.column(s.value)
            elif isinstance(s, Update):
                self.update(s)
            elif isinstance(s, SegmentedUpdate):
                if self.tiles.sparse is None:  # row blocks and dense programs: an accumulator
                    self.row_update(s.update)
                else:
                    self.update(s.update, s.key, segmented=True)
            elif isinstance(s, OwnedRowUpdate):
                self.row_update(s.update)
            else:
                raise ScheduleError(f"cannot emit {type(s).__name__} inside a tile")

    def scaled(self, u: Update) -> tuple[str, str]:
        """(value, mask) of update `u` with its class factor applied. Every write masks with
        the returned mask (scatters by it; reductions select the identity outside it), so a
        zero factor only needs to switch its lanes off: `0 * inf` never reaches a sum. A factor
        of 1 (or any factor of an idempotent reduction) leaves the value as it is."""
        info = algebra.operator(u.reduce)
        value, mask = self.expr(u.value), self.full_mask()
        for condition in u.when:  # an unstored sparse factor switches its lanes off (not 0 * inf)
            mask = f"{mask} & {self.expr(condition)}"
        if u.factor is None:
            return value, mask
        f = self.expr(u.factor)
        if isinstance(u.factor, Factor):
            column = self.column(u.factor)
        elif isinstance(u.factor, Ref) and u.factor.name in self.columns:
            column = self.columns[u.factor.name]
        else:
            column = None  # a factor the table does not give: scale and mask its zeros
        nonzero = sorted(set(column) - {0}) if column is not None else None
        if column is not None and 0 not in column and len(nonzero) == 1:
            f = _literal(nonzero[0])  # the same factor for every class: a literal
        if column is None or 0 in column:
            mask = f"{mask} & ({f} != 0)"
        if info.idempotent or nonzero == [1]:
            return value, mask
        return f"{f} * {value}", mask

    def update(self, u: Update, key: Index | None = None, segmented: bool = False) -> None:
        w, info = self.w, algebra.operator(u.reduce)
        value, mask = self.scaled(u)
        if self.tiles.write == "owned":
            if info.infix:  # `acc += ...`: lanes outside the mask add the identity
                w.line(f"{self.acc} {info.symbol}= tl.where({mask}, {value}, {_literal(info.identity)})")
            else:
                w.line(f"{self.acc} = tl.where({mask}, {info.triton_call(self.acc, value)}, {self.acc})")
            return
        if info.atomic is None:
            raise ScheduleError(f"no atomic for reduction {info.name!r}")
        pointer = f"{self.out(True)} + {self.offset('', u.output.indices, True)}"
        everywhere = f"tl.full([{', '.join(['1'] * self.ndim)}], True, tl.int1)"
        lanes = frozenset().union(*(self.dims[i] for i in u.output.indices)) if u.output.indices else frozenset()
        if not segmented and self.tiles.sparse is None and lanes != frozenset(range(self.ndim)):
            # A dense program's output that does not vary along some tile axis: reduce the lanes
            # along it first, then one atomic per element (not one per lane on one address).
            identity = _literal(info.identity)
            reduced = f"tl.where({mask}, {value}, {identity})"
            for axis in sorted(set(range(self.ndim)) - lanes, reverse=True):
                reduced = self.reduced(info.name, reduced, axis)
            value, mask = reduced, self.bounds_mask(lanes) or everywhere
        if not segmented:
            self.helpers.add(("scatter", info.name))
            w.line(f"_scatter_{info.name}({pointer}, {value}, {mask})")
            return
        # The write lands where the address is valid: the bounds of the axes other than the
        # nonzeros', constant along the nonzeros (so a vector atomic keeps one mask per vector).
        bounds = self.bounds_mask(frozenset(range(1, self.ndim))) or everywhere
        if key is None:
            self.helpers.add(("tile", info.name))
            self.note_reduction(info.name)  # the helper reduces the tile
            w.line(f"_tile_{info.name}({pointer}, {value}, {mask}, {bounds})")
        else:
            self.helpers |= {("segmented", info.name), ("run", info.name)}
            start, end = self.runs
            w.line(f"_segmented_{info.name}({pointer}, {value}, {mask}, {start}, {end} & {bounds})")

    def note_reduction(self, op: str) -> None:
        """The kernel reduces tiles by `op`: emit its combine helper where Triton has no function."""
        if _needs_combine_helper(op):
            self.helpers.add(("combine", op))

    def reduced(self, op: str, value: str, axis: int | None = None) -> str:
        """`_reduced`, noting the jit helper it calls."""
        self.note_reduction(op)
        return _reduced(op, value, axis)

    def row_update(self, u: Update) -> None:
        """An update reduced into a row block's accumulator (owned rows, or no lane index)."""
        name, axes, op, _, _ = self.row_accs[u.output]
        value, mask = self.scaled(u)
        identity = _literal(algebra.operator(op).identity)
        reduced = f"tl.where({mask}, {value}, {identity})"
        for axis in range(self.ndim - 1, -1, -1):
            if axis not in axes:
                reduced = self.reduced(op, reduced, axis)
        self.w.line(f"{name} = {_combined(op, name, reduced)}")

    # -- levels ------------------------------------------------------------------------------

    def level(self, k: int) -> None:
        levels = self.tiles.levels
        if k == len(levels):
            return
        level, w = levels[k], self.w
        saved = len(self.terms)
        match level.header:
            case None:
                self.stmts(level.stmts)
                self.level(k + 1)
            case NonzeroTile(indices=idx):
                self.nonzero_tile(idx)
                self.stmts(level.stmts)
                self.level(k + 1)
            case RowBlock():
                self.row_block(k)
            case BlockAxis(gridded=True) as axis:
                self.grid_axis(axis)
                last = not any(isinstance(lv.header, BlockAxis) and lv.header.gridded for lv in levels[k + 1:])
                if self.tiles.write == "owned" and self.acc is None and last:
                    self.open_accumulator()
                if last:  # outputs reduced over the whole program: accumulators, written at its end
                    self.open_row_accs(levels[k:], None, inner=False)
                self.stmts(level.stmts)
                self.level(k + 1)
                if last:
                    self.close_row_accs(inner=False)
            case BlockAxis(gridded=False) as axis:
                with self.dense_blocks(axis):
                    self.stmts(level.stmts)
                    self.level(k + 1)
            case ScalarLoop(index=i, extent=e, lower=lo, upper=hi):
                scalar_lo = lo is None or not self.dims[lo]
                scalar_hi = hi is None or not self.dims[hi]
                start = self.index(lo) if lo is not None and scalar_lo else "0"
                stop = f"{self.index(hi)} + 1" if hi is not None and scalar_hi else self.param("extent", e)
                self.dims[i] = frozenset()
                step = self.names.fresh(f"{i.name}_step") if self.wide else self.index(i)
                with w.block(f"for {step} in range({start}, {stop}):"):
                    if self.wide:  # 64-bit offsets: the loop's own counter is int32
                        w.line(f"{self.index(i)} = tl.cast({step}, tl.int64)")
                    # Bounds that vary across lanes cannot bound a scalar loop: they mask.
                    if lo is not None and not scalar_lo:
                        self.term(f"{i.name}_from", f"{self.index(lo)} <= {self.index(i)}", self.dims[lo])
                    if hi is not None and not scalar_hi:
                        self.term(f"{i.name}_to", f"{self.index(i)} <= {self.index(hi)}", self.dims[hi])
                    self.stmts(level.stmts)
                    self.level(k + 1)
            case ContractionLoop() as loop:
                (dot,) = level.stmts
                self.contraction(loop, dot)
            case Mask(lhs=a, rhs=b):
                self.term("canonical", f"{self.index(a)} <= {self.index(b)}", self.dims[a] | self.dims[b])
                self.stmts(level.stmts)
                self.level(k + 1)
        del self.terms[saved:]

    @contextmanager
    def dense_blocks(self, axis: BlockAxis):
        """A loop over the blocks of a dense (vector) axis inside the program."""
        start = self.names.fresh(f"{axis.index.name}_start")
        block = self.param("block", axis.axis)
        extent = self.param("extent", axis.extent)
        with self.w.block(f"for {start} in range(0, {extent}, {block}):"):
            saved = len(self.terms)
            self.bind_axis(axis, f"{start} + tl.arange(0, {block})", extent)
            yield
            del self.terms[saved:]

    def nonzero_tile(self, idx: tuple[Index, ...]) -> None:
        w = self.w
        block = self.param("block", "NNZ")
        pid = self.names.fresh("pid")
        w.line(f"{pid} = {self.int_index('tl.program_id(0)')}")
        self.position = self.names.fresh("nz")
        w.line(f"{self.position} = {pid} * {block} + tl.arange(0, {block}){self.shaped(0)}")
        self.term("in_tile", f"{self.position} < {self.param('nnz')}", frozenset({0}), bounds=True)
        for mode, i in enumerate(idx):
            self.dims[i] = frozenset({0})
            crd = self.param("coords", mode)
            mask = self.mask_for(frozenset({0}))
            w.line(f"{self.index(i)} = {self.int_index(f'tl.load({crd} + {self.position}, mask={mask}, other=0)')}")
        if self.keyed_segments():
            self.run_flags(idx[0], block)

    def keyed_segments(self) -> bool:
        return any(isinstance(s, SegmentedUpdate) and s.key is not None for lv in self.tiles.levels for s in lv.stmts)

    def run_flags(self, leading: Index, block: str) -> None:
        """Flags of the runs of equal leading coordinates (the segments), on the nonzero axis
        only: a lane starts a run when the nonzero before it in the tile has another coordinate,
        and ends one when the nonzero after it does (or the tile ends). Unsorted input only
        makes more, shorter runs."""
        crd, nz, row = self.param("coords", 0), self.position, self.index(leading)
        before = self.names.fresh(f"{leading.name}_before")
        after = self.names.fresh(f"{leading.name}_after")
        start, end = self.names.fresh("run_start"), self.names.fresh("run_end")
        in_tile = self.terms[0].name
        w = self.w
        load_before = f"tl.load({crd} + {nz} - 1, mask={in_tile} & ({nz} % {block} != 0), other=-1)"
        load_after = (f"tl.load({crd} + {nz} + 1, mask=({nz} + 1 < {self.param('nnz')}) & "
                      f"(({nz} + 1) % {block} != 0), other=-1)")
        w.line(f"{before} = {self.int_index(load_before)}")
        w.line(f"{after} = {self.int_index(load_after)}")
        w.line(f"{start} = {row} != {before}")
        w.line(f"{end} = {in_tile} & ({row} != {after})")
        self.runs = (start, end)

    # -- row blocks (CSR) ----------------------------------------------------------------------

    def row_block(self, k: int) -> None:
        """One program per block of rows: lanes (row, nonzero of the row); a loop steps through
        the block's longest row. Reads that depend on the row only are hoisted out of the steps;
        the row's own output and block-reduced outputs accumulate in registers and are written
        after the last step; the mirrored half scatters from inside the steps."""
        levels, w = self.tiles.levels, self.w
        header: RowBlock = levels[k].header
        row, columns = header.indices[0], header.indices[1:]
        rows = self.param("block", "ROWS")
        pointers = self.param("pointers")
        n_rows = self.param("extent", Extent(header.tensor, 0))
        pid = self.names.fresh("pid")
        w.line(f"{pid} = {self.int_index('tl.program_id(0)')}")
        w.line(f"{self.index(row)} = {pid} * {rows} + tl.arange(0, {rows}){self.shaped(0)}")
        self.dims[row] = frozenset({0})
        in_rows = self.term("in_rows", f"{self.index(row)} < {n_rows}", frozenset({0}), bounds=True)
        span = (self.names.fresh("row_start"), self.names.fresh("row_end"), self.names.fresh("longest"))
        w.line(f"{span[0]} = tl.load({pointers} + {self.index(row)}, mask={in_rows.name}, other=0)")
        w.line(f"{span[1]} = tl.load({pointers} + {self.index(row)} + 1, mask={in_rows.name}, other=0)")
        w.line(f"{span[2]} = tl.max({span[1]} - {span[0]})  # the block's longest row: the steps to take")
        self.driver_dims = frozenset({0, 1})
        for i in columns:
            self.dims[i] = self.driver_dims
        vector = next((lv.header for lv in levels[k + 1:] if isinstance(lv.header, BlockAxis)), None)
        if vector is not None:
            self.dims[vector.index] = frozenset({vector.axis})
        hoisted, rest = self.hoisted(levels[k].stmts, frozenset({0}))
        self.stmts(hoisted)
        self.open_row_accs(levels[k:], vector, inner=False)
        if header.dense_outside:
            with self.dense_blocks(vector):
                dense_hoisted, dense_rest = self.hoisted(levels[k + 1].stmts, frozenset({0, vector.axis}))
                self.stmts(dense_hoisted)
                self.open_row_accs(levels[k:], vector, inner=True)
                self.row_steps(header, span, (*rest, *dense_rest), k + 2)
                self.close_row_accs(inner=True)
        else:
            self.row_steps(header, span, rest, k + 1)
        self.close_row_accs(inner=False)

    def row_steps(self, header: RowBlock, span: tuple[str, str, str], stmts, deeper: int) -> None:
        """The loop through the rows' nonzeros, `lanes` of each row per step."""
        w, (first, last, longest) = self.w, span
        lanes = self.param("block", "LANES")
        step = self.names.fresh("step")
        with w.block(f"for {step} in range(0, {longest}, {lanes}):"):
            saved = len(self.terms)
            self.position = self.names.fresh("nz")
            w.line(f"{self.position} = {first} + {step} + tl.arange(0, {lanes}){self.shaped(1)}")
            self.term("in_row", f"{self.position} < {last}", self.driver_dims, bounds=True)
            for mode, i in enumerate(header.indices[1:], start=1):
                crd = self.param("coords", mode)
                load = f"tl.load({crd} + {self.position}, mask={self.mask_for(self.driver_dims)}, other=0)"
                w.line(f"{self.index(i)} = {self.int_index(load)}")
            self.stmts(stmts)
            self.level(deeper)
            del self.terms[saved:]

    def hoisted(self, stmts, dims: frozenset[int]) -> tuple[list, list]:
        """(lets that depend on the tile axes in `dims` only: read once, before the steps through
        the nonzeros; the rest, in order). A let that reads a later one is not hoisted: the
        later ones count as varying along the nonzeros until they are emitted."""
        hoisted, rest = [], []
        for s in stmts:
            if isinstance(s, Let) and not _reads_driver(s.value) and self.expr_dims(s.value) <= dims:
                self.let_dims[s.name] = self.expr_dims(s.value)
                hoisted.append(s)
            else:
                if isinstance(s, Let):
                    self.let_dims[s.name] = self.driver_dims
                rest.append(s)
        return hoisted, rest

    def open_row_accs(self, levels, vector: BlockAxis | None, inner: bool) -> None:
        """Accumulators of the row block's reduced updates: those indexed by the dense axis live
        inside its blocks (`inner`), the others across the whole program."""
        for level in levels:
            for s in level.stmts:
                if not isinstance(s, OwnedRowUpdate | SegmentedUpdate) or s.update.output in self.row_accs:
                    continue
                output = s.update.output
                has_vector = vector is not None and vector.index in output.indices
                if has_vector != inner:
                    continue
                axes = frozenset().union(*(self.dims[i] for i in output.indices)) if output.indices else frozenset()
                op = algebra.operator(s.update.reduce).name
                write = s.write if isinstance(s, OwnedRowUpdate) else "atomic"
                shape = []
                for axis in range(self.ndim):
                    if axis not in axes:
                        shape.append("1")
                    elif axis == 0 and self.tiles.rows is not None:
                        shape.append(self.param("block", "ROWS"))
                    else:
                        shape.append(self.param("block", axis))
                name = self.names.fresh("acc")
                dtype = f"{self.param('out', 0)}.dtype.element_ty"
                identity = _literal(algebra.operator(op).identity)
                self.w.line(f"{name} = tl.full([{', '.join(shape)}], {identity}, {dtype})")
                self.row_accs[output] = (name, axes, op, write, inner)

    def close_row_accs(self, inner: bool) -> None:
        for output, (name, axes, op, write, at) in list(self.row_accs.items()):
            if at != inner:
                continue
            del self.row_accs[output]
            pointer = f"{self.out(write == 'atomic')} + {self.offset('', output.indices, True)}"
            if not axes:  # a scalar output: one value per program
                total = self.reduced(op, name)
                if algebra.operator(op).triton_atomic_operand != "{value}":  # spelled more than once: name it
                    self.w.line(f"{name} = {total}")
                    total = name
                self.w.line(_atomic(op, pointer, total, None))
                continue
            mask = self.bounds_mask(axes)
            if write == "store":
                self.w.line(f"tl.store({pointer}, {name}, mask={mask})")
            else:
                self.w.line(_atomic(op, pointer, name, mask))

    # -- dense programs ----------------------------------------------------------------------

    def bind_axis(self, axis: BlockAxis, lanes: str, extent: str) -> None:
        i = axis.index
        self.dims[i] = frozenset({axis.axis})
        self.w.line(f"{self.index(i)} = ({lanes}){self.shaped(axis.axis)}")
        bounds = self.term(f"in_{i.name}", f"{self.index(i)} < {extent}", self.dims[i], bounds=True)
        if axis.gridded:
            self.store_terms.append(bounds)
        for bound, code in ((axis.lower, "{b} <= {i}"), (axis.upper, "{i} <= {b}")):
            if bound is not None:
                text = code.format(b=self.index(bound), i=self.index(i))
                term = self.term(f"{i.name}_bound", text, self.dims[bound] | self.dims[i])
                if axis.gridded and self.tiles.mirror:
                    # Both halves are stored: lanes off the triangle are left to the mirror store.
                    self.store_terms.append(term)

    def grid_axis(self, axis: BlockAxis) -> None:
        tiles = self.param("tiles")
        naxes = len(self.tiles.grid_axes)
        if not hasattr(self, "tile_id"):
            self.tile_id = self.names.fresh("tile")
            self.w.line(f"{self.tile_id} = {self.int_index('tl.program_id(0)')}")
        block = self.param("block", axis.axis)
        start = self.names.fresh(f"{axis.index.name}_start")
        self.w.line(f"{start} = {self.int_index(f'tl.load({tiles} + {self.tile_id} * {naxes} + {axis.axis})')}")
        self.bind_axis(axis, f"{start} + tl.arange(0, {block})", self.param("extent", axis.extent))

    def contraction(self, loop: ContractionLoop, dot: DotUpdate) -> None:
        """acc += left[i, k] @ right[k, j] over blocks of k: tl.dot on the matrix units."""
        w = self.w
        block = self.param("block", "K")
        extent = self.param("extent", loop.extent)
        start = self.names.fresh(f"{loop.index.name}_start")
        along_rows = self.names.fresh(f"{loop.index.name}_rows")
        along_columns = self.names.fresh(f"{loop.index.name}_columns")
        first, second = (a.index for a in self.tiles.grid_axes)
        left_mask = " & ".join(filter(None, [self.bounds_mask(frozenset({0})), f"({along_columns} < {extent})"]))
        right_mask = " & ".join(filter(None, [self.bounds_mask(frozenset({1})), f"({along_rows} < {extent})"]))
        left = self.offset(dot.left.tensor, dot.left.indices, False, {loop.index: along_columns})
        right = self.offset(dot.right.tensor, dot.right.indices, False, {loop.index: along_rows})
        assert {first, loop.index} == set(dot.left.indices) and {second, loop.index} == set(dot.right.indices)
        dtype = f"{self.param('out', 0)}.dtype.element_ty"
        with w.block(f"for {start} in range(0, {extent}, {block}):"):
            w.line(f"{along_columns} = ({start} + tl.arange(0, {block}))[None, :]")
            w.line(f"{along_rows} = ({start} + tl.arange(0, {block}))[:, None]")
            w.line(f"a = tl.load({self.param('dense', dot.left.tensor)} + {left}, mask={left_mask}, "
                   f"other=0.0).to({dtype})")
            w.line(f"b = tl.load({self.param('dense', dot.right.tensor)} + {right}, mask={right_mask}, "
                   f"other=0.0).to({dtype})")
            w.line(f'{self.acc} = tl.dot(a, b, {self.acc}, input_precision="{dot.input_precision}", '
                   f"out_dtype={dtype})")

    def mirror_stores(self, body: CodeWriter, update: Update, pointer: str, mask: str) -> None:
        """The canonical store, then the mirror half C[j,i] (i < j: the diagonal once) from the
        same registers, transposed so that its addresses also run along the tile's rows."""
        first, second = (a.index for a in self.tiles.grid_axes)
        a, b = self.index(first), self.index(second)
        swap = {first: second, second: first}
        mirrored = tuple(swap.get(i, i) for i in update.output.indices)
        offset = " + ".join(
            f"tl.trans({self.index(i)}) * {self.param('stride', ('<out>', mode))}" for mode, i in enumerate(mirrored)
        )
        in_bounds = " & ".join(t.name for t in self.store_terms if t.bounds)
        body.line(f"tl.store({pointer}, {self.acc}, mask={mask})")
        body.line(f"tl.store({self.param('out', 0)} + {offset}, tl.trans({self.acc}), "
                  f"mask=tl.trans({in_bounds} & ({a} < {b})))")

    def open_accumulator(self) -> None:
        axes = self.tiles.grid_axes
        shape = ", ".join(self.param("block", a.axis) for a in axes)
        if len(axes) == 1:
            shape += ", 1"
        identity = _literal(algebra.operator(self.loops.reduce).identity)
        self.acc = self.names.fresh("acc")
        self.w.line(f"{self.acc} = tl.full([{shape}], {identity}, {self.param('out', 0)}.dtype.element_ty)")

    def emit(self) -> str:
        body = CodeWriter()
        self.w = body
        body.depth = 1
        self.param("out", 0)
        if self.tiles.buffers == 2:
            self.param("out", 1)
        self.level(0)
        if self.acc is not None:
            (update,) = {u for u in _updates(self.tiles)}
            pointer = f"{self.param('out', 0)} + {self.offset('', update.output.indices, True)}"
            mask = " & ".join(t.name for t in self.store_terms)
            if not self.tiles.mirror:
                # Each lane owns its element: a plain store; lanes outside the triangle store the identity.
                body.line(f"tl.store({pointer}, {self.acc}, mask={mask})")
            else:
                self.mirror_stores(body, update, pointer, mask)

        w = CodeWriter()
        w.line(f"# Generated by systec_gpu {__version__} (triton backend). Do not edit.")
        w.line("#")
        for line in format_loop_program(self.loops).splitlines():
            w.line(f"# {line}")
        w.line("#")
        for line in format_tile_program(self.tiles).splitlines():
            w.line(f"# {line}")
        w.line("import triton")
        w.line("import triton.language as tl")
        order = ("combine", "run", "scatter", "segmented", "tile")  # helpers before the helpers that use them
        for kind, op in sorted(self.helpers, key=lambda h: (order.index(h[0]), h[1])):
            w.line()
            w.line()
            w.line("@triton.jit")
            _HELPERS[kind](w, op)
        w.line()
        w.line()
        w.line("@triton.jit")
        # Tile sizes are constexprs, last; everything is passed by keyword.
        self.params.sort(key=lambda p: p.kind == "block")
        args = ", ".join(
            f"{self.pnames[p]}: tl.constexpr" if p.kind == "block" else self.pnames[p] for p in self.params
        )
        w.line(f"def kernel({args}):")
        w.lines += body.lines
        return w.text()


def _reads_driver(expr) -> bool:
    return any(isinstance(n, DriverValue) for n in walk(expr))


def _updates(tiles: TileProgram) -> list[Update]:
    found = []
    for lv in tiles.levels:
        for s in lv.stmts:
            if isinstance(s, Update):
                found.append(s)
            elif isinstance(s, SegmentedUpdate | OwnedRowUpdate | DotUpdate):
                found.append(s.update)
    return found


# ---------------------------------------------------------------------------------------------
# Jit helpers of the atomic writes (one per kind and reduction, emitted when used)


def _broadcast(w: CodeWriter, names: tuple[str, ...]) -> None:
    w.line(f"# Bring {', '.join(names)} to one tile shape.")
    # The first takes every shape in one pass; the second pass widens the names it met early.
    for name in (*names[1:], *names[1:-1]):
        w.line(f"{names[0]}, {name} = tl.broadcast({names[0]}, {name})")


def _scatter_helper(w: CodeWriter, op: str) -> None:
    with w.block(f"def _scatter_{op}(pointer, value, mask):"):
        w.line("# Every lane writes: lanes hitting one element all land.")
        _broadcast(w, ("pointer", "value", "mask"))
        w.line(_atomic(op, "pointer", "value", "mask"))


def _combine_helper(w: CodeWriter, op: str) -> None:
    with w.block(f"def _combine_{op}(a, b):"):
        w.line("# The combine of tl.reduce: the algebra table's spelling (nan propagates).")
        w.line(f"return {_combined(op, 'a', 'b')}")


def _run_helper(w: CodeWriter, op: str) -> None:
    with w.block(f"def _run_{op}(value, start, next_value, next_start):"):
        w.line("# One step of a segmented scan: a lane that starts a run drops what came before it.")
        w.line(f"value = tl.where(next_start != 0, next_value, {_combined(op, 'value', 'next_value')})")
        w.line("return value, start | next_start")


def _segmented_helper(w: CodeWriter, op: str) -> None:
    identity = _literal(algebra.operator(op).identity)
    with w.block(f"def _segmented_{op}(pointer, value, mask, start, write):"):
        w.line("# Lanes of one run share the output element: reduce each run along the nonzeros (axis 0),")
        w.line("# then its last lane writes once. Still an atomic: the run may go on in the next tile,")
        w.line("# and other updates of the kernel can hit the element too. `write` (the run ends here,")
        w.line("# the address is in bounds) is constant along the dense axis: vector atomics.")
        w.line(f"value = tl.where(mask, value, {identity})")
        _broadcast(w, ("pointer", "value", "start", "write"))
        w.line("# (Flags travel as int32, the plainest element type for a scan.)")
        w.line(f"total, _ = tl.associative_scan((value, start.to(tl.int32)), 0, _run_{op})")
        w.line(_atomic(op, "pointer", "total", "write"))


def _tile_helper(w: CodeWriter, op: str) -> None:
    identity = _literal(algebra.operator(op).identity)
    with w.block(f"def _tile_{op}(pointer, value, mask, bounds):"):
        w.line("# The address does not vary along the nonzeros (axis 0): reduce the tile, write once")
        w.line("# wherever the address is in bounds (a tile without a hit writes the identity).")
        _broadcast(w, ("value", "mask"))
        w.line(f"total = {_reduced(op, f'tl.where(mask, value, {identity})', 0)}")
        _broadcast(w, ("pointer", "total", "bounds"))
        w.line(_atomic(op, "pointer", "total", "bounds"))


_HELPERS = {"combine": _combine_helper, "scatter": _scatter_helper, "run": _run_helper,
            "segmented": _segmented_helper, "tile": _tile_helper}


# ---------------------------------------------------------------------------------------------
# Public entry points


@dataclass(frozen=True)
class EmittedKernel:
    """Generated source and its parameters, in order, with their names in the source."""

    source: str
    params: tuple[TParam, ...]
    names: dict[TParam, str]


@functools.lru_cache(maxsize=256)  # pure in the tile program: a repeat launch does not re-emit
def emit_kernel(tiles: TileProgram) -> EmittedKernel:
    emitter = _Emitter(tiles)
    source = emitter.emit()
    return EmittedKernel(source, tuple(emitter.params), dict(emitter.pnames))


def triton_source(program: LoopProgram, schedule: Schedule | None = None) -> str:
    """The generated Triton source (tile sizes are constexpr arguments, so one source serves
    every size of the same schedule kind); by default, of the schedule the heuristic picks for a
    call of unknown size."""
    return emit_kernel(apply_schedule(program, schedule or default_schedule(program))).source
