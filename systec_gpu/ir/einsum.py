"""Einsum-level IR: `C[i,j] += A[i,k] * B[k,j]` with symmetry and format declarations.

Nodes are frozen dataclasses with structural equality and tuple children. `sort_key` gives the
deterministic structural order that normalization and enumeration use (never hash() or id()).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from .. import algebra
from ..formats import DENSE, StorageFormat


@dataclass(frozen=True, order=True)
class Index:
    name: str

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class Access:
    tensor: str
    indices: tuple[Index, ...]

    def __str__(self) -> str:
        return f"{self.tensor}[{','.join(i.name for i in self.indices)}]"


@dataclass(frozen=True)
class Literal:
    value: float

    def __str__(self) -> str:
        return repr(self.value)


@dataclass(frozen=True)
class Call:
    op: str  # a name from algebra.OPERATORS
    args: tuple[Expr, ...]


Expr = Union[Access, Literal, Call]  # noqa: UP007 (a runtime alias used in isinstance-free code)


@dataclass(frozen=True)
class Einsum:
    """`output reduce= rhs`; `reduce` is the source symbol (`+=`, `min=`, `max=`); `values` the
    declared domain of the operands' values (algebra.DOMAINS), which picks the semiring."""

    output: Access
    reduce: str
    rhs: Expr
    values: str = "real"

    @property
    def semiring(self) -> algebra.Semiring:
        return algebra.semiring(self.reduce, self.values, self.rhs.op if isinstance(self.rhs, Call) else None)


@dataclass(frozen=True)
class Symmetry:
    """Tensor `tensor` is invariant under permutations within each mode group."""

    tensor: str
    groups: tuple[tuple[int, ...], ...]


@dataclass(frozen=True)
class Program:
    """An einsum plus what the user declared about its tensors (sorted by tensor name)."""

    einsum: Einsum
    symmetries: tuple[Symmetry, ...] = ()
    formats: tuple[tuple[str, StorageFormat], ...] = ()  # (tensor, its format: formats/)

    def groups_of(self, tensor: str) -> tuple[tuple[int, ...], ...]:
        for sym in self.symmetries:
            if sym.tensor == tensor:
                return sym.groups
        return ()

    def format_of(self, tensor: str) -> StorageFormat:
        return dict(self.formats).get(tensor, DENSE)


# ---------------------------------------------------------------------------------------------
# Queries


def accesses(expr: Expr) -> tuple[Access, ...]:
    """Accesses of an expression in left-to-right order."""
    match expr:
        case Access():
            return (expr,)
        case Literal():
            return ()
        case Call(args=args):
            return tuple(a for arg in args for a in accesses(arg))
    raise TypeError(f"not an einsum expression: {expr!r}")


def indices_of(einsum: Einsum) -> tuple[Index, ...]:
    """All indices in order of first appearance (output first, then right-hand side)."""
    seen: dict[Index, None] = {}
    for access in (einsum.output, *accesses(einsum.rhs)):
        for index in access.indices:
            seen.setdefault(index, None)
    return tuple(seen)


def tensors_of(einsum: Einsum) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for access in accesses(einsum.rhs):
        seen.setdefault(access.tensor, None)
    return tuple(seen)


def sort_key(expr: Expr) -> tuple:
    """A deterministic structural key (literals first, then accesses, then calls)."""
    match expr:
        case Literal(value=v):
            return (0, v)
        case Access(tensor=t, indices=idx):
            return (1, t, tuple(i.name for i in idx))
        case Call(op=op, args=args):
            return (2, op, tuple(sort_key(a) for a in args))
    raise TypeError(f"not an einsum expression: {expr!r}")


def substitute(expr, mapping: dict[Index, Index]):
    """Rename indices (simultaneously) in an expression or access."""
    match expr:
        case Access(tensor=t, indices=idx):
            return Access(t, tuple(mapping.get(i, i) for i in idx))
        case Literal():
            return expr
        case Call(op=op, args=args):
            return Call(op, tuple(substitute(a, mapping) for a in args))
    raise TypeError(f"not an einsum expression: {expr!r}")


# ---------------------------------------------------------------------------------------------
# Printer


def format_expr(expr: Expr) -> str:
    match expr:
        case Access() | Literal():
            return str(expr)
        case Call(op=op, args=args):
            info = algebra.operator(op)
            if info.infix:
                parts = [_parenthesized(a, op) for a in args]
                return f" {info.symbol} ".join(parts)
            return f"{info.symbol}({', '.join(format_expr(a) for a in args)})"
    raise TypeError(f"not an einsum expression: {expr!r}")


