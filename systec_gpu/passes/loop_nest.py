"""Helpers shared by loop-level passes: take a loop chain apart and put it back together.

`lower_to_loops` builds a chain: each loop's body holds bindings and at most one inner loop,
the innermost body holds the updates.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..ir.einsum import Index
from ..ir.loop import Block, DenseLoop, Guard, SparseLoop

Header = SparseLoop | DenseLoop | Guard


@dataclass(frozen=True)
class Level:
    header: Header | None  # None: the top level, outside every loop
    stmts: tuple  # statements of this level other than the inner loop
    bound: frozenset[Index]  # indices bound at this level


def unnest(body: Block) -> list[Level]:
    levels, header, bound = [], None, frozenset()
    while True:
        inner = [s for s in body.body if isinstance(s, SparseLoop | DenseLoop | Guard)]
        stmts = tuple(s for s in body.body if not isinstance(s, SparseLoop | DenseLoop | Guard))
        if len(inner) > 1:
            raise ValueError("loop nest is not a chain")
        levels.append(Level(header, stmts, bound))
        if not inner:
            return levels
        header = inner[0]
        if isinstance(header, SparseLoop):
            bound = bound | frozenset(header.indices)
        elif isinstance(header, DenseLoop):
            bound = bound | {header.index}
        body = header.body


def renest(levels: list[Level]) -> Block:
    block = Block(levels[-1].stmts)
    for outer, inner in zip(reversed(levels[:-1]), reversed(levels[1:]), strict=True):
        loop = dataclasses.replace(inner.header, body=block)
        block = Block((*outer.stmts, loop))
    return block
