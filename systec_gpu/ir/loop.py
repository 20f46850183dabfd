"""Loop-level IR: the symmetrized program as loops, let-bindings and table-driven updates.

Expressions reuse the einsum nodes (`Access` = a dense read, `Literal`, `Call`) and add
`DriverValue` (the value of the sparse nonzero being visited), `Ref` (a let-bound scalar),
`ClassOf` (the diagonal-class row of the current point), `Factor` (a lookup-table entry),
`Stored` (whether a sparse operand read densely stores the entry read: an update's guard) and
`Select` (a product that is only a term of the update, or the semiring's zero where one of its
sparse factors is unstored).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Union

from .. import algebra
from ..formats import StorageFormat
from .einsum import Access, Call, Index, Literal


@dataclass(frozen=True)
class Extent:
    """The size of mode `mode` of `tensor` (in the tensor's own, user-facing mode order)."""

    tensor: str
    mode: int

    def __str__(self) -> str:
        return f"{self.tensor}.shape[{self.mode}]"


@dataclass(frozen=True)
class DriverValue:
    tensor: str

    def __str__(self) -> str:
        return f"{self.tensor}.value"


@dataclass(frozen=True)
class Ref:
    name: str

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class ClassOf:
    """Row of the multiplicity table: bit (offset + t) set iff chain[t] == chain[t+1]."""

    chains: tuple[tuple[Index, ...], ...]


@dataclass(frozen=True)
class Factor:
    table: str
    row: LExpr
    column: int


@dataclass(frozen=True)
class Stored:
    """Whether the sparse operand `access.tensor` stores the entry `access` reads (it is read
    densely, and holds its fill value where it stores nothing): 1 or 0."""

    access: Access

    def __str__(self) -> str:
        return f"stored({self.access})"


@dataclass(frozen=True)
class Select:
    """`value` where every condition of `when` holds (a `Stored`, or a let bound to one), else
    `otherwise` (a literal: the semiring's zero). A call whose operator that zero annihilates
    (a product under `+=`), with a sparse factor read densely, that is not the whole update but
    one term of it (`A[i,j]*x[j] + B[i,j]`): where the factor is unstored the call is the zero,
    whatever its other arguments hold (not `0 * inf`)."""

    when: tuple[LExpr, ...]
    value: LExpr
    otherwise: Literal


LExpr = Union[Access, Literal, Call, DriverValue, Ref, ClassOf, Factor, Stored, Select]  # noqa: UP007


@dataclass(frozen=True)
class Let:
    name: str
    value: LExpr


@dataclass(frozen=True)
class Update:
    """output[indices] = reduce(output[indices], factor-times value), where every `when` holds.

    `when`: the membership (`Stored`, or a let bound to one) of each sparse operand that is a
    factor of the value but read densely: where one is not stored the term contributes nothing,
    whatever the other factors hold (no `0 * inf`), as where a sparse loop never visits it."""

    output: Access
    reduce: str  # algebra operator name of the reduction
    value: LExpr
    factor: LExpr | None  # None: exactly once
    when: tuple[LExpr, ...] = ()


@dataclass(frozen=True)
class Block:
    body: tuple[Stmt, ...]


@dataclass(frozen=True)
class SparseLoop:
    """Visit the stored nonzeros of `tensor`, binding `indices` (the access's indices).

    `expanded`: visit every permutation of each canonical nonzero (the tensor's symmetry is
    not exploited); otherwise only the canonical ones. `format`: how the nonzeros are stored and
    walked (a formats/ object: COO, CSR, CSF), printed by its spelling.
    """

    tensor: str
    indices: tuple[Index, ...]
    expanded: bool
    format: StorageFormat
    body: Block


@dataclass(frozen=True)
class DenseLoop:
    """for index in [lower or 0, upper or extent - 1] (both bounds inclusive)."""

    index: Index
    extent: Extent
    lower: Index | None
    upper: Index | None
    body: Block


@dataclass(frozen=True)
class Guard:
    """Run `body` only where lhs <= rhs (a canonical-order filter the loops cannot express)."""

    lhs: Index
    rhs: Index
    body: Block


Stmt = Union[Let, Update, Block, SparseLoop, DenseLoop, Guard]  # noqa: UP007


@dataclass(frozen=True)
class Table:
    name: str
    rows: tuple[tuple[int, ...], ...]
    labels: tuple[str, ...]  # a readable name of each row (the diagonal class)


@dataclass(frozen=True)
class LoopProgram:
    source: str  # the einsum, for humans
    output: Access  # in kernel layout (see layouts)
    output_shape: tuple[Extent, ...]  # sizes of the output's modes, user-facing order
    reduce: str  # reduction operator name
    output_groups: tuple[tuple[int, ...], ...]  # canonical part only: mirror after the kernel
    tables: tuple[Table, ...]
    body: Block
    layouts: tuple[tuple[str, tuple[int, ...]], ...] = ()  # tensor -> mode permutation
    dense_inputs: tuple[str, ...] = ()  # tensors read densely (order of first read)
    driver: str | None = None  # the sparse tensor iterated by the outer loop
    sets: tuple[tuple[Index, ...], ...] = ()  # permutable sets (canonical order); extents equal
    symmetric_inputs: tuple[tuple[str, tuple[tuple[int, ...], ...]], ...] = ()
    notes: tuple[str, ...] = ()  # decisions and refusals of the passes, with reasons
    # sparse tensors read densely whose membership guards updates (`Stored`): a mask of their
    # stored entries is bound beside their values (order of first read)
    stored_inputs: tuple[str, ...] = ()

    def __hash__(self) -> int:
        # Structural, computed once: backends memoize generated code on the program.
        cached = self.__dict__.get("_structural_hash")
        if cached is None:
            cached = hash(tuple(getattr(self, f.name) for f in dataclasses.fields(self)))
            object.__setattr__(self, "_structural_hash", cached)
        return cached

    def layout_of(self, tensor: str) -> tuple[int, ...] | None:
        return dict(self.layouts).get(tensor)


# ---------------------------------------------------------------------------------------------
# Printer


def format_lexpr(expr: LExpr) -> str:
    match expr:
        case Access() | Literal() | DriverValue() | Ref() | Stored():
            return str(expr)
        case ClassOf(chains=chains):
            flags = ", ".join(f"{a}=={b}" for chain in chains for a, b in zip(chain, chain[1:], strict=False))
            return f"class({flags})"
        case Factor(table=table, row=row, column=column):
            return f"{table}[{format_lexpr(row)}, {column}]"
        case Call(op=op, args=args):
            info = algebra.operator(op)
            if info.infix:
                return "(" + f" {info.symbol} ".join(format_lexpr(a) for a in args) + ")"
            return f"{info.symbol}({', '.join(format_lexpr(a) for a in args)})"
        case Select(when=when, value=value, otherwise=otherwise):
            test = " and ".join(format_lexpr(c) for c in when)
            return f"({format_lexpr(value)} if {test} else {format_lexpr(otherwise)})"
    raise TypeError(f"not a loop expression: {expr!r}")


def _format_stmt(stmt: Stmt, depth: int, lines: list[str]) -> None:
    pad = "  " * depth
    match stmt:
        case Block(body=body):
            for s in body:
                _format_stmt(s, depth, lines)
        case Let(name=name, value=value):
            lines.append(f"{pad}{name} = {format_lexpr(value)}")
        case Update(output=out, reduce=reduce, value=value, factor=factor, when=when):
            info = algebra.operator(reduce)
            scaled = format_lexpr(value)
            if factor is not None:
                how = "if" if info.idempotent else "times"
                scaled = f"{scaled}  {how} {format_lexpr(factor)}"
            if when:
                scaled = f"{scaled}  where {' and '.join(format_lexpr(c) for c in when)}"
            lines.append(f"{pad}{out} {info.symbol}= {scaled}" if info.infix
                         else f"{pad}{out} {info.symbol}= {scaled}")
        case SparseLoop(tensor=t, indices=idx, expanded=expanded, format=fmt, body=body):
            which = "all (expanded)" if expanded else "canonical"
            lines.append(f"{pad}for ({', '.join(map(str, idx))}) in {which} nonzeros of {t} [{fmt}]:")
            _format_stmt(body, depth + 1, lines)
        case DenseLoop(index=i, extent=ext, lower=lo, upper=hi, body=body):
            start = lo.name if lo else "0"
            stop = hi.name if hi else f"{ext} - 1"
            lines.append(f"{pad}for {i} in {start}..{stop}:")
            _format_stmt(body, depth + 1, lines)
        case Guard(lhs=a, rhs=b, body=body):
            lines.append(f"{pad}if {a} <= {b}:")
            _format_stmt(body, depth + 1, lines)
        case _:
            raise TypeError(f"not a loop statement: {stmt!r}")


def format_loop_program(program: LoopProgram) -> str:
    lines = [f"kernel for {program.source}"]
    lines += [f"  note: {note}" for note in program.notes]
    for tensor, perm in program.layouts:
        lines.append(f"  layout {tensor}: modes {perm} (contiguous innermost loop)")
    if program.output_groups:
        groups = ", ".join(map(str, program.output_groups))
        lines.append(f"  output {program.output.tensor}: canonical part of groups {groups}, mirrored after")
    _format_stmt(program.body, 1, lines)
    for table in program.tables:
        lines.append(f"  table {table.name} (row: factors of the updates in order):")
        for label, row in zip(table.labels, table.rows, strict=True):
            lines.append(f"    {label:<24} {' '.join(str(f) for f in row)}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Verifier


class LoopIRError(ValueError):
    """A loop-IR invariant does not hold; the message names the bad node."""


def verify_loops(program: LoopProgram) -> LoopProgram:
    tables = {t.name: t for t in program.tables}

    def check_expr(expr, bound: set[Index], names: set[str]) -> None:
        match expr:
            case Access(indices=idx):
                for i in idx:
                    if i not in bound:
                        raise LoopIRError(f"index {i} of {expr} is read outside any loop binding it")
            case Ref(name=name):
                if name not in names:
                    raise LoopIRError(f"{name} is used before it is bound")
            case ClassOf(chains=chains):
                for i in (i for c in chains for i in c):
                    if i not in bound:
                        raise LoopIRError(f"class of unbound index {i}")
            case Factor(table=t, row=row, column=column):
                if t not in tables or not 0 <= column < len(tables[t].rows[0]):
                    raise LoopIRError(f"bad table reference {format_lexpr(expr)}")
                check_expr(row, bound, names)
            case Stored(access=access):
                if access.tensor not in program.stored_inputs:
                    raise LoopIRError(f"{expr}: {access.tensor} is not among the stored inputs (no mask is bound)")
                check_expr(access, bound, names)
            case Call(args=args):
                for a in args:
                    check_expr(a, bound, names)
            case Select(when=when, value=value, otherwise=otherwise):
                if not when:
                    raise LoopIRError(f"{format_lexpr(expr)}: a select without a condition")
                for condition in when:
                    if not isinstance(condition, Stored | Ref):
                        raise LoopIRError(f"{format_lexpr(expr)}: condition {format_lexpr(condition)} is not "
                                          "the membership of a sparse read")
                    check_expr(condition, bound, names)
                zero = algebra.operator(program.reduce).identity
                if not isinstance(otherwise, Literal) or otherwise.value != zero:
                    raise LoopIRError(f"{format_lexpr(expr)}: where a factor is unstored the value must be "
                                      f"{zero!r}, the identity of the reduction")
                check_expr(value, bound, names)

    def check(stmt, bound: set[Index], names: set[str]) -> None:
        match stmt:
            case Block(body=body):
                inner = set(names)
                for s in body:
                    check(s, bound, inner)
                    if isinstance(s, Let):
                        if s.name in inner:
                            raise LoopIRError(f"{s.name} is bound twice")
                        inner.add(s.name)
            case Let(value=value):
                check_expr(value, bound, names)
            case Update(output=out, value=value, factor=factor, when=when):
                check_expr(out, bound, names)
                check_expr(value, bound, names)
                if factor is not None:
                    check_expr(factor, bound, names)
                for condition in when:
                    check_expr(condition, bound, names)
            case SparseLoop(indices=idx, body=body):
                check(body, bound | set(idx), names)
            case DenseLoop(index=i, lower=lo, upper=hi, body=body):
                if i in bound:
                    raise LoopIRError(f"loop over {i} is nested in a loop over {i}")
                for b in (lo, hi):
                    if b is not None and b not in bound:
                        raise LoopIRError(f"bound {b} of the loop over {i} is not bound outside it")
                check(body, bound | {i}, names)
            case Guard(lhs=a, rhs=b, body=body):
                if a not in bound or b not in bound:
                    raise LoopIRError(f"guard {a} <= {b} uses an unbound index")
                check(body, bound, names)

    check(program.body, set(), set())
    return program
