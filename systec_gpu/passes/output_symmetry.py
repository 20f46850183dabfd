"""Step 6 (applied before consolidation): compute only the canonical part of a symmetric output.

An update whose output location is not canonical (indices of an output group not
nondecreasing at that class) duplicates a value computed at the canonical location: drop it.
The runtime mirrors the canonical part afterwards (or returns it as is when asked).
"""

from __future__ import annotations

import dataclasses

from ..ir.symmetrized import ClassUpdates, DiagonalClass, Symmetrized, Update


def _rank_of(sym: Symmetrized, diagonal: DiagonalClass):
    ranks = {}
    for number, permutable in enumerate(sym.sets):
        for index, rank in zip(permutable.indices, diagonal.ranks(number), strict=True):
            ranks[index] = (number, rank)
    return ranks


def is_canonical_output(sym: Symmetrized, diagonal: DiagonalClass, update: Update) -> bool:
    ranks = _rank_of(sym, diagonal)
    for group in sym.output_groups:
        values = [ranks[update.output.indices[m]] for m in group]
        if any(a > b for a, b in zip(values, values[1:], strict=False)):
            return False
    return True


def keep_canonical_outputs(sym: Symmetrized) -> Symmetrized:
    if not sym.output_groups:
        return sym
    kept = tuple(
        ClassUpdates(
            cu.diagonal,
            tuple((u, n) for u, n in cu.updates if is_canonical_output(sym, cu.diagonal, u)),
        )
        for cu in sym.class_updates
    )
    return dataclasses.replace(sym, class_updates=kept)