def _parenthesized(expr: Expr, parent_op: str) -> str:
    text = format_expr(expr)
    # `*` binds tighter than `+`: only a sum inside a product needs parentheses.
    if isinstance(expr, Call) and parent_op == "mul" and expr.op == "add":
        return f"({text})"
    return text


def format_einsum(einsum: Einsum) -> str:
    return f"{einsum.output} {einsum.reduce} {format_expr(einsum.rhs)}"


def format_program(program: Program) -> str:
    lines = [format_einsum(program.einsum)]
    if program.einsum.values != "real":
        lines.append(f"  values: {program.einsum.values} ({program.einsum.semiring})")
    for sym in program.symmetries:
        lines.append(f"  symmetric {sym.tensor}: {', '.join(map(str, sym.groups))}")
    for tensor, fmt in program.formats:
        if fmt.sparse:
            lines.append(f"  format {tensor}: {fmt}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Verifier


class IRError(ValueError):
    """An IR invariant does not hold; the message names the bad node."""


def verify(program: Program) -> Program:
    """Check the invariants of an einsum program; raise IRError naming the bad node."""
    einsum = program.einsum
    if einsum.reduce not in algebra.REDUCTIONS:
        raise IRError(f"unknown reduction {einsum.reduce!r} in {format_einsum(einsum)}")
    if einsum.values not in algebra.DOMAINS:
        raise IRError(f"unknown values {einsum.values!r} in {format_einsum(einsum)}; "
                      f"known: {', '.join(algebra.DOMAINS)}")
    arity: dict[str, int] = {}
    for access in (einsum.output, *accesses(einsum.rhs)):
        if not isinstance(access, Access) or not all(isinstance(i, Index) for i in access.indices):
            raise IRError(f"malformed access {access!r}")
        known = arity.setdefault(access.tensor, len(access.indices))
        if known != len(access.indices):
            raise IRError(f"tensor {access.tensor} used with {known} and {len(access.indices)} indices")
    for node in _calls(einsum.rhs):
        if node.op not in algebra.OPERATORS or len(node.args) < 2:
            raise IRError(f"bad call {node!r}")
    rhs_indices = {i for a in accesses(einsum.rhs) for i in a.indices}
    for index in einsum.output.indices:
        if index not in rhs_indices:
            raise IRError(f"output index {index} of {einsum.output} appears in no input")
    if len(set(einsum.output.indices)) != len(einsum.output.indices):
        raise IRError(f"output {einsum.output} repeats an index")
    if einsum.output.tensor in {a.tensor for a in accesses(einsum.rhs)}:
        raise IRError(f"output {einsum.output.tensor} is also an input")
    for sym in program.symmetries:
        if sym.tensor not in arity:
            raise IRError(f"symmetry declared for {sym.tensor}, which the expression does not use")
        for group in sym.groups:
            if len(group) < 2 or any(not 0 <= m < arity[sym.tensor] for m in group):
                raise IRError(f"bad symmetric group {group} for {sym.tensor}")
    check_semiring(program)
    return program


def check_semiring(program: Program) -> None:
    """Every sparse operand's unstored entries hold the semiring's zero (the reduction's identity
    over the declared values): refuse, naming the operators, where the operator binding the
    operand into its term neither is annihilated by that zero nor has it as identity (then
    skipping an unstored entry and reading it would disagree: (max, *) over real values)."""
    einsum = program.einsum
    try:
        ring = einsum.semiring
    except algebra.SemiringError as error:
        raise algebra.SemiringError(f"{format_einsum(einsum)}: {error}") from None
    for access, op in _bindings(einsum.rhs, None):
        if op is None or not program.format_of(access.tensor).sparse:
            continue
        reason = ring.binding_error(algebra.operator(op))
        if reason is not None:
            hint = algebra.semirings_hint(einsum.reduce, op)
            raise algebra.SemiringError(f"{format_einsum(einsum)}: {access.tensor} is sparse, and {reason}"
                                        + (f"; {hint}" if hint else "; read it densely (formats="
                                                                     f"{{{access.tensor!r}: 'dense'}})"))


def _bindings(expr: Expr, op: str | None):
    """(access, the operator of the call holding it, None at the top) of every access."""
    if isinstance(expr, Access):
        yield expr, op
    elif isinstance(expr, Call):
        for arg in expr.args:
            yield from _bindings(arg, expr.op)


def _calls(expr: Expr):
    if isinstance(expr, Call):
        yield expr
        for arg in expr.args:
            yield from _calls(arg)
