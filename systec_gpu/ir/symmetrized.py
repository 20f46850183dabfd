"""The symmetrized level: an einsum plus what the symmetry passes decided about it.

Each pass fills in the next fields of `Symmetrized` and returns a new value (pure, frozen).
"""

from __future__ import annotations

from dataclasses import dataclass

from .einsum import Access, Expr, Index, Program, format_expr


class SymmetryLimitError(ValueError):
    """Exploiting the symmetry would make the program too large to generate; the message names
    the index sets, their size and the limit, and what to do instead."""


@dataclass(frozen=True)
class PermutableSet:
    """Indices whose iteration is restricted to one canonical order.

    Values are nondecreasing along `indices` at every visited point; `origin` says why the set
    is permutable (a symmetric operand, output symmetry, or invisible symmetry).
    """

    indices: tuple[Index, ...]
    origin: str


@dataclass(frozen=True)
class DiagonalClass:
    """Which adjacent indices of each permutable set are equal (True) or strictly less (False)."""

    equal: tuple[tuple[bool, ...], ...]
    row: int  # row of the multiplicity table: bit (offset of set + t) set iff equal[set][t]

    def ranks(self, set_number: int) -> tuple[int, ...]:
        """Rank of each index of the set: equal neighbours share a rank."""
        ranks = [0]
        for equal in self.equal[set_number]:
            ranks.append(ranks[-1] + (0 if equal else 1))
        return tuple(ranks)


@dataclass(frozen=True)
class Update:
    output: Access
    rhs: Expr

    def __str__(self) -> str:
        return f"{self.output} <- {format_expr(self.rhs)}"


@dataclass(frozen=True)
class ClassUpdates:
    """Updates done at a canonical point of one diagonal class, with how often each occurs."""

    diagonal: DiagonalClass
    updates: tuple[tuple[Update, int], ...]


@dataclass(frozen=True)
class Symmetrized:
    program: Program
    exploit: bool = True
    sets: tuple[PermutableSet, ...] = ()
    output_groups: tuple[tuple[int, ...], ...] = ()  # output mode groups computed canonically
    notes: tuple[str, ...] = ()
    constraints: tuple[tuple[Index, Index], ...] = ()  # (a, b): a <= b at every visited point
    classes: tuple[DiagonalClass, ...] = ()
    class_updates: tuple[ClassUpdates, ...] = ()
    updates: tuple[Update, ...] = ()  # the base (strictly off-diagonal) update list
    table: tuple[tuple[int, ...], ...] = ()  # factor of update u at diagonal-class row r

    def set_of(self, index: Index) -> int | None:
        for number, permutable in enumerate(self.sets):
            if index in permutable.indices:
                return number
        return None


def describe_class(sym: Symmetrized, diagonal: DiagonalClass) -> str:
    parts = []
    for number, permutable in enumerate(sym.sets):
        text = permutable.indices[0].name
        for equal, index in zip(diagonal.equal[number], permutable.indices[1:], strict=True):
            text += ("=" if equal else "<") + index.name
        parts.append(text)
    return ", ".join(parts) if parts else "(no symmetry)"


def describe_sets(sym: Symmetrized) -> str:
    return ", ".join("(" + ", ".join(i.name for i in s.indices) + ")" for s in sym.sets)
