"""Step 3: enumerate the diagonal classes of the canonical triangle.

Within a set of size g each adjacent pair is equal or strictly less: 2**(g-1) classes per set,
their product over sets. Row r of the multiplicity table has bit (offset + t) set iff the t-th
adjacent pair of the set at that bit offset is equal; row 0 is the strictly off-diagonal class.
"""

from __future__ import annotations

import dataclasses
import itertools

from ..ir.einsum import format_einsum
from ..ir.symmetrized import DiagonalClass, Symmetrized, SymmetryLimitError, describe_sets

# Rows of the multiplicity table (2**(g-1) for one set of g indices): a set of up to 12 indices
# compiles in seconds; larger ones are refused before anything is enumerated.
MAX_CLASSES = 2**11


def class_row(equal: tuple[tuple[bool, ...], ...]) -> int:
    row, offset = 0, 0
    for flags in equal:
        for t, flag in enumerate(flags):
            row |= int(flag) << (offset + t)
        offset += len(flags)
    return row


def enumerate_diagonal_classes(sym: Symmetrized) -> Symmetrized:
    count = 1
    for permutable in sym.sets:
        count *= 2 ** (len(permutable.indices) - 1)
    if count > MAX_CLASSES:
        sizes = " and ".join(str(len(s.indices)) for s in sym.sets)
        raise SymmetryLimitError(
            f"{format_einsum(sym.program.einsum)}: the permutable index sets {describe_sets(sym)} "
            f"(of order {sizes}) have {count} diagonal classes, more than the limit of {MAX_CLASSES} "
            f"(one set of up to {MAX_CLASSES.bit_length()} indices); compile with symmetry=False "
            "or declare smaller symmetric groups"
        )
    per_set = [
        list(itertools.product((False, True), repeat=len(s.indices) - 1)) for s in sym.sets
    ]
    classes = [
        DiagonalClass(tuple(equal), class_row(tuple(equal))) for equal in itertools.product(*per_set)
    ]
    classes.sort(key=lambda c: c.row)
    return dataclasses.replace(sym, classes=tuple(classes))
