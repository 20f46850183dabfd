"""Step 4: the updates of each diagonal class, with multiplicities.

At a canonical point the original points are its distinct permutations. For each distinct
rank pattern (a permutation of the multiset of ranks) we take the lexicographically first
permutation pi producing it and apply it to the statement (index S[p] becomes S[pi[p]]); after
normalization equal updates merge and count.

Counting is combinatorial, never a walk over the g! permutations nor over the (up to 545,835 at
g = 8) distinct ones: the normalized update of pi only depends on pi's orbit element, so the
statement's orbit under the set's permutations is computed once (its transposition table:
|orbit| * g(g-1)/2 normalizations), and the rank patterns are counted by a memoized walk over
positions whose state is (position, ranks used so far, orbit element). The result, its order
included, is the one enumeration would give (tests compare both).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

from ..ir.einsum import Index, format_einsum, substitute
from ..ir.symmetrized import ClassUpdates, DiagonalClass, Symmetrized, SymmetryLimitError, Update, describe_sets
from .normalize import normalize

# Distinct updates per canonical point beyond which the kernel is refused: a statement that
# no permutation of a set leaves unchanged has g! of them (720 at g = 6), and does as many updates
# per stored entry as the non-symmetric kernel does points.
MAX_ORBIT = 720
# Entries of the factor table (diagonal classes x distinct updates) beyond which it is refused:
# the counting walk grows with both (10 modes and 90 updates, or 12 modes and 12: seconds).
MAX_TABLE = 2**16


def distinct_permutations(ranks: tuple[int, ...]) -> list[tuple[int, ...]]:
    """First permutation (lexicographic) of range(len(ranks)) for each distinct image of ranks,
    in lexicographic order: the multiset permutations of `ranks`, generated directly."""
    return list(_lex_first_permutations(tuple(ranks)))


def _lex_first_permutations(ranks: tuple[int, ...]) -> Iterator[tuple[int, ...]]:
    # Position q of an image w takes the next unused position holding rank w[q]: the
    # lexicographically first permutation with that image. Ranks in increasing order give
    # the permutations in lexicographic order.
    slots: dict[int, list[int]] = {}
    for position, rank in enumerate(ranks):
        slots.setdefault(rank, []).append(position)
    order = sorted(slots)
    used = dict.fromkeys(order, 0)
    prefix: list[int] = []

    def walk() -> Iterator[tuple[int, ...]]:
        if len(prefix) == len(ranks):
            yield tuple(prefix)
            return
        for rank in order:
            if used[rank] < len(slots[rank]):
                prefix.append(slots[rank][used[rank]])
                used[rank] += 1
                yield from walk()
                used[rank] -= 1
                prefix.pop()

    yield from walk()


def index_order(sym: Symmetrized):
    """Sort key of indices: by permutable set and canonical position, then by name."""
    position = {i: (n, p) for n, s in enumerate(sym.sets) for p, i in enumerate(s.indices)}

    def key(index: Index) -> tuple:
        return (0, *position[index]) if index in position else (1, 0, index.name)

    return key


class _Orbit:
    """The statement's updates under permutations of the set indices, numbered as met, with the
    action of each transposition of two indices of one set memoized."""

    def __init__(self, sym: Symmetrized):
        self.sym = sym
        self.limit = min(MAX_ORBIT, MAX_TABLE // max(len(sym.classes), 1))
        self.order = index_order(sym)
        einsum = sym.program.einsum
        start = Update(einsum.output, normalize(einsum.rhs, sym.program, self.order))
        self.updates: list[Update] = [start]
        self.number: dict[Update, int] = {start: 0}
        self.swaps: dict[tuple[int, int, int, int], int] = {}
        self.memo: dict[tuple, dict[int, int]] = {}  # count(), shared by the classes

    def swap(self, element: int, set_number: int, a: int, b: int) -> int:
        """The orbit element of `element` with set indices a and b exchanged."""
        key = (element, set_number, a, b)
        found = self.swaps.get(key)
        if found is None:
            indices = self.sym.sets[set_number].indices
            mapping = {indices[a]: indices[b], indices[b]: indices[a]}
            update = self.updates[element]
            image = Update(substitute(update.output, mapping),
                           normalize(substitute(update.rhs, mapping), self.sym.program, self.order))
            found = self.number.get(image)
            if found is None:
                found = len(self.updates)
                if found >= self.limit:
                    self._refuse()
                self.updates.append(image)
                self.number[image] = found
            self.swaps[key] = self.swaps[(element, set_number, b, a)] = found
        return found

    def _refuse(self):
        classes = len(self.sym.classes)
        why = (f"more than {MAX_ORBIT} distinct updates per canonical point (the limit)"
               if self.limit == MAX_ORBIT else
               f"more than {self.limit} distinct updates per canonical point, which with its {classes} "
               f"diagonal classes makes a factor table beyond the limit of {MAX_TABLE} entries")
        raise SymmetryLimitError(
            f"{format_einsum(self.sym.program.einsum)}: permuting the index sets {describe_sets(self.sym)} "
            f"gives {why}, too many to generate; compile with symmetry=False or declare smaller "
            "symmetric groups"
        )

    def count(self, later: tuple, remaining: tuple[tuple[int, ...], ...], element: int) -> dict[int, int]:
        """Orbit element -> number of ways to finish the permutation. `remaining`: the unused
        positions of each rank of the current set; `later`: the positions of each rank of the
        sets after it. The permutation so far holds the placed values first and the remaining
        ones after them, sorted; the next value placed is the first unused position of some rank
        (which makes it the lexicographically first permutation of its image). Memoized across
        classes: the rest of the walk depends on nothing else."""
        key = (later, remaining, element)
        found = self.memo.get(key)
        if found is not None:
            return found
        if not remaining:
            found = self.count(later[1:], later[0], element) if later else {element: 1}
        else:
            set_number = len(self.sym.sets) - len(later) - 1
            tail = sorted(p for positions in remaining for p in positions)
            found = {}
            for rank, positions in enumerate(remaining):
                after = self.move(element, set_number, tail, tail.index(positions[0]))
                rest = (positions[1:],) if len(positions) > 1 else ()  # used-up ranks drop out
                below = self.count(later, remaining[:rank] + rest + remaining[rank + 1:], after)
                for image, n in below.items():
                    found[image] = found.get(image, 0) + n
        self.memo[key] = found
        return found

    def move(self, element: int, set_number: int, tail: list[int], j: int) -> int:
        """Orbit element after bringing tail[j] to the front of the (sorted) tail of values:
        the values tail[0..j] rotate by one (tail[j] first, the others shift back)."""
        # Renaming by the cycle c: tail[0] -> tail[j] -> tail[j-1] -> ... -> tail[0], written
        # as exchanges applied in turn: c = (tail[j-1] tail[j]) o ... o (tail[0] tail[1]).
        for t in range(1, j + 1):
            element = self.swap(element, set_number, tail[t - 1], tail[t])
        return element


def _class_counts(orbit: _Orbit, diagonal: DiagonalClass) -> dict[int, int]:
    """Orbit element -> number of distinct permutations of the class's canonical point that
    give it, in order of first occurrence over the lexicographically first permutations."""
    blocks = []  # per set: per rank (increasing), the positions holding it
    for n in range(len(orbit.sym.sets)):
        ranks = diagonal.ranks(n)
        blocks.append(tuple(tuple(p for p, r in enumerate(ranks) if r == rank) for rank in sorted(set(ranks))))
    return orbit.count(tuple(blocks[1:]), blocks[0], 0) if blocks else {0: 1}


def updates_of_class(sym: Symmetrized, diagonal: DiagonalClass, orbit: _Orbit | None = None) -> ClassUpdates:
    orbit = orbit or _Orbit(sym)
    counts = _class_counts(orbit, diagonal)
    return ClassUpdates(diagonal, tuple((orbit.updates[e], n) for e, n in counts.items()))


def enumerate_class_updates(sym: Symmetrized) -> Symmetrized:
    orbit = _Orbit(sym)
    return dataclasses.replace(
        sym, class_updates=tuple(updates_of_class(sym, c, orbit) for c in sym.classes)
    )
