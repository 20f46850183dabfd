"""A program of several einsum statements: which tensors are inputs, intermediates and results.

`analyze(text, outputs)` parses the statements and checks the data flow, raising a caret error
(ProgramError, a ParseError) that points at the offending access:
- a tensor written by two statements;
- a tensor read before the statement that writes it (or in a cycle: read by a statement that
  the writer depends on, the writer itself included);
- a tensor used with different numbers of indices in two statements;
- a statement whose result is neither read later nor returned;
- `outputs=` naming a program input, or no tensor of the program.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..ir.einsum import Einsum, accesses, format_einsum
from .declare import DeclarationError
from .parser import ParsedStatement, ParseError, parse_statements


class ProgramError(ParseError):
    """The statements of a program do not form a valid data flow; the message points at the access."""


@dataclass(frozen=True)
class ProgramText:
    """A parsed, checked program. Tensors are listed in order of first appearance."""

    text: str
    statements: tuple[ParsedStatement, ...]
    inputs: tuple[str, ...]  # read, never written
    intermediates: tuple[str, ...]  # written by one statement, read by a later one
    outputs: tuple[str, ...]  # returned, in the order asked

    @property
    def einsums(self) -> tuple[Einsum, ...]:
        return tuple(s.einsum for s in self.statements)

    def producer(self, tensor: str) -> int | None:
        """Number (0-based) of the statement that writes `tensor`, or None for an input."""
        for number, statement in enumerate(self.statements):
            if statement.einsum.output.tensor == tensor:
                return number
        return None

    def consumers(self, tensor: str) -> tuple[int, ...]:
        return tuple(n for n, s in enumerate(self.statements) if any(t == tensor for t, _ in s.reads))

    def statement_text(self, number: int) -> str:
        return format_einsum(self.statements[number].einsum)


def _depends_on(statements: Sequence[ParsedStatement], later: int, earlier: int) -> bool:
    """Does statement `later` read (transitively) the output of statement `earlier`?"""
    writers = {s.einsum.output.tensor: n for n, s in enumerate(statements)}
    seen, todo = set(), [later]
    while todo:
        number = todo.pop()
        if number == earlier:
            return True
        if number in seen:
            continue
        seen.add(number)
        todo += [writers[t] for t, _ in statements[number].reads if t in writers]
    return False


def analyze(text: str, outputs: Sequence[str] | str | None = None) -> ProgramText:
    """Parse `text` (statements separated by ';' or line breaks) and check its data flow."""
    statements = parse_statements(text)
    written: dict[str, int] = {}
    for number, statement in enumerate(statements):
        name = statement.einsum.output.tensor
        if name in written:
            first = statements[written[name]]
            raise ProgramError(text, statement.output_at,
                               f"{name} is written twice (first by statement {written[name] + 1}, "
                               f"{format_einsum(first.einsum)}); write the second result to a new tensor")
        written[name] = number
    arity: dict[str, tuple[int, int]] = {}  # tensor -> (number of indices, statement first using it)
    for number, statement in enumerate(statements):
        uses = [(statement.einsum.output, statement.output_at)]
        uses += list(zip(accesses(statement.einsum.rhs), (at for _, at in statement.reads), strict=True))
        for access, at in uses:
            known = arity.setdefault(access.tensor, (len(access.indices), number))
            if known[0] != len(access.indices):
                raise ProgramError(text, at, f"{access.tensor} is used with {len(access.indices)} indices here "
                                             f"but with {known[0]} in statement {known[1] + 1}")
        for tensor, at in statement.reads:
            writer = written.get(tensor)
            if writer is None or writer < number:
                continue
            if writer == number or _depends_on(statements, writer, number):
                via = "the statement that writes it" if writer == number else f"statement {number + 1}, " \
                      f"which statement {writer + 1} (writing {tensor}) depends on"
                raise ProgramError(text, at, f"cycle: {tensor} is read by {via}")
            raise ProgramError(text, at, f"{tensor} is read before it is written (by statement {writer + 1}, "
                                         f"{format_einsum(statements[writer].einsum)}); put that statement first")

    order: dict[str, None] = {}
    for statement in statements:
        for tensor, _ in statement.reads:
            order.setdefault(tensor, None)
        order.setdefault(statement.einsum.output.tensor, None)
    read = {t for s in statements for t, _ in s.reads}
    inputs = tuple(t for t in order if t not in written)
    intermediates = tuple(t for t in order if t in written and t in read)

    if outputs is None:
        chosen: tuple[str, ...] = (statements[-1].einsum.output.tensor,)
    else:
        chosen = (outputs,) if isinstance(outputs, str) else tuple(outputs)
        if not chosen:
            raise DeclarationError("outputs= names no tensor: give at least one result, e.g. outputs=('y',)")
        for name in chosen:
            if not isinstance(name, str):
                raise DeclarationError(f"outputs= holds {name!r}: give tensor names (strings)")
            if name in inputs:
                first = next(at for s in statements for t, at in s.reads if t == name)
                raise ProgramError(text, first, f"outputs= names {name}, an input of the program (no statement "
                                                "writes it)")
            if name not in written:
                raise DeclarationError(f"outputs= names {name!r}, which no statement writes "
                                       f"(results: {', '.join(written)})")
        if len(set(chosen)) != len(chosen):
            raise DeclarationError(f"outputs= names a tensor twice: {chosen}")
    for number, statement in enumerate(statements):
        name = statement.einsum.output.tensor
        if name not in read and name not in chosen:
            raise ProgramError(text, statement.output_at,
                               f"{name} is written but neither read by a later statement nor returned; "
                               f"drop statement {number + 1} or name it in outputs=")
    return ProgramText(text, statements, inputs, intermediates, chosen)
