"""Step 3: enumerate the diagonal classes of the canonical triangle.

Within a set of size g each adjacent pair is equal or strictly less: 2**(g-1) classes per set,
their product over sets. Row r of the multiplicity table has bit (offset + t) set iff the t-th
adjacent pair of the set at that bit offset is equal; row 0 is the strictly off-diagonal class.
"""

from __future__ import annotations

import dataclasses
import itertools

from ..ir.symmetrized import DiagonalClass, Symmetrized


def class_row(equal: tuple[tuple[bool, ...], ...]) -> int:
    row, offset = 0, 0
    for flags in equal:
        for t, flag in enumerate(flags):
            row |= int(flag) << (offset + t)
        offset += len(flags)
    return row


def enumerate_diagonal_classes(sym: Symmetrized) -> Symmetrized:
    per_set = [
        list(itertools.product((False, True), repeat=len(s.indices) - 1)) for s in sym.sets
    ]
    classes = [
        DiagonalClass(tuple(equal), class_row(tuple(equal))) for equal in itertools.product(*per_set)
    ]
    classes.sort(key=lambda c: c.row)
    return dataclasses.replace(sym, classes=tuple(classes))
