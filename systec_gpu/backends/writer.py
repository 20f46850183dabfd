"""An indented source writer and a namer with deterministic fresh names."""

from __future__ import annotations

import builtins
import keyword
from collections.abc import Callable
from contextlib import contextmanager

from .. import algebra


class CodeWriter:
    def __init__(self, indent: str = "    "):
        self.lines: list[str] = []
        self.depth = 0
        self.unit = indent

    def line(self, text: str = "") -> None:
        self.lines.append(f"{self.unit * self.depth}{text}" if text else "")

    @contextmanager
    def block(self, header: str):
        self.line(header)
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


class Namer:
    """Maps user identifiers to safe Python names and hands out fresh ones, in call order."""

    def __init__(self, reserved: tuple[str, ...] = ()):
        self.taken: set[str] = set(reserved)
        self.user_names: dict[tuple[str, str], str] = {}

    def _unique(self, base: str) -> str:
        name, n = base, 0
        while name in self.taken or keyword.iskeyword(name) or hasattr(builtins, name):
            n += 1
            name = f"{base}_{n}"
        self.taken.add(name)
        return name

    def user(self, kind: str, identifier: str) -> str:
        """The same safe name for the same (kind, identifier), every time: a tensor and an
        index may share a spelling in the expression but never in the generated code."""
        key = (kind, identifier)
        if key not in self.user_names:
            self.user_names[key] = self._unique(identifier)
        return self.user_names[key]

    def fresh(self, base: str) -> str:
        return self._unique(base)


def format_call(op: str, parts: list[str], combine: Callable[[algebra.Operator, str, str], str]) -> str:
    """`op` applied to printed operands: infix operators inline, others as nested binary calls
    spelled by `combine` (a backend's spelling from the algebra table, e.g. `tl.minimum(a, b)`)."""
    info = algebra.operator(op)
    if info.infix:
        return "(" + f" {info.symbol} ".join(parts) + ")"
    text = parts[0]
    for part in parts[1:]:
        text = combine(info, text, part)
    return text


def format_class_row(chains, index, equal: str = "({a} == {b})") -> str:
    """The diagonal-class row of a point: bit t of each chain set iff its t-th neighbours are
    equal. `index` prints an index; `equal` formats one comparison as an integer."""
    terms, bit = [], 0
    for chain in chains:
        for a, b in zip(chain, chain[1:], strict=False):
            terms.append(f"{equal.format(a=index(a), b=index(b))} * {1 << bit}")
            bit += 1
    return " + ".join(terms) if terms else "0"
