"""Numba backend: a printer from loop IR to readable Numba source, parallel over chunks.

Each chunk of the outer loop (contiguous nonzeros balanced by count, or a cyclic share of the
first dense loop) accumulates into its own slice of `partial`; the runtime reduces the slices.
No two threads write the same memory, so no update is lost.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import threading

from .. import __version__, algebra
from ..ir.einsum import Access, Call, Literal
from ..ir.loop import (
    Block,
    ClassOf,
    DenseLoop,
    DriverValue,
    Factor,
    Guard,
    Let,
    LoopProgram,
    Ref,
    SparseLoop,
    Update,
    format_loop_program,
)
from ..ir.traverse import walk
from ..passes.loop_nest import unnest
from .cache import load_source
from .parameters import Param, kernel_parameters, sparse_loop
from .writer import CodeWriter, Namer, format_call, format_class_row


def _literal(value: float) -> str:
    if math.isinf(value):
        return "np.inf" if value > 0 else "-np.inf"
    return repr(float(value))


class _Emitter:
    def __init__(self, program: LoopProgram):
        self.program = program
        self.names = Namer(reserved=("numba", "np", "kernel"))
        self.w = CodeWriter()
        self.params = kernel_parameters(program)
        self.param_names = {p: self._param_name(p) for p in self.params}
        self.chunk = self.names.fresh("chunk")
        self.acc = self.names.fresh("acc")
        self.position = self.names.fresh("p")
        self.first_loop = True
        self.registers = self._plan_registers()
        self.emitted_lets: set[str] = set()
        self.class_path: str | None = None  # "base" / "table" inside an unswitched loop nest

    def _plan_registers(self) -> dict[tuple, list[tuple[Update, str]]]:
        """Updates whose output location is fixed across a loop accumulate in a local variable
        over that loop and write memory once after it (y[i] over a CSR row, C[i,j] over k,
        a scalar over the whole chunk). Keyed by the binding point they span."""
        positions: list[tuple[tuple, frozenset]] = []
        for level in unnest(self.program.body):
            header = level.header
            if isinstance(header, SparseLoop):
                if header.format == "csr":
                    positions.append((("rows", header), frozenset(header.indices[:1])))
                    positions.append((("nonzeros", header), frozenset(header.indices[1:])))
                else:
                    positions.append((("nonzeros", header), frozenset(header.indices)))
            elif isinstance(header, DenseLoop):
                positions.append((("loop", header), frozenset((header.index,))))
            elif isinstance(header, Guard):
                positions.append((("guard", header), frozenset()))
        plan: dict[tuple, list[tuple[Update, str]]] = {}
        innermost = unnest(self.program.body)[-1].stmts
        for update in (s for s in innermost if isinstance(s, Update)):
            output = set(update.output.indices)
            last = max((n for n, (_, bound) in enumerate(positions) if bound & output), default=-1)
            if last + 1 < len(positions):
                local = self.names.fresh(f"{update.output.tensor}_register")
                plan.setdefault(positions[last + 1][0], []).append((update, local))
        return plan

    def open_registers(self, key: tuple) -> None:
        for update, local in self.registers.get(key, ()):
            self.w.line(f"{local} = {_literal(algebra.operator(update.reduce).identity)}")

    def flush_registers(self, key: tuple) -> None:
        for update, local in self.registers.get(key, ()):
            target = f"{self.acc}[{self.subscript(update.output.indices)}]"
            self.accumulate(algebra.operator(update.reduce), target, local)

    def register_of(self, update: Update) -> str | None:
        for entries in self.registers.values():
            for planned, local in entries:
                if planned is update:
                    return local
        return None

    def _param_name(self, param: Param) -> str:
        driver = self.program.driver
        match param.kind:
            case "partial":
                return self.names.fresh("partial")
            case "pointers":
                return self.names.fresh(f"{driver}_ptr")
            case "coords":
                return self.names.fresh(f"{driver}_crd{param.key}")
            case "values":
                return self.names.fresh(f"{driver}_vals")
            case "dense" | "table":
                return self.names.user("tensor", param.key)
            case "extent":
                return self.names.fresh(f"{param.key.tensor}_size{param.key.mode}")
            case "bounds":
                return self.names.fresh("bounds")
            case "chunks":
                return self.names.fresh("n_chunks")
        raise ValueError(param)

    def index(self, index) -> str:
        return self.names.user("index", index.name)

    def let(self, name: str) -> str:
        return self.names.user("let", name)

    def subscript(self, indices) -> str:
        return ", ".join(self.index(i) for i in indices) if indices else "0"

    def expr(self, expr) -> str:
        match expr:
            case Access(tensor=t, indices=idx):
                return f"{self.names.user('tensor', t)}[{self.subscript(idx)}]"
            case DriverValue():
                return f"{self.param_names[Param('values')]}[{self.position}]"
            case Ref(name=name):
                return self.let(name)
            case Literal(value=v):
                return _literal(v)
            case ClassOf(chains=chains):
                return format_class_row(chains, self.index)
            case Factor(table=t, row=row, column=column):
                return f"{self.names.user('tensor', t)}[{self.expr(row)}, {column}]"
            case Call(op=op, args=args):
                return format_call(op, [self.expr(a) for a in args], {"min": "min", "max": "max"})
        raise TypeError(f"not a loop expression: {expr!r}")

    def stmt(self, stmt) -> None:
        w = self.w
        match stmt:
            case Block(body=body):
                updates = [s for s in body if isinstance(s, Update)]
                for s in body:
                    if not isinstance(s, Update):
                        self.stmt(s)
                self.updates(updates)
            case Let(name=name, value=value):
                w.line(f"{self.let(name)} = {self.expr(value)}")
                self.emitted_lets.add(name)
            case Update():
                self.update(stmt)
            case SparseLoop():
                self.sparse_loop(stmt)
            case DenseLoop(index=i, extent=extent, lower=lo, upper=hi, body=body):
                start = self.index(lo) if lo is not None else "0"
                stop = f"{self.index(hi)} + 1" if hi is not None else self.param_names[Param("extent", extent)]
                if self.first_loop:
                    # Cyclic shares balance triangular loops across chunks.
                    self.first_loop = False
                    chunks = self.param_names[Param("chunks")]
                    header = f"for {self.index(i)} in range({start} + {self.chunk}, {stop}, {chunks}):"
                else:
                    header = f"for {self.index(i)} in range({start}, {stop}):"
                if self.class_path is None and self.class_row_in_scope():
                    # Unswitch on the class above the dense loops: the base path's loops have no
                    # branch inside and can vectorize.
                    with w.block(f"if {self.expr(self.class_row)} == 0:"):
                        self.dense_loop(stmt, header, "base")
                    with w.block("else:"):
                        self.dense_loop(stmt, header, "table")
                else:
                    self.dense_loop(stmt, header, self.class_path)
            case Guard(lhs=a, rhs=b, body=body):
                self.open_registers(("guard", stmt))
                with w.block(f"if {self.index(a)} <= {self.index(b)}:"):
                    self.stmt(body)
                self.flush_registers(("guard", stmt))
            case _:
                raise TypeError(f"not a loop statement: {stmt!r}")

    def sparse_loop(self, loop: SparseLoop) -> None:
        w, p = self.w, self.position
        bounds = self.param_names[Param("bounds")]
        self.first_loop = False
        if loop.format == "csr":
            row = self.index(loop.indices[0])
            ptr = self.param_names[Param("pointers")]
            rows = f"for {row} in range({bounds}[{self.chunk}], {bounds}[{self.chunk} + 1]):"
            self.open_registers(("rows", loop))
            with w.block(rows):
                self.open_registers(("nonzeros", loop))
                with w.block(f"for {p} in range({ptr}[{row}], {ptr}[{row} + 1]):"):
                    for mode in range(1, len(loop.indices)):
                        w.line(f"{self.index(loop.indices[mode])} = {self.param_names[Param('coords', mode)]}[{p}]")
                    self.stmt(loop.body)
                self.flush_registers(("nonzeros", loop))
            self.flush_registers(("rows", loop))
            return
        self.open_registers(("nonzeros", loop))
        with w.block(f"for {p} in range({bounds}[{self.chunk}], {bounds}[{self.chunk} + 1]):"):
            for mode, index in enumerate(loop.indices):
                w.line(f"{self.index(index)} = {self.param_names[Param('coords', mode)]}[{p}]")
            self.stmt(loop.body)
        self.flush_registers(("nonzeros", loop))

    def dense_loop(self, loop: DenseLoop, header: str, class_path: str | None) -> None:
        outer, self.class_path = self.class_path, class_path
        self.open_registers(("loop", loop))
        with self.w.block(header):
            self.stmt(loop.body)
        self.flush_registers(("loop", loop))
        self.class_path = outer

    @functools.cached_property
    def class_row(self):
        """The row expression of the factor table's lookups (None without a table)."""
        rows = {lookup.row for (lookup,) in self.table_lookups.values()}
        return rows.pop() if len(rows) == 1 else None

    def class_row_in_scope(self) -> bool:
        row = self.class_row
        return isinstance(row, Ref) and row.name in self.emitted_lets

    def updates(self, updates: list[Update]) -> None:
        """Updates of one point. With a factor table, strictly off-diagonal points (class 0, by
        far the most) take a branch-free base path with constant factors; diagonal classes read
        the table. (A CPU choice: the Triton backend stays branch-free with the table.)"""
        lookups = self.table_lookups
        if not any(isinstance(u.factor, Ref) and u.factor.name in lookups for u in updates):
            for update in updates:
                self.update(update)
            return
        if self.class_path == "base":
            self.base_updates(updates)
        elif self.class_path == "table":
            for update in updates:
                self.update(update)
        else:
            with self.w.block(f"if {self.expr(self.class_row)} == 0:"):
                self.base_updates(updates)
            with self.w.block("else:"):
                for update in updates:
                    self.update(update)

    def base_updates(self, updates: list[Update]) -> None:
        """The updates at a strictly off-diagonal point: constant factors from table row 0."""
        lookups = self.table_lookups
        rows = {t.name: t.rows for t in self.program.tables}
        emitted = False
        for update in updates:
            factor = update.factor
            if isinstance(factor, Ref) and factor.name in lookups:
                lookup = lookups[factor.name][0]
                count = rows[lookup.table][0][lookup.column]
                if count == 0:
                    continue
                factor = None if count == 1 else Literal(float(count))
            self.update(dataclasses.replace(update, factor=factor), register_of=update)
            emitted = True
        if not emitted:
            self.w.line("pass")

    @functools.cached_property
    def table_lookups(self) -> dict[str, tuple[Factor]]:
        """Let-bound table lookups: name -> (Factor,)."""
        return {
            node.name: (node.value,)
            for node in walk(self.program.body)
            if isinstance(node, Let) and isinstance(node.value, Factor)
        }

    def update(self, update: Update, register_of: Update | None = None) -> None:
        w = self.w
        info = algebra.operator(update.reduce)
        local = self.register_of(register_of or update)
        target = local or f"{self.acc}[{self.subscript(update.output.indices)}]"
        value = self.expr(update.value)
        factor = update.factor
        if isinstance(factor, Factor | Ref):
            f = self.expr(factor)
            with w.block(f"if {f} != 0:"):  # a zero factor skips the update: 0 * inf is not 0
                self.accumulate(info, target, value if info.idempotent else f"{f} * {value}")
        else:
            scaled = value if factor is None or info.idempotent else f"{self.expr(factor)} * {value}"
            self.accumulate(info, target, scaled)

    def accumulate(self, info: algebra.Operator, target: str, value: str) -> None:
        if info.infix:
            self.w.line(f"{target} {info.symbol}= {value}")
        else:
            self.w.line(f"{target} = {info.symbol}({target}, {value})")

    def emit(self) -> str:
        w, program = self.w, self.program
        w.line(f"# Generated by systec_gpu {__version__} (numba backend). Do not edit.")
        w.line("#")
        for line in format_loop_program(program).splitlines():
            w.line(f"# {line}")
        w.line("import numba")
        w.line("import numpy as np  # noqa: F401")
        w.line()
        w.line()
        args = ", ".join(self.param_names[p] for p in self.params)
        chunks = self.param_names[Param("chunks")]
        # Two functions, not two dispatchers of one: numba's disk cache is keyed by function name.
        for name, decorator, loop in (
            ("kernel", "@numba.njit(parallel=True, cache=True, nogil=True)", "numba.prange"),
            ("kernel_serial", "@numba.njit(cache=True, nogil=True)", "range"),
        ):
            if name == "kernel_serial":
                w.line()
                w.line()
                w.line("# Small inputs: starting the thread pool costs more than the work.")
            w.line(decorator)
            self.first_loop = True
            self.emitted_lets = set()
            with w.block(f"def {name}({args}):"), w.block(f"for {self.chunk} in {loop}({chunks}):"):
                w.line(f"{self.acc} = {self.param_names[Param('partial')]}[{self.chunk}]")
                self.stmt(program.body)
        return w.text()


