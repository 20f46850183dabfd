"""Triton emission: a printer from tile IR (ir/tile.py) to readable Triton source.

Every value in a kernel is a 2-D tile (or a scalar): tile axis 0 holds the nonzeros of a sparse
tile or the first grid axis of a dense one, axis 1 the second dense axis. A lane is a point of
the loop nest; masks (bounds, canonical-order guards, the ragged last tile) switch lanes off,
never branches. Multiplicities come from the class table, indexed per lane.

Each mask term is its own variable with the tile axes it spans; a load uses only the terms
whose axes it spans, so loads stay as narrow as their addresses (all lanes' coordinates are in
bounds: masked-off nonzero lanes read coordinate 0).
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import __version__, algebra
from ..ir.einsum import Access, Call, Index, Literal
from ..ir.loop import ClassOf, DriverValue, Factor, Let, LoopProgram, Ref, Update, format_loop_program
from ..ir.tile import BlockAxis, Mask, NonzeroTile, ScalarLoop, SegmentedUpdate, TileProgram, format_tile_program
from ..passes.lower_loops import ScheduleError
from ..schedule import Schedule, apply_schedule
from .writer import CodeWriter, Namer, format_call, format_class_row

_ATOMIC = {"add": "tl.atomic_add", "min": "tl.atomic_min", "max": "tl.atomic_max"}
_COMBINE = {"min": "tl.minimum", "max": "tl.maximum"}


@dataclass(frozen=True)
class TParam:
    """One kernel argument: kind in out, coords, values, nnz, dense, stride, table, extent,
    tiles, block (a constexpr tile size); key says which."""

    kind: str
    key: object = None


def _literal(value: float) -> str:
    if value == float("inf"):
        return 'float("inf")'
    if value == float("-inf"):
        return 'float("-inf")'
    return repr(float(value))


class _Emitter:
    def __init__(self, tiles: TileProgram):
        self.tiles = tiles
        self.loops = tiles.loops
        helpers = [f"_{kind}_{op}" for kind in ("scatter", "segmented", "tile", "run") for op in _ATOMIC]
        self.names = Namer(reserved=("triton", "tl", "kernel", *helpers))
        self.w = CodeWriter()
        self.params: list[TParam] = []
        self.pnames: dict[TParam, str] = {}
        self.dims: dict[Index, frozenset[int]] = {}  # tile axes each bound index spans
        self.let_dims: dict[str, frozenset[int]] = {}
        self.terms: list[tuple[str, frozenset[int]]] = []  # mask terms in force
        self.vector_bounded: set[Index] = set()
        self.helpers: set[tuple[str, str]] = set()  # (kind, op) of the jit helpers used
        self.runs: tuple[str, str] | None = None  # run start / end flags of the leading index
        self.acc: str | None = None
        self.store_terms: list[str] = []
        self.position: str | None = None

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
                return self.names.fresh("out")
            case "coords":
                return self.names.fresh(f"{driver}_crd{p.key}")
            case "values":
                return self.names.fresh(f"{driver}_vals")
            case "nnz":
                return self.names.fresh("nnz")
            case "dense" | "table":
                return self.names.user("tensor", p.key)
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

    def index(self, index: Index) -> str:
        return self.names.user("index", index.name)

    def let(self, name: str) -> str:
        return self.names.user("let", name)

    def term(self, base: str, code: str, dims: frozenset[int]) -> None:
        name = self.names.fresh(base)
        self.w.line(f"{name} = {code}")
        self.terms.append((name, dims))

    def mask_for(self, dims: frozenset[int]) -> str | None:
        parts = [n for n, d in self.terms if d and d <= dims]
        return " & ".join(parts) if parts else None

    def full_mask(self) -> str:
        parts = [n for n, _ in self.terms]
        return " & ".join(parts) if parts else "True"

    # -- expressions -------------------------------------------------------------------------

    def expr_dims(self, expr) -> frozenset[int]:
        match expr:
            case Access(indices=idx):
                return frozenset().union(*(self.dims[i] for i in idx)) if idx else frozenset()
            case DriverValue():
                return frozenset({0})
            case Ref(name=name):
                return self.let_dims[name]
            case ClassOf(chains=chains):
                return frozenset().union(*(self.dims[i] for c in chains for i in c))
            case Factor(row=row):
                return self.expr_dims(row)
            case Call(args=args):
                return frozenset().union(*(self.expr_dims(a) for a in args))
        return frozenset()

    def offset(self, tensor: str, indices: tuple[Index, ...], output: bool) -> str:
        if not indices:
            return "0"
        terms = []
        for mode, i in enumerate(indices):
            stride = self.param("stride", ("<out>" if output else tensor, mode))
            terms.append(f"{self.index(i)} * {stride}")
        return " + ".join(terms)

    def expr(self, expr) -> str:
        match expr:
            case Access(tensor=t, indices=idx):
                pointer = f"{self.param('dense', t)} + {self.offset(t, idx, False)}"
                mask = self.mask_for(self.expr_dims(expr))
                return f"tl.load({pointer}, mask={mask}, other=0.0)" if mask else f"tl.load({pointer})"
            case DriverValue():
                mask = self.mask_for(frozenset({0}))
                return f"tl.load({self.param('values')} + {self.position}, mask={mask}, other=0.0)"
            case Ref(name=name):
                return self.let(name)
            case Literal(value=v):
                return _literal(v)
            case ClassOf(chains=chains):
                return "(" + format_class_row(chains, self.index, "tl.where({a} == {b}, 1, 0)") + ")"
            case Factor(table=t, row=row, column=column):
                width = len(next(tb for tb in self.loops.tables if tb.name == t).rows[0])
                dtype = f"{self.param('out')}.dtype.element_ty"
                # Rows are valid for every lane (masked lanes have class 0): no mask needed.
                return f"tl.load({self.param('table', t)} + {self.expr(row)} * {width} + {column}).to({dtype})"
            case Call(op=op, args=args):
                return format_call(op, [self.expr(a) for a in args], _COMBINE)
        raise TypeError(f"not a loop expression: {expr!r}")

    # -- statements --------------------------------------------------------------------------

    def stmts(self, stmts) -> None:
        for s in stmts:
            if isinstance(s, Let):
                self.w.line(f"{self.let(s.name)} = {self.expr(s.value)}")
                self.let_dims[s.name] = self.expr_dims(s.value)
            elif isinstance(s, Update):
                self.update(s)
            elif isinstance(s, SegmentedUpdate):
                self.update(s.update, s.key, segmented=True)
            else:
                raise ScheduleError(f"cannot emit {type(s).__name__} inside a tile")

    def update(self, u: Update, key: Index | None = None, segmented: bool = False) -> None:
        w, info = self.w, algebra.operator(u.reduce)
        value = self.expr(u.value)
        mask = self.full_mask()
        if u.factor is not None:
            f = self.expr(u.factor)
            mask = f"{mask} & ({f} != 0)"
            if not info.idempotent:
                # where(): a zero factor must not turn an inf or nan value into nan.
                value = f"tl.where({f} != 0, {f} * {value}, 0.0)"
        if self.tiles.write == "owned":
            if info.name == "add":
                w.line(f"{self.acc} += tl.where({mask}, {value}, 0.0)")
            else:
                w.line(f"{self.acc} = tl.where({mask}, {_COMBINE[info.name]}({self.acc}, {value}), {self.acc})")
            return
        if info.name not in _ATOMIC:
            raise ScheduleError(f"no atomic for reduction {info.name!r}")
        pointer = f"{self.param('out')} + {self.offset('', u.output.indices, True)}"
        if not segmented:
            self.helpers.add(("scatter", info.name))
            w.line(f"_scatter_{info.name}({pointer}, {value}, {mask})")
        elif key is None:
            self.helpers.add(("tile", info.name))
            w.line(f"_tile_{info.name}({pointer}, {value}, {mask})")
        else:
            self.helpers |= {("segmented", info.name), ("run", info.name)}
            start, end = self.runs
            w.line(f"_segmented_{info.name}({pointer}, {value}, {mask}, {start}, {end})")

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
                block = self.param("block", "NNZ")
                pid = self.names.fresh("pid")
                w.line(f"{pid} = tl.program_id(0).to(tl.int64)")
                self.position = self.names.fresh("nz")
                w.line(f"{self.position} = {pid} * {block} + tl.arange(0, {block})[:, None]")
                self.term("in_tile", f"{self.position} < {self.param('nnz')}", frozenset({0}))
                for mode, i in enumerate(idx):
                    self.dims[i] = frozenset({0})
                    crd = self.param("coords", mode)
                    mask = self.mask_for(frozenset({0}))
                    w.line(f"{self.index(i)} = tl.load({crd} + {self.position}, mask={mask}, other=0).to(tl.int64)")
                if self.keyed_segments():
                    self.run_flags(idx[0], block)
                self.stmts(level.stmts)
                self.level(k + 1)
            case BlockAxis(gridded=True) as axis:
                self.grid_axis(axis)
                if self.tiles.write == "owned" and self.acc is None and not any(
                    isinstance(lv.header, BlockAxis) and lv.header.gridded for lv in levels[k + 1:]
                ):
                    self.open_accumulator()
                self.stmts(level.stmts)
                self.level(k + 1)
            case BlockAxis(gridded=False) as axis:
                start = self.names.fresh(f"{axis.index.name}_start")
                block = self.param("block", axis.axis)
                extent = self.param("extent", axis.extent)
                with w.block(f"for {start} in range(0, {extent}, {block}):"):
                    self.bind_axis(axis, f"{start} + tl.arange(0, {block})", extent)
                    self.stmts(level.stmts)
                    self.level(k + 1)
            case ScalarLoop(index=i, extent=e, lower=lo, upper=hi):
                scalar_lo = lo is None or not self.dims[lo]
                scalar_hi = hi is None or not self.dims[hi]
                start = self.index(lo) if lo is not None and scalar_lo else "0"
                stop = f"{self.index(hi)} + 1" if hi is not None and scalar_hi else self.param("extent", e)
                self.dims[i] = frozenset()
                with w.block(f"for {self.index(i)} in range({start}, {stop}):"):
                    # Bounds that vary across lanes cannot bound a scalar loop: they mask.
                    if lo is not None and not scalar_lo:
                        self.term(f"{i.name}_from", f"{self.index(lo)} <= {self.index(i)}", self.dims[lo])
                    if hi is not None and not scalar_hi:
                        self.term(f"{i.name}_to", f"{self.index(i)} <= {self.index(hi)}", self.dims[hi])
                    self.stmts(level.stmts)
                    self.level(k + 1)
            case Mask(lhs=a, rhs=b):
                self.term("canonical", f"{self.index(a)} <= {self.index(b)}", self.dims[a] | self.dims[b])
                self.stmts(level.stmts)
                self.level(k + 1)
        del self.terms[saved:]

    def keyed_segments(self) -> bool:
        return any(isinstance(s, SegmentedUpdate) and s.key is not None for lv in self.tiles.levels for s in lv.stmts)

    def run_flags(self, leading: Index, block: str) -> None:
        """Flags of the runs of equal leading coordinates (the segments): a lane starts a run
        when the nonzero before it in the tile has another coordinate, and ends one when the
        nonzero after it does (or the tile ends). Unsorted input only makes more, shorter runs."""
        crd, nz, row = self.param("coords", 0), self.position, self.index(leading)
        before = self.names.fresh(f"{leading.name}_before")
        after = self.names.fresh(f"{leading.name}_after")
        start, end = self.names.fresh("run_start"), self.names.fresh("run_end")
        in_tile = self.terms[0][0]
        w = self.w
        w.line(f"{before} = tl.load({crd} + {nz} - 1, mask={in_tile} & ({nz} % {block} != 0), other=-1).to(tl.int64)")
        w.line(f"{after} = tl.load({crd} + {nz} + 1, mask=({nz} + 1 < {self.param('nnz')}) & "
               f"(({nz} + 1) % {block} != 0), other=-1).to(tl.int64)")
        w.line(f"{start} = {row} != {before}")
        w.line(f"{end} = {in_tile} & ({row} != {after})")
        self.runs = (start, end)

    def bind_axis(self, axis: BlockAxis, lanes: str, extent: str) -> None:
        i = axis.index
        shape = "[:, None]" if axis.axis == 0 else "[None, :]"
        self.dims[i] = frozenset({axis.axis})
        self.w.line(f"{self.index(i)} = ({lanes}){shape}")
        self.term(f"in_{i.name}", f"{self.index(i)} < {extent}", self.dims[i])
        if axis.gridded:
            self.store_terms.append(self.terms[-1][0])
        for bound, code in ((axis.lower, "{b} <= {i}"), (axis.upper, "{i} <= {b}")):
            if bound is not None:
                text = code.format(b=self.index(bound), i=self.index(i))
                self.term(f"{i.name}_bound", text, self.dims[bound] | self.dims[i])
                if axis.gridded and self.tiles.mirror:
                    # Both halves are stored: lanes off the triangle are left to the mirror store.
                    self.store_terms.append(self.terms[-1][0])

    def grid_axis(self, axis: BlockAxis) -> None:
        tiles = self.param("tiles")
        naxes = len(self.tiles.grid_axes)
        if not hasattr(self, "tile_id"):
            self.tile_id = self.names.fresh("tile")
            self.w.line(f"{self.tile_id} = tl.program_id(0).to(tl.int64)")
        block = self.param("block", axis.axis)
        start = self.names.fresh(f"{axis.index.name}_start")
        self.w.line(f"{start} = tl.load({tiles} + {self.tile_id} * {naxes} + {axis.axis}).to(tl.int64)")
        self.bind_axis(axis, f"{start} + tl.arange(0, {block})", self.param("extent", axis.extent))

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
        in_bounds = " & ".join(t for t in self.store_terms if "_bound" not in t)
        body.line(f"tl.store({pointer}, {self.acc}, mask={mask})")
        body.line(f"tl.store({self.param('out')} + {offset}, tl.trans({self.acc}), "
                  f"mask=tl.trans({in_bounds} & ({a} < {b})))")

    def open_accumulator(self) -> None:
        axes = self.tiles.grid_axes
        shape = ", ".join(self.param("block", a.axis) for a in axes)
        if len(axes) == 1:
            shape += ", 1"
        identity = _literal(algebra.operator(self.loops.reduce).identity)
        self.acc = self.names.fresh("acc")
        self.w.line(f"{self.acc} = tl.full([{shape}], {identity}, {self.param('out')}.dtype.element_ty)")

    def emit(self) -> str:
        body = CodeWriter()
        self.w = body
        body.depth = 1
        self.param("out")
        self.level(0)
        if self.acc is not None:
            (update,) = {s for lv in self.tiles.levels for s in lv.stmts if isinstance(s, Update)}
            pointer = f"{self.param('out')} + {self.offset('', update.output.indices, True)}"
            mask = " & ".join(self.store_terms)
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
        order = ("run", "scatter", "segmented", "tile")  # _run_* before the helpers that use them
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
        w.line(f"{_ATOMIC[op]}(pointer, value, mask=mask)")


def _combine(op: str, a: str, b: str) -> str:
    return f"{a} + {b}" if op == "add" else f"{_COMBINE[op]}({a}, {b})"


def _run_helper(w: CodeWriter, op: str) -> None:
    with w.block(f"def _run_{op}(value, start, hit, next_value, next_start, next_hit):"):
        w.line("# One step of a segmented scan: a lane that starts a run drops what came before it.")
        w.line("# (Flags travel as int32, the plainest element type for a scan.)")
        w.line(f"value = tl.where(next_start != 0, next_value, {_combine(op, 'value', 'next_value')})")
        w.line("hit = tl.where(next_start != 0, next_hit, hit | next_hit)")
        w.line("return value, start | next_start, hit")


def _segmented_helper(w: CodeWriter, op: str) -> None:
    identity = _literal(algebra.operator(op).identity)
    with w.block(f"def _segmented_{op}(pointer, value, mask, start, end):"):
        w.line("# Lanes of one run share the output element: reduce each run along the nonzeros (axis 0),")
        w.line("# then its last lane writes once. Still an atomic: the run may go on in the next tile,")
        w.line("# and other updates of the kernel can hit the element too.")
        _broadcast(w, ("pointer", "value", "mask", "start", "end"))
        w.line(f"value = tl.where(mask, value, {identity})")
        w.line(f"total, _, hit = tl.associative_scan((value, start.to(tl.int32), mask.to(tl.int32)), 0, _run_{op})")
        w.line("# hit: some lane of the run is unmasked (so the address is in bounds).")
        w.line(f"{_ATOMIC[op]}(pointer, total, mask=end & (hit != 0))")


def _tile_helper(w: CodeWriter, op: str) -> None:
    identity = _literal(algebra.operator(op).identity)
    reduce = {"add": "tl.sum", "min": "tl.min", "max": "tl.max"}[op]
    with w.block(f"def _tile_{op}(pointer, value, mask):"):
        w.line("# The address does not vary along the nonzeros (axis 0): reduce the tile, write once.")
        _broadcast(w, ("value", "mask"))
        w.line(f"total = {reduce}(tl.where(mask, value, {identity}), axis=0, keep_dims=True)")
        w.line("hit = tl.max(mask.to(tl.int32), axis=0, keep_dims=True) != 0")
        _broadcast(w, ("pointer", "total", "hit"))
        w.line(f"{_ATOMIC[op]}(pointer, total, mask=hit)")


_HELPERS = {"scatter": _scatter_helper, "run": _run_helper, "segmented": _segmented_helper, "tile": _tile_helper}


# ---------------------------------------------------------------------------------------------
# Public entry points


@dataclass(frozen=True)
class EmittedKernel:
    """Generated source and its parameters, in order, with their names in the source."""

    source: str
    params: tuple[TParam, ...]
    names: dict[TParam, str]


def emit_kernel(tiles: TileProgram) -> EmittedKernel:
    emitter = _Emitter(tiles)
    source = emitter.emit()
    return EmittedKernel(source, tuple(emitter.params), dict(emitter.pnames))


def triton_source(program: LoopProgram, schedule: Schedule | None = None) -> str:
    """The generated Triton source (tile sizes are constexpr arguments, so one source serves
    every size of the same schedule kind)."""
    return emit_kernel(apply_schedule(program, schedule)).source
