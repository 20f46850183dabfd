"""Numba backend: a printer from loop IR to readable Numba source, parallel over chunks.

Each chunk of the outer loop (contiguous nonzeros balanced by count, or a cyclic share of the
first dense loop) accumulates into its own slice of `partial` (zeros from np.zeros, or the
reduction's identity written by its own thread over the rows the chunk can touch); a second
parallel loop adds the slices into `partial[0]` over those rows only. No two threads write the
same memory, so no update is lost. A symmetric output is written whole by the kernel: both
halves beside each update when a sparse driver scatters them, a blocked mirror pass otherwise.
A chunk's loops are one function, `chunk_kernel(acc, chunk, ...)`, that the parallel and the
serial kernel both call with the chunk's output block.

The code is what one would write by hand for the same schedule:
- diagonal classes are peeled: below the class test each class gets its own copy of the code
  with constant factors (no table loads, no factor tests in the hot loop). On a CSR matrix the
  canonical rows are sorted and duplicate-free (the storage invariant), so a row's diagonal
  entry can only be its first: the row loop peels it, and the nonzero loop is the
  strictly-off-diagonal class alone, without any test;
- reads that depend on the row only (`x[i]`) are read once per row, not per nonzero;
- outputs fixed across a loop accumulate in a register and are written once after it; factors
  fixed along a CSR row are applied once to the row's sum (`x_i * sum_j A_ij x_j`), and those
  fixed along a rank loop are multiplied once before it (`2 * A_val`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import threading
from dataclasses import dataclass

import numba
import numpy as np
from numba.np.ufunc import parallel as _numba_parallel

from .. import __version__, algebra
from ..formats.choice import fiber_variant, read_as
from ..ir.einsum import Access, Call, Index, Literal
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
    Select,
    SparseLoop,
    Stored,
    Update,
    format_loop_program,
)
from ..ir.traverse import walk
from ..passes.loop_nest import unnest
from .arguments import DriverArrays, has_loops
from .cache import load_source
from .parameters import Param, argument_values, kernel_parameters, sparse_loop
from .writer import CodeWriter, Namer, format_call, format_class_row

MIRROR_BLOCK = 16  # rows and columns per block of the in-kernel mirror of a symmetric output

# A factor table with more classes than this keeps its table loads (code size grows with the
# number of classes: 16 is the 5-way group of 5-D MTTKRP).
MAX_PEELED_CLASSES = 16


def _literal(value: float) -> str:
    if math.isinf(value):
        return "np.inf" if value > 0 else "-np.inf"
    return repr(float(value))


# ---------------------------------------------------------------------------------------------
# Class peeling: the factor table as constants


@dataclass(frozen=True)
class ClassPeel:
    """The factor table of a program whose lookups all go through one let-bound class row."""

    name: str  # the let binding the class row
    row: ClassOf
    rows: tuple[tuple[int, ...], ...]  # factors, indexed by the class row's value
    labels: tuple[str, ...]
    columns: tuple[tuple[str, int], ...]  # let name of a table lookup -> its column


@functools.lru_cache(maxsize=256)
def class_peel(program: LoopProgram) -> ClassPeel | None:
    """How to replace the table by constants, or None when the program's shape does not allow it
    (then the generated code loads factors from the table, as the Triton backend does)."""
    if len(program.tables) != 1:
        return None
    table = program.tables[0]
    lets = [n for n in walk(program.body) if isinstance(n, Let)]
    rows = [let for let in lets if isinstance(let.value, ClassOf)]
    if len(rows) != 1:
        return None
    cls = rows[0]
    bits = sum(len(chain) - 1 for chain in cls.value.chains)
    if len(table.rows) != 1 << bits or len(table.rows) > MAX_PEELED_CLASSES:
        return None
    columns = []
    for let in lets:
        if isinstance(let.value, Factor):
            if let.value.table != table.name or let.value.row != Ref(cls.name):
                return None
            columns.append((let.name, let.value.column))
    lookups = sum(isinstance(n, Factor) for n in walk(program.body))
    uses_of_row = sum(n == Ref(cls.name) for n in walk(program.body))
    if lookups != len(columns) or uses_of_row != len(columns):
        return None  # a lookup or a use of the class row that is not a let-bound factor
    return ClassPeel(cls.name, cls.value, table.rows, table.labels, tuple(columns))


def _has_update(stmt) -> bool:
    return any(isinstance(n, Update) for n in walk(stmt))


def _names_used(stmts) -> set[str]:
    return {n.name for s in stmts for n in walk(s) if isinstance(n, Ref)}


def specialize(stmts: tuple, peel: ClassPeel, row: int, idempotent: bool) -> tuple:
    """`stmts` at points of class `row`: table lookups become constants, updates with factor 0
    and loops left without updates disappear, lets nobody reads any more are dropped."""
    counts = {name: peel.rows[row][column] for name, column in peel.columns}

    def rewrite(stmt):
        match stmt:
            case Let(name=name) if name in counts or name == peel.name:
                return None
            case Update(factor=Ref(name=name)) if name in counts:
                count = counts[name]
                if count == 0:
                    return None
                factor = None if count == 1 or idempotent else Literal(float(count))
                return dataclasses.replace(stmt, factor=factor)
            case Block(body=body):
                return Block(_prune(tuple(s for s in map(rewrite, body) if s is not None)))
            case SparseLoop() | DenseLoop() | Guard():
                body = rewrite(stmt.body)
                return dataclasses.replace(stmt, body=body) if _has_update(body) else None
        return stmt

    return _prune(tuple(s for s in map(rewrite, stmts) if s is not None))


def _prune(stmts: tuple) -> tuple:
    """Drop lets that no later statement of the block (or anything nested in it) reads."""
    kept: list = []
    for n, stmt in enumerate(stmts):
        if isinstance(stmt, Let) and stmt.name not in _names_used(stmts[n + 1:]):
            continue
        kept.append(stmt)
    return tuple(kept) if len(kept) == len(stmts) else _prune(tuple(kept))


# ---------------------------------------------------------------------------------------------
# Which output rows a chunk can touch


def mirrors_at_update(program: LoopProgram) -> bool:
    """A symmetric output's other half written beside each update (scattered by a sparse
    driver: no pass over the dense output), rather than by a mirror pass after the combine."""
    return mirrors_output(program) and program.driver is not None


@functools.lru_cache(maxsize=256)
def touched_rows_rule(program: LoopProgram) -> tuple[bool, bool]:
    """(from the chunk's first leading coordinate, up to its last one): which output rows
    (kernel-layout mode 0) a chunk of the driver's nonzeros can write. The driver is sorted by
    its leading coordinate, so a chunk covers a range of it. Rows start at that range when every
    update's row index is the leading index or a later member of a canonical chain that starts
    with it (i <= j <= ... holds at every visited point); they end with it when every row index
    is the leading index. Partial outputs are initialized and combined over these rows only."""
    loop = sparse_loop(program)
    if loop is None or not program.output.indices:
        return False, False
    lead = loop.indices[0]
    after_lead = {lead} | {i for chain in program.sets if chain[0] == lead for i in chain}
    outputs = [n.output.indices for n in walk(program.body) if isinstance(n, Update)]
    rows = {indices[0] for indices in outputs}
    if mirrors_at_update(program):  # the mirrored entry's row is the update's second index
        rows |= {indices[1] for indices in outputs}
    return rows <= after_lead, rows == {lead}


@functools.lru_cache(maxsize=256)
def mirrors_output(program: LoopProgram) -> bool:
    """True when the kernel writes both halves of a symmetric output itself: one pair of modes
    that are the leading two of the kernel layout, in order (rows r, columns c >= r). With a
    sparse driver each update also writes its mirrored entry (mirrors_at_update); with dense
    loops the chunks fill the canonical part and the combine copies each block of rows to the
    other half while it is in cache."""
    groups = program.output_groups
    if len(groups) != 1 or len(groups[0]) != 2:
        return False
    perm = program.layout_of(program.output.tensor) or tuple(range(len(program.output.indices)))
    return tuple(perm[:2]) == groups[0]


def _product(factors) -> object:
    return factors[0] if len(factors) == 1 else Call("mul", tuple(factors))


def _scaled_name(invariant: list) -> str:
    parts = [f"x{int(f.value)}" if isinstance(f, Literal) and float(f.value).is_integer() else
             (f.name if isinstance(f, Ref) else "c") for f in invariant]
    return "_".join(parts)


def hoist_invariant_factors(body: tuple, outside: set[str], reduce: algebra.Operator) -> tuple[tuple, tuple]:
    """(lets to bind before a dense loop, its body): a product's factors that do not change in
    the loop (the constant factor of the class, the nonzero's value) are multiplied once before
    it, `2.0 * (A_val * B_k_j)` becoming `A_val_x2 * B_k_j`."""
    if reduce.idempotent:
        return (), body
    lets: dict[str, Let] = {}
    rewritten = []
    for stmt in body:
        if not isinstance(stmt, Update) or isinstance(stmt.factor, Ref | Factor):
            rewritten.append(stmt)
            continue
        value = stmt.value
        factors = list(value.args) if isinstance(value, Call) and value.op == "mul" else [value]
        if stmt.factor is not None:
            factors.insert(0, stmt.factor)
        invariant = [f for f in factors if isinstance(f, Literal) or (isinstance(f, Ref) and f.name in outside)]
        variant = [f for f in factors if f not in invariant]
        if len(invariant) < 2 or not variant:
            rewritten.append(stmt)
            continue
        name = _scaled_name(invariant)
        lets.setdefault(name, Let(name, Call("mul", tuple(invariant))))
        product = (Ref(name), *variant)
        rewritten.append(dataclasses.replace(stmt, value=Call("mul", product), factor=None))
    return tuple(lets.values()), tuple(rewritten)


def _bound_lets(body: tuple, bound: set[Index], names: set[str]) -> tuple[tuple, tuple]:
    """(the lets of `body` that read only `bound` indices and `names` (extended with them), the
    rest of the body): what a CSF level can bind before its inner levels."""
    hoisted: list[Let] = []

    def invariant(node) -> bool:
        match node:
            case Access(indices=idx):
                return set(idx) <= bound
            case Ref(name=name):
                return name in names
            case DriverValue() | ClassOf() | Factor():
                return False
        return True

    for stmt in body:
        if isinstance(stmt, Let) and all(invariant(n) for n in walk(stmt.value)):
            hoisted.append(stmt)
            names.add(stmt.name)
    return tuple(hoisted), tuple(s for s in body if s not in hoisted)


# ---------------------------------------------------------------------------------------------
# The emitter


def _level_keys(program: LoopProgram) -> list[tuple[tuple, frozenset]]:
    """(position, indices bound there) from the outside in; a sparse loop is its format's levels
    (CSR: rows and nonzeros; CSF: one per mode)."""
    positions: list[tuple[tuple, frozenset]] = []
    for level in unnest(program.body):
        header = level.header
        if isinstance(header, SparseLoop):
            positions.extend(header.format.loop_levels(header.tensor, header.indices))
        elif isinstance(header, DenseLoop):
            positions.append((("loop", header.index.name), frozenset((header.index,))))
        elif isinstance(header, Guard):
            positions.append((("guard", header.lhs.name, header.rhs.name), frozenset()))
    return positions


class _Emitter:
    def __init__(self, program: LoopProgram):
        self.program = program
        self.names = Namer(reserved=("numba", "np", "kernel", "kernel_serial", "chunk_kernel", "touched_rows"))
        self.w = CodeWriter()
        self.params = numba_parameters(program)
        self.param_names = {p: self._param_name(p) for p in self.params}
        self.chunk = self.names.fresh("chunk")
        self.acc = self.names.fresh("acc")
        self.position = self.names.fresh("p")
        self.start, self.stop = self.names.fresh("start"), self.names.fresh("stop")
        self.row_registers: dict[tuple, str] = {}  # (output, invariant factors) -> row register
        self.reduce = algebra.operator(program.reduce)
        self.peel = class_peel(program)
        self.first_loop = True
        self.registers = self._plan_registers()
        self.live: dict[Access, str] = {}  # output location -> its open register
        self.emitted: set[str] = set()  # lets bound so far (loop invariants of later loops)
        # A symmetric output's other half: written beside each update when a sparse driver
        # scatters them (no pass over the dense output), or by a mirror pass after the combine.
        self.mirror_at_update = mirrors_at_update(program)
        self.mirrored = mirrors_output(program) and not self.mirror_at_update  # the mirror pass
        self.class_value: int | None = None  # the diagonal class of the code being emitted

    # -- registers --------------------------------------------------------------------------
    def _plan_registers(self) -> dict[tuple, list[tuple[Access, str]]]:
        """Updates whose output location is fixed across a loop accumulate in a local variable
        over that loop and write memory once after it (y[i] over a CSR row, C[i,j] over k,
        a scalar over the whole chunk). Keyed by the position of the loop they span."""
        positions = _level_keys(self.program)
        plan: dict[tuple, list[tuple[Access, str]]] = {}
        planned: set[Access] = set()
        innermost = unnest(self.program.body)[-1].stmts
        for update in (s for s in innermost if isinstance(s, Update)):
            if update.output in planned:
                continue
            output = set(update.output.indices)
            last = max((n for n, (_, bound) in enumerate(positions) if bound & output), default=-1)
            if last + 1 < len(positions):
                local = self.names.fresh(f"{update.output.tensor}_register")
                plan.setdefault(positions[last + 1][0], []).append((update.output, local))
                planned.add(update.output)
        return plan

    def open_registers(self, key: tuple) -> None:
        for output, local in self.registers.get(key, ()):
            self.w.line(f"{local} = {_literal(self.reduce.identity)}")
            self.live[output] = local

    def flush_registers(self, key: tuple) -> None:
        for output, local in self.registers.get(key, ()):
            del self.live[output]
            self.write(output, local)

    def write(self, output: Access, value: str) -> None:
        """acc[output] (op)= value, and its mirrored entry when the kernel writes both halves of
        a symmetric output beside each update (not on the output's diagonal, where they are one
        entry: the class of the code says where that is known, a test where it is not)."""
        self.accumulate(f"{self.acc}[{self.subscript(output.indices)}]", value)
        if not self.mirror_at_update:
            return
        a, b, *rest = output.indices
        equal = True if a == b else self.known_equal(a, b)
        if equal:
            return
        mirrored = f"{self.acc}[{self.subscript((b, a, *rest))}]"
        if equal is False:
            self.accumulate(mirrored, value)
            return
        with self.w.block(f"if {self.index(a)} != {self.index(b)}:"):
            self.accumulate(mirrored, value)

    def known_equal(self, a: Index, b: Index) -> bool | None:
        """Whether a == b at every point of the class being emitted (None: not known)."""
        if self.class_value is None or self.peel is None:
            return None
        bit = 0
        for chain in self.peel.row.chains:
            if a in chain and b in chain:
                p, q = sorted((chain.index(a), chain.index(b)))
                return all(self.class_value >> (bit + t) & 1 for t in range(p, q))
            bit += len(chain) - 1
        return None

    # -- names and expressions --------------------------------------------------------------
    def _param_name(self, param: Param) -> str:
        driver = self.program.driver
        match param.kind:
            case "partial":
                return self.names.fresh("partial")
            case "pointers":
                return self.names.fresh(f"{driver}_ptr")
            case "coords" | "fiber_coords":
                return self.names.fresh(f"{driver}_crd{param.key}")
            case "fiber_pointers":
                return self.names.fresh(f"{driver}_ptr{param.key}")
            case "values":
                return self.names.fresh(f"{driver}_vals")
            case "dense" | "table":
                return self.names.user("tensor", param.key)
            case "stored":
                return self.names.fresh(f"{param.key}_stored")
            case "extent":
                return self.names.fresh(f"{param.key.tensor}_size{param.key.mode}")
            case "bounds":
                return self.names.fresh("bounds")
            case "chunks":
                return self.names.fresh("n_chunks")
        raise ValueError(param)

    def index(self, index: Index) -> str:
        return self.names.user("index", index.name)

    def let(self, name: str) -> str:
        return self.names.user("let", name)

    def subscript(self, indices) -> str:
        return ", ".join(self.index(i) for i in indices) if indices else "0"

    def expr(self, expr) -> str:
        match expr:
            case Access(tensor=t, indices=idx):
                return f"{self.names.user('tensor', t)}[{self.subscript(idx)}]"
            case Stored(access=Access(tensor=t, indices=idx)):
                return f"{self.param_names[Param('stored', t)]}[{self.subscript(idx)}]"
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
                return format_call(op, [self.expr(a) for a in args], algebra.Operator.numba_call)
            case Select(when=when, value=value, otherwise=otherwise):
                # an unstored sparse factor: the term is the zero (not 0 * inf)
                test = " and ".join(f"{self.expr(c)} != 0" for c in when)
                return f"({self.expr(value)} if {test} else {self.expr(otherwise)})"
        raise TypeError(f"not a loop expression: {expr!r}")

    # -- statements -------------------------------------------------------------------------
    def block(self, stmts: tuple) -> None:
        """A nested block: the lets it binds are out of scope after it."""
        outer = set(self.emitted)
        self.block_statements(stmts)
        self.emitted = outer

    def block_statements(self, stmts: tuple) -> None:
        """Statements in order; at the class row (with a peelable table) the rest of the block
        is emitted once per class with constant factors."""
        if not stmts:
            self.w.line("pass")
            return
        for n, stmt in enumerate(stmts):
            if self.peel is not None and isinstance(stmt, Let) and stmt.name == self.peel.name:
                self.class_switch(stmt, stmts[n + 1:])
                return
            self.stmt(stmt)

    def class_switch(self, row: Let, rest: tuple) -> None:
        cls = self.let(row.name)
        self.w.line(f"{cls} = {self.expr(row.value)}")
        last = len(self.peel.rows) - 1
        for value, label in enumerate(self.peel.labels):
            header = "else:" if value == last else f"{'if' if value == 0 else 'elif'} {cls} == {value}:"
            with self.w.block(f"{header}  # {label}"):
                self.class_value = value
                self.block(specialize(rest, self.peel, value, self.reduce.idempotent))
                self.class_value = None

    def stmt(self, stmt) -> None:
        w = self.w
        match stmt:
            case Block(body=body):
                self.block(body)
            case Let(name=name, value=value):
                w.line(f"{self.let(name)} = {self.expr(value)}")
                self.emitted.add(name)
            case Update():
                self.update(stmt)
            case SparseLoop():
                outer = set(self.emitted)
                self.sparse_loop(stmt)
                self.emitted = outer
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
                key = ("loop", i.name)
                scaled, inner = hoist_invariant_factors(body.body, self.emitted, self.reduce)
                for let in scaled:
                    self.stmt(let)
                self.open_registers(key)
                with w.block(header):
                    self.block(inner)
                self.flush_registers(key)
            case Guard(lhs=a, rhs=b, body=body):
                key = ("guard", a.name, b.name)
                self.open_registers(key)
                with w.block(f"if {self.index(a)} <= {self.index(b)}:"):
                    self.block(body.body)
                self.flush_registers(key)
            case _:
                raise TypeError(f"not a loop statement: {stmt!r}")

    def sparse_loop(self, loop: SparseLoop) -> None:
        w, p = self.w, self.position
        bounds = self.param_names[Param("bounds")]
        self.first_loop = False
        if loop.format.row_pointers:
            self.csr_loop(loop)
            return
        if loop.format.fiber_levels:
            self.fiber_loop(loop)
            return
        key = ("nonzeros", loop.tensor)
        self.open_registers(key)
        with w.block(f"for {p} in range({bounds}[{self.chunk}], {bounds}[{self.chunk} + 1]):"):
            for mode, index in enumerate(loop.indices):
                w.line(f"{self.index(index)} = {self.param_names[Param('coords', mode)]}[{p}]")
            self.block(loop.body.body)
        self.flush_registers(key)

    def _row_invariant(self, body: tuple, row: Index) -> tuple[tuple, tuple]:
        """(lets that read only the row index and earlier row lets, the rest of the body)."""
        return _bound_lets(body, {row}, set(self._outer_lets))

    def fiber_loop(self, loop: SparseLoop) -> None:
        """One loop per CSF level: level 0 over the chunk's roots, level m over the fibers under
        the enclosing one, the last over nonzeros (its position indexes the values). Lets that
        read only the indices bound so far are bound at the level that binds the last of them;
        outputs fixed inside a level accumulate in a register over it (_plan_registers)."""
        w = self.w
        bounds = self.param_names[Param("bounds")]
        last = len(loop.indices) - 1
        positions = [self.names.fresh(f"p{m}") for m in range(last)] + [self.position]
        keys = [key for key, _ in loop.format.loop_levels(loop.tensor, loop.indices)]
        names = set(self._outer_lets) | self.emitted

        def level(m: int, body: tuple) -> None:
            if m == 0:
                span = f"{bounds}[{self.chunk}], {bounds}[{self.chunk} + 1]"
            else:
                pointers, above = self.param_names[Param("fiber_pointers", m)], positions[m - 1]
                span = f"{pointers}[{above}], {pointers}[{above} + 1]"
            self.open_registers(keys[m])
            with w.block(f"for {positions[m]} in range({span}):"):
                w.line(f"{self.index(loop.indices[m])} = {self.param_names[Param('fiber_coords', m)]}[{positions[m]}]")
                if m == last:
                    self.block(body)
                else:
                    hoisted, rest = _bound_lets(body, set(loop.indices[:m + 1]), names)
                    for let in hoisted:
                        self.stmt(let)
                    level(m + 1, rest)
            self.flush_registers(keys[m])

        level(0, loop.body.body)

    def _diagonal_first(self, loop: SparseLoop, body: tuple) -> int | None:
        """Position in `body` of the class row when the CSR row loop can peel the diagonal: a
        matrix symmetric in (row, column), whose only class test is row == column."""
        if self.peel is None or len(loop.indices) != 2 or loop.expanded:
            return None
        if self.peel.row.chains != (tuple(loop.indices),):
            return None
        return next((n for n, s in enumerate(body) if isinstance(s, Let) and s.name == self.peel.name), None)

    def csr_loop(self, loop: SparseLoop) -> None:
        w, p = self.w, self.position
        bounds = self.param_names[Param("bounds")]
        ptr = self.param_names[Param("pointers")]
        row = self.index(loop.indices[0])
        hoisted, body = self._row_invariant(loop.body.body, loop.indices[0])
        diagonal_at = self._diagonal_first(loop, body)
        rows_key, nonzeros_key = ("rows", loop.tensor), ("nonzeros", loop.tensor)

        def coordinates() -> None:
            for mode in range(1, len(loop.indices)):
                w.line(f"{self.index(loop.indices[mode])} = {self.param_names[Param('coords', mode)]}[{p}]")

        self.open_registers(rows_key)
        with w.block(f"for {row} in range({bounds}[{self.chunk}], {bounds}[{self.chunk} + 1]):"):
            for let in hoisted:
                self.stmt(let)
            self.open_registers(nonzeros_key)
            start, stop = self.start, self.stop
            w.line(f"{start} = {ptr}[{row}]")
            w.line(f"{stop} = {ptr}[{row} + 1]")
            if diagonal_at is None:
                self.nonzero_loop(body, coordinates, "")
            else:
                before, rest = body[:diagonal_at], body[diagonal_at + 1:]
                column = self.param_names[Param("coords", 1)]
                w.line("# Rows are sorted and canonical (row <= column): the diagonal entry is first.")
                with w.block(f"if {start} < {stop} and {column}[{start}] == {row}:  # {self.peel.labels[1]}"):
                    w.line(f"{p} = {start}")
                    coordinates()
                    self.class_value = 1
                    self.block(specialize(before + rest, self.peel, 1, self.reduce.idempotent))
                    w.line(f"{start} += 1")
                off_diagonal = specialize(before + rest, self.peel, 0, self.reduce.idempotent)
                self.class_value = 0
                self.nonzero_loop(off_diagonal, coordinates, f"  # {self.peel.labels[0]}")
                self.class_value = None
            self.flush_registers(nonzeros_key)
        self.flush_registers(rows_key)

    def nonzero_loop(self, body: tuple, coordinates, comment: str) -> None:
        """The loop over one CSR row's nonzeros. An update into a register opened outside it whose
        product has factors fixed along the row (x[i], a constant factor) sums the other factors
        in a row register and multiplies once after the loop: x_i * sum_j (A_ij * x_j). The
        product is taken only if the loop ran (an empty row adds nothing, not inf * 0)."""
        w, p, start, stop = self.w, self.position, self.start, self.stop
        rows, body = self.factor_row_invariants(body)
        for name in rows:
            w.line(f"{name} = {_literal(self.reduce.identity)}")
            self.live[Access(name, ())] = name
        with w.block(f"for {p} in range({start}, {stop}):{comment}"):
            coordinates()
            self.block(body)
        for name, (output, invariant) in rows.items():
            del self.live[Access(name, ())]
            with w.block(f"if {stop} > {start}:"):
                self.accumulate(self.live[output], f"{self.expr(_product(invariant))} * {name}")

    def factor_row_invariants(self, body: tuple) -> tuple[dict, tuple]:
        """({row register: (output, invariant factors)}, the body accumulating into them)."""
        if self.reduce.name != "add":
            return {}, body
        rows: dict[str, tuple[Access, tuple]] = {}
        rewritten = []
        for stmt in body:
            # (not a guarded update: a row whose terms were all skipped would give invariant * 0)
            if isinstance(stmt, Update) and stmt.output in self.live and not isinstance(stmt.factor, Ref | Factor) \
                    and not stmt.when:
                value = stmt.value
                factors = list(value.args) if isinstance(value, Call) and value.op == "mul" else [value]
                if stmt.factor is not None:
                    factors.insert(0, stmt.factor)
                invariant = tuple(f for f in factors if isinstance(f, Literal)
                                  or (isinstance(f, Ref) and f.name in self.emitted))
                variant = [f for f in factors if f not in invariant]
                if invariant and variant:
                    key = (stmt.output, invariant)
                    if key not in self.row_registers:
                        self.row_registers[key] = self.names.fresh(f"{stmt.output.tensor}_row")
                    name = self.row_registers[key]
                    rows[name] = key
                    rewritten.append(Update(Access(name, ()), stmt.reduce, _product(variant), None))
                    continue
            rewritten.append(stmt)
        return rows, tuple(rewritten)

    def update(self, update: Update) -> None:
        if update.when:  # an unstored sparse factor: the term contributes nothing (not 0 * inf)
            test = " and ".join(f"{self.expr(c)} != 0" for c in update.when)
            with self.w.block(f"if {test}:"):
                self.scaled_update(update)
        else:
            self.scaled_update(update)

    def scaled_update(self, update: Update) -> None:
        local = self.live.get(update.output)
        value = self.expr(update.value)
        factor = update.factor

        def write(scaled: str) -> None:
            if local:
                self.accumulate(local, scaled)
            else:
                self.write(update.output, scaled)

        if isinstance(factor, Factor | Ref):  # a table lookup (the table was not peeled)
            f = self.expr(factor)
            with self.w.block(f"if {f} != 0:"):  # a zero factor skips the update: 0 * inf is not 0
                write(value if self.reduce.idempotent else f"{f} * {value}")
        else:
            write(value if factor is None or self.reduce.idempotent else f"{self.expr(factor)} * {value}")

    def accumulate(self, target: str, value: str) -> None:
        if self.reduce.infix:
            self.w.line(f"{target} {self.reduce.symbol}= {value}")
        else:
            self.w.line(f"{target} = {self.reduce.numba_call(target, value)}")

    # -- the module -------------------------------------------------------------------------
    @functools.cached_property
    def _outer_lets(self) -> set[str]:
        """Lets bound outside every loop (read once per call)."""
        return {s.name for s in unnest(self.program.body)[0].stmts if isinstance(s, Let)}

    def touched_rows_function(self) -> list[str]:
        """Source of `touched_rows(chunk, ...)`: the output rows [lo, hi) chunk `chunk` writes.
        Chunk 0's buffer is the result, so it covers every row."""
        bounds, partial = self.param_names[Param("bounds")], self.param_names[Param("partial")]
        loop = sparse_loop(self.program)
        from_lead, to_lead = touched_rows_rule(self.program)
        lines = ["@numba.njit(cache=True, nogil=True, inline=\"always\")",
                 f"def touched_rows(chunk, {bounds}, lead, {partial}):"]
        if not from_lead:
            return [*lines, f"    return 0, {partial}.shape[1]"]
        lines += ["    if chunk == 0:", f"        return 0, {partial}.shape[1]"]
        end = f"{partial}.shape[1]"
        if loop.format.row_pointers:
            if to_lead:
                end = f"{bounds}[chunk + 1]"
            return [*lines, f"    return {bounds}[chunk], {end}"]
        if to_lead:
            end = f"lead[{bounds}[chunk + 1] - 1] + 1"
        return [*lines,
                f"    if {bounds}[chunk] >= {bounds}[chunk + 1]:",
                "        return 0, 0",
                f"    return lead[{bounds}[chunk]], {end}"]

    def lead_argument(self) -> str:
        """The array `touched_rows` reads a chunk's first leading coordinate from."""
        loop = sparse_loop(self.program)
        lead = loop.format.lead_array(len(loop.indices)) if loop is not None else None
        return self.param_names[Param(*lead)] if lead is not None else self.param_names[Param("bounds")]

    def emit(self) -> str:
        w, program = self.w, self.program
        w.line(f"# Generated by systec_gpu {__version__} (numba backend). Do not edit.")
        w.line("#")
        for line in format_loop_program(program).splitlines():
            w.line(f"# {line}")
        w.line("import numba")
        w.line("import numpy as np  # noqa: F401")
        w.line()
        w.line(f"MIRRORS_OUTPUT = {self.mirrored or self.mirror_at_update}  # the kernel writes both halves "
               "of the symmetric output")
        w.line()
        w.line()
        for line in self.touched_rows_function():
            w.line(line)
        args = ", ".join(self.param_names[p] for p in self.params)
        w.line()
        w.line()
        w.line("# One chunk's work, in a function of its own that both kernels call: LLVM optimizes its")
        w.line("# loops over an output row block it is handed (7-10% faster on the 2-core VM than the same")
        w.line("# loops inlined under the chunks' loop, where the block is a view made inside it).")
        w.line("@numba.njit(cache=True, nogil=True)")
        self.first_loop = True
        self.emitted = set()
        with w.block(f"def chunk_kernel({self.acc}, {self.chunk_arguments}):"):
            self.block(self.program.body.body)
        # Two functions, not two dispatchers of one: numba's disk cache is keyed by function name.
        for name, decorator, loop in (
            # No fusion: numba would fuse the chunks' loop and the combine (both over n_chunks)
            # into one, and a thread would combine a chunk another thread is still writing.
            ("kernel", '@numba.njit(parallel={"fusion": False}, cache=True, nogil=True)', "numba.prange"),
            ("kernel_serial", "@numba.njit(cache=True, nogil=True)", "range"),
        ):
            w.line()
            w.line()
            if name == "kernel_serial":
                w.line("# Small inputs: starting the thread pool costs more than the work.")
            w.line(decorator)
            with w.block(f"def {name}({args}):"):
                self.function_body(loop)
        return w.text()

    @functools.cached_property
    def chunk_arguments(self) -> str:
        """chunk_kernel's parameters after its output block: the chunk, the kernel's other parameters."""
        partial = Param("partial")
        return ", ".join([self.chunk, *(self.param_names[p] for p in self.params if p != partial)])

    @functools.cached_property
    def locals(self) -> tuple[str, ...]:
        """Names of the chunk and combine bookkeeping (the same in both functions)."""
        return tuple(self.names.fresh(x) for x in ("flat", "row_size", "rows", "cell", "lo", "hi", "first",
                                                   "last", "part", "other", "r", "c", "e", "r0", "r1", "c0", "c1"))

    def function_body(self, loop: str) -> None:
        """Chunks into their partial outputs (each initialized by its thread over the rows it
        touches), then the parallel combine into partial[0] (and the mirror of a symmetric
        output), each thread over its own rows."""
        w = self.w
        chunks = self.param_names[Param("chunks")]
        partial, bounds = self.param_names[Param("partial")], self.param_names[Param("bounds")]
        lead = self.lead_argument()
        flat, row_size, rows, cell, lo, hi, first, last, part, other, r, c, e, r0, r1, c0, c1 = self.locals
        identity = _literal(self.reduce.identity)
        w.line(f"{rows} = {partial}.shape[1]")
        w.line(f"{flat} = {partial}.reshape(({chunks}, {partial}.size // {chunks}))")
        w.line(f"{row_size} = {flat}.shape[1] // max({rows}, 1)")
        if self.mirrored:
            w.line(f"{cell} = {row_size} // max({partial}.shape[2], 1)  # one (row, column) cell")
        with w.block(f"for {self.chunk} in {loop}({chunks}):"):
            if self.reduce.identity != 0.0:  # zeros come from np.zeros (fresh pages are zero)
                w.line(f"{lo}, {hi} = touched_rows({self.chunk}, {bounds}, {lead}, {partial})")
                if self.mirrored:
                    with w.block(f"for {r} in range({lo}, {hi}):  # canonical part: columns >= row"):
                        w.line(f"{flat}[{self.chunk}, {r} * {row_size} + {r} * {cell}:({r} + 1) * {row_size}] = "
                               f"{identity}")
                else:
                    w.line(f"{flat}[{self.chunk}, {lo} * {row_size}:{hi} * {row_size}] = {identity}")
            w.line(f"chunk_kernel({partial}[{self.chunk}], {self.chunk_arguments})")
        if not self.mirrored:
            w.line("# Combine the chunks into partial[0], each over the rows it touched.")
            with w.block(f"for {part} in {loop}({chunks} if {chunks} > 1 else 0):"):
                w.line(f"{first} = {rows} * {part} // {chunks}")
                w.line(f"{last} = {rows} * ({part} + 1) // {chunks}")
                with w.block(f"for {other} in range(1, {chunks}):"):
                    w.line(f"{lo}, {hi} = touched_rows({other}, {bounds}, {lead}, {partial})")
                    w.line(f"{lo}, {hi} = max({lo}, {first}), min({hi}, {last})")
                    with w.block(f"for {e} in range({lo} * {row_size}, {hi} * {row_size}):"):
                        self.accumulate(f"{flat}[0, {e}]", f"{flat}[{other}, {e}]")
            return
        w.line("# Combine the chunks' canonical parts into partial[0], then copy them to the other")
        w.line(f"# half: blocks of {MIRROR_BLOCK} rows dealt cyclically (the triangle balances), each")
        w.line(f"# copied {MIRROR_BLOCK} x {MIRROR_BLOCK} cells at a time (a blocked transpose: both sides in cache).")
        with (w.block(f"for {part} in {loop}({chunks}):"),
              w.block(f"for {r0} in range({part} * {MIRROR_BLOCK}, {rows}, {chunks} * {MIRROR_BLOCK}):")):
            w.line(f"{r1} = min({r0} + {MIRROR_BLOCK}, {rows})")
            with w.block(f"for {other} in range(1, {chunks}):"):
                w.line(f"{lo}, {hi} = touched_rows({other}, {bounds}, {lead}, {partial})")
                with (w.block(f"for {r} in range(max({r0}, {lo}), min({r1}, {hi})):"),
                      w.block(f"for {e} in range({r} * {row_size} + {r} * {cell}, ({r} + 1) * {row_size}):")):
                    self.accumulate(f"{flat}[0, {e}]", f"{flat}[{other}, {e}]")
            with w.block(f"for {c0} in range({r0}, {rows}, {MIRROR_BLOCK}):"):
                w.line(f"{c1} = min({c0} + {MIRROR_BLOCK}, {rows})")
                with (w.block(f"for {c} in range({c0}, {c1}):"), w.block(f"for {r} in range({r0}, min({r1}, {c})):"),
                      w.block(f"for {e} in range({cell}):")):
                    w.line(f"{flat}[0, {c} * {row_size} + {r} * {cell} + {e}] = "
                           f"{flat}[0, {r} * {row_size} + {c} * {cell} + {e}]")


@functools.lru_cache(maxsize=256)
def numba_parameters(program: LoopProgram) -> tuple[Param, ...]:
    """The kernel's parameters: a peeled factor table is not one (its factors are constants)."""
    peeled = class_peel(program) is not None
    return tuple(p for p in kernel_parameters(program) if not (peeled and p.kind == "table"))


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


def _allocate(args, program: LoopProgram, chunks: int, single: bool) -> None:
    """Chunk bounds and the per-chunk buffers. Zero-filled for `+=` (np.zeros: a large buffer is
    fresh pages, zero without a memset, and the rows nobody touches are never paged in);
    otherwise uninitialized, each chunk's thread filling the rows it touches with the identity."""
    if single:
        chunks = 1  # no loop at all: nothing to share
    args.chunks = chunks
    loop = sparse_loop(program)
    if args.driver is None:
        args.bounds = np.zeros(chunks + 1, np.int64)
    else:  # in the positions of the format's outermost level (nonzeros, rows, CSF roots)
        args.bounds = loop.format.chunk_bounds(args.driver, chunks) if loop is not None else \
            args.driver.chunk_bounds(chunks)
    make = np.zeros if algebra.operator(program.reduce).identity == 0.0 else np.empty
    args.partial = make((chunks, *args.out_shape), dtype=args.dtype)


@functools.lru_cache(maxsize=256)
def _launcher(program: LoopProgram):
    """(generated module, its parameters): looked up once per program, not per call."""
    return numba_module(program), numba_parameters(program)


def run_numba(program: LoopProgram, args, threads: int | None = None) -> None:
    """Run `program` on `args`, in parallel chunks unless the work is small (or `threads` == 1)."""
    prepare_numba(program)(program, args, threads)


@functools.lru_cache(maxsize=256)
def prepare_numba(program: LoopProgram):
    """run_numba for one program with everything that does not depend on the data looked up once:
    the generated module, its parameter list, whether it has a loop to split (a prepared launch
    calls it on every call). A COO driver that the CPU reads as CSF where CSF reads fewer bytes
    (formats/choice.py) has both kernels; each call runs the one its driver's structure picks."""
    variant = fiber_variant(program)
    if variant is None:
        return _prepare_as_stored(program)
    as_coo, as_csf = _prepare_as_stored(program), _prepare_as_stored(variant)

    def run(_program: LoopProgram, args, threads: int | None = None) -> None:
        if read_as(program, args.driver) is variant:
            as_csf(variant, args, threads)
        else:
            as_coo(program, args, threads)

    return run


def _prepare_as_stored(program: LoopProgram):
    """prepare_numba for a program whose driver is read in its own format."""
    module, params = _launcher(program)
    single = sparse_loop(program) is None and not has_loops(program)

    def run(_program: LoopProgram, args, threads: int | None = None) -> None:
        # one thread (asked for, or numba.set_num_threads(1)) runs the serial kernel: the parallel
        # one on a single chunk still pays numba's thread-pool launch
        asked, threads = threads, threads or num_threads()
        serial = single or threads == 1 or (asked is None and estimated_points(program, args) < SERIAL_BELOW)
        # numba's workqueue threading layer (where neither OpenMP nor TBB loads) aborts the process
        # on parallel kernels launched from two threads at once: until the layer is known to be
        # another, one call runs in parallel and the others serially, each in its own thread.
        guard = not serial and _THREADING_LAYER[0] in (None, "workqueue")
        if guard and not _PARALLEL_LOCK.acquire(blocking=False):
            serial, guard = True, False
        try:
            _allocate(args, program, 1 if serial else threads, single)
            kernel = module.kernel_serial if serial else module.kernel
            kernel(*argument_values(params, args))
            if not serial and _THREADING_LAYER[0] is None:
                _THREADING_LAYER[0] = numba.threading_layer()
        finally:
            if guard:
                _PARALLEL_LOCK.release()
        args.partial = args.partial[:1]  # the kernel combined the chunks into partial[0]
        args.output_mirrored = module.MIRRORS_OUTPUT

    return run


def specialize_numba(program: LoopProgram, args):
    """A run for the calls bound like `args` (one input signature: runtime.Launch prepares it):
    what `prepare_numba`'s run decides per call from the program and the sizes is decided here
    once (the program a COO driver is read as, serial or parallel, the chunk bounds per thread
    count), and the generated function's argument list is made once per thread count, only the
    output buffer, the sparse values and the dense operands put in per call. The thread count is
    read per call (numba.set_num_threads may change it between calls)."""
    program = read_as(program, args.driver)  # the structure is the signature's: so is this choice
    module, params = _launcher(program)
    single = sparse_loop(program) is None and not has_loops(program)
    serial_only = single or estimated_points(program, args) < SERIAL_BELOW
    out_shape, dtype = tuple(args.out_shape), args.dtype
    partial_at = next(k for k, p in enumerate(params) if p.kind == "partial")
    values_at = next((k for k, p in enumerate(params) if p.kind == "values"), None)
    dense_at = tuple((k, p.key) for k, p in enumerate(params) if p.kind == "dense")
    kernel_serial, kernel_parallel, mirrors = module.kernel_serial, module.kernel, module.MIRRORS_OUTPUT
    zeros = algebra.operator(program.reduce).identity == 0.0  # `+=`: the chunks accumulate into zeros
    make = np.zeros if zeros else np.empty
    loop = sparse_loop(program)
    # the signature's arguments without this call's arrays (a prepared run holds no user data)
    driver = None if args.driver is None else DriverArrays(args.driver.structure, None)
    stub = dataclasses.replace(args, dense=dict.fromkeys(args.dense), driver=driver, partial=None)
    templates: dict[int, tuple] = {}  # chunks -> (bounds, argument list without the per-call values)

    def template(chunks: int) -> tuple:
        found = templates.get(chunks)
        if found is None:
            if driver is None:
                bounds = np.zeros(chunks + 1, np.int64)
            else:
                bounds = loop.format.chunk_bounds(driver, chunks) if loop is not None else driver.chunk_bounds(chunks)
            values = argument_values(params, dataclasses.replace(stub, bounds=bounds, chunks=chunks))
            found = templates[chunks] = (bounds, values)
        return found

    template(1)

    def call(args, chunks: int, kernel) -> None:
        bounds, values = template(chunks)
        partial = make((chunks, *out_shape), dtype)
        values = values.copy()
        values[partial_at] = partial
        if values_at is not None:
            values[values_at] = args.driver.values
        dense = args.dense
        for k, name in dense_at:
            values[k] = dense[name]
        kernel(*values)
        # the kernel combined the chunks into partial[0]
        args.partial = partial if chunks == 1 else partial[:1]
        args.chunks, args.bounds, args.output_mirrored = chunks, bounds, mirrors

    if serial_only:
        return lambda args: call(args, 1, kernel_serial)

    def run(args) -> None:
        threads = num_threads()
        if threads == 1:
            call(args, 1, kernel_serial)
            return
        guard = _THREADING_LAYER[0] in (None, "workqueue")  # see _prepare_as_stored
        if guard and not _PARALLEL_LOCK.acquire(blocking=False):
            call(args, 1, kernel_serial)
            return
        try:
            call(args, threads, kernel_parallel)
            if _THREADING_LAYER[0] is None:
                _THREADING_LAYER[0] = numba.threading_layer()
        finally:
            if guard:
                _PARALLEL_LOCK.release()

    return run


def num_threads() -> int:
    """numba.get_num_threads(), without the two locks it takes on every call once numba's thread
    pool is up (a few microseconds of a repeat call on a busy core): numba's own getter of the
    calling thread's count, read from the module that set it up (numba.np.ufunc.parallel); the
    public function until then, or if a numba release moves it."""
    if getattr(_numba_parallel, "_is_initialized", False):
        getter = getattr(_numba_parallel, "_get_num_threads", None)
        count = getter() if getter is not None else 0
        if count > 0:
            return count
    return numba.get_num_threads()  # raises where numba's own count is broken


_PARALLEL_LOCK = threading.Lock()
_THREADING_LAYER: list[str | None] = [None]  # numba's, once a parallel kernel has run