SERIAL_BELOW = 20_000  # iteration points under which one thread beats starting the thread pool


def estimated_points(program: LoopProgram, args) -> int:
    """Stored nonzeros times the sizes of the dense loops (an upper bound of the work)."""
    loop = sparse_loop(program)
    driven = {i.name for i in loop.indices} if loop is not None else set()
    points = args.driver.nnz if args.driver is not None else 1
    for name, size in args.sizes.items():
        if name not in driven:
            points *= size
    return points


@functools.lru_cache(maxsize=256)
def numba_source(program: LoopProgram) -> str:
    return _Emitter(program).emit()


@functools.lru_cache(maxsize=256)
def numba_module(program: LoopProgram):
    """The generated module (imported once from its content-addressed file)."""
    return load_source(numba_source(program), "numba")


def run_numba(program: LoopProgram, args, threads: int | None = None) -> None:
    """Run `program` on `args`, in parallel chunks unless the work is small (or `threads` == 1)."""
    prepare_numba(program)(program, args, threads)


@functools.lru_cache(maxsize=256)
def prepare_numba(program: LoopProgram):
    """run_numba for one program with everything that does not depend on the data looked up once:
    the generated module, its parameter list, the loop the chunks split (a prepared launch calls it)."""
    import numba

    from .arguments import allocate, has_loops
    from .parameters import argument_values

    module = numba_module(program)
    params = kernel_parameters(program)
    single = sparse_loop(program) is None and not has_loops(program)

    def run(_program: LoopProgram, args, threads: int | None = None) -> None:
        serial = single or threads == 1 or (threads is None and estimated_points(program, args) < SERIAL_BELOW)
        # numba's workqueue threading layer (where neither OpenMP nor TBB loads) aborts the process
        # on parallel kernels launched from two threads at once: until the layer is known to be
        # another, one call runs in parallel and the others serially, each in its own thread.
        guard = not serial and _THREADING_LAYER[0] in (None, "workqueue")
        if guard and not _PARALLEL_LOCK.acquire(blocking=False):
            serial, guard = True, False
        try:
            allocate(args, program, chunks=1 if serial else threads or numba.get_num_threads(), single=single)
            kernel = module.kernel_serial if serial else module.kernel
            kernel(*argument_values(params, args))
            if not serial and _THREADING_LAYER[0] is None:
                _THREADING_LAYER[0] = numba.threading_layer()
        finally:
            if guard:
                _PARALLEL_LOCK.release()

    return run


_PARALLEL_LOCK = threading.Lock()
_THREADING_LAYER: list[str | None] = [None]  # numba's, once a parallel kernel has run
