"""Step 2: restrict the iteration space to the canonical triangle of each permutable set.

Every point of the full space is a permutation of exactly one point with
indices[0] <= indices[1] <= ... within each set: keep only those.
"""

from __future__ import annotations

import dataclasses
import itertools

from ..ir.symmetrized import Symmetrized


def restrict_to_canonical_triangle(sym: Symmetrized) -> Symmetrized:
    constraints = tuple(
        pair for permutable in sym.sets for pair in itertools.pairwise(permutable.indices)
    )
    return dataclasses.replace(sym, constraints=constraints)
