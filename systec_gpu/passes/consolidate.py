"""Step 5: one update list for every class, and a simplicial lookup table of factors.

The strictly off-diagonal class gives the base list (no branches, maximal factors). Every class
reuses it with its own row of factors: a count for `+=`, 0 or 1 for idempotent `min=`/`max=`.
"""

from __future__ import annotations

import dataclasses

from ..ir.symmetrized import Symmetrized, Update


def consolidate(sym: Symmetrized) -> Symmetrized:
    reduce = sym.program.einsum.semiring.reduce
    updates: dict[Update, None] = {}  # in order of first appearance
    for cu in sorted(sym.class_updates, key=lambda cu: cu.diagonal.row):
        for update, _count in cu.updates:
            updates.setdefault(update, None)
    rows = []
    for cu in sorted(sym.class_updates, key=lambda cu: cu.diagonal.row):
        counts = dict(cu.updates)
        row = []
        for update in updates:
            count = counts.get(update, 0)
            row.append(min(count, 1) if reduce.idempotent else count)
        rows.append(tuple(row))
    return dataclasses.replace(sym, updates=tuple(updates), table=tuple(rows))
