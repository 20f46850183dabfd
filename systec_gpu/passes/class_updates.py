"""Step 4: the updates of each diagonal class, with multiplicities.

At a canonical point the original points are its distinct permutations. For each distinct
rank pattern we take the lexicographically first permutation pi producing it and apply it to
the statement (index S[p] becomes S[pi[p]]); after normalization equal updates merge and count.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections import Counter

from ..ir.einsum import Index, substitute
from ..ir.symmetrized import ClassUpdates, DiagonalClass, Symmetrized, Update
from .normalize import normalize


def distinct_permutations(ranks: tuple[int, ...]) -> list[tuple[int, ...]]:
    """First permutation (lexicographic) of range(len(ranks)) for each distinct image of ranks."""
    seen: dict[tuple[int, ...], tuple[int, ...]] = {}
    for perm in itertools.permutations(range(len(ranks))):
        image = tuple(ranks[p] for p in perm)
        seen.setdefault(image, perm)
    return list(seen.values())


def index_order(sym: Symmetrized):
    """Sort key of indices: by permutable set and canonical position, then by name."""
    position = {i: (n, p) for n, s in enumerate(sym.sets) for p, i in enumerate(s.indices)}

    def key(index: Index) -> tuple:
        return (0, *position[index]) if index in position else (1, 0, index.name)

    return key


def updates_of_class(sym: Symmetrized, diagonal: DiagonalClass) -> ClassUpdates:
    einsum, order = sym.program.einsum, index_order(sym)
    per_set = [
        [dict(zip(s.indices, (s.indices[p] for p in perm), strict=True)) for perm in
         distinct_permutations(diagonal.ranks(n))]
        for n, s in enumerate(sym.sets)
    ]
    counts: Counter[Update] = Counter()
    for choice in itertools.product(*per_set):
        mapping: dict[Index, Index] = {k: v for part in choice for k, v in part.items()}
        output = substitute(einsum.output, mapping)
        rhs = normalize(substitute(einsum.rhs, mapping), sym.program, order)
        counts[Update(output, rhs)] += 1
    return ClassUpdates(diagonal, tuple(counts.items()))


def enumerate_class_updates(sym: Symmetrized) -> Symmetrized:
    return dataclasses.replace(
        sym, class_updates=tuple(updates_of_class(sym, c) for c in sym.classes)
    )
