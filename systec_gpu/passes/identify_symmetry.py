"""Step 1: find the permutable index sets and the output symmetry to exploit.

Sources, in this order (a set never overlaps an earlier one; overlaps are noted and skipped):
(a) symmetric operands: the indices of each symmetric group of an access;
(b) output symmetry, declared or found: the output is symmetric in two of its modes when
    swapping their indices leaves the normalized right-hand side unchanged, possibly after
    renaming reduction indices (C[i,j] += A[i,k]*A[j,k]);
(c) invisible symmetry among reduction indices: swapping two of them leaves the normalized
    right-hand side unchanged (y[] += x[i]*x[j]).
"""

from __future__ import annotations

import itertools
import warnings

from ..ir.einsum import Index, Program, accesses, indices_of, substitute
from ..ir.symmetrized import PermutableSet, Symmetrized
from .normalize import normalize

MAX_RELABELED = 5  # reduction indices tried under renaming when proving output symmetry


def _swap(a: Index, b: Index) -> dict[Index, Index]:
    return {a: b, b: a}


def _invariant(program: Program, mapping: dict[Index, Index], relabel: tuple[Index, ...]) -> bool:
    """Is the right-hand side unchanged by `mapping`, up to renaming the indices in `relabel`?"""
    target = normalize(program.einsum.rhs, program)
    swapped = substitute(program.einsum.rhs, mapping)
    for perm in itertools.permutations(relabel):
        renamed = substitute(swapped, dict(zip(relabel, perm, strict=True)))
        if normalize(renamed, program) == target:
            return True
    return False


def _union_groups(items: list, pairs: list[tuple]) -> list[tuple]:
    """Connected components of `pairs` over `items`, each in `items` order (transpositions
    connecting a component generate its full permutation group)."""
    parent = {item: item for item in items}

    def root(item):
        while parent[item] != item:
            item = parent[item]
        return item

    for a, b in pairs:
        parent[root(b)] = root(a)
    components: dict = {}
    for item in items:
        components.setdefault(root(item), []).append(item)
    return [tuple(c) for c in components.values() if len(c) > 1]


def _access_sets(access, program) -> list[tuple[Index, ...]]:
    """Index sets a symmetric access is invariant under, from each of its symmetric groups.

    Usually a group's indices (A[i,j] symmetric: (i, j)). A repeated index (A[i,i,j]) or one
    also used outside the group (A[i,j,i] symmetric in (0, 1)) is not interchangeable with the
    others: the sets are the components of the swaps that leave the normalized access unchanged
    (A[i,i,j,j] fully symmetric: (i, j); A[i,i,j]: none)."""
    target = normalize(access, program)
    found = []
    for group in program.groups_of(access.tensor):
        candidates = list(dict.fromkeys(access.indices[m] for m in group))
        pairs = [
            (a, b) for a, b in itertools.combinations(candidates, 2)
            if normalize(substitute(access, _swap(a, b)), program) == target
        ]
        found += _union_groups(candidates, pairs)
    return found


def proved_output_groups(program: Program) -> list[tuple[int, ...]]:
    """Mode groups of the output in which the expression itself proves it symmetric: swapping
    two output indices leaves the normalized right-hand side unchanged, possibly after renaming
    reduction indices (C[i,j] += A[i,k]*A[j,k]). Declared symmetry of the inputs is assumed."""
    einsum = program.einsum
    output = einsum.output
    reduction = tuple(i for i in indices_of(einsum) if i not in output.indices)
    relabel = reduction if len(reduction) <= MAX_RELABELED else ()
    pairs = [
        (a, b)
        for a, b in itertools.combinations(range(len(output.indices)), 2)
        if _invariant(program, _swap(output.indices[a], output.indices[b]), relabel)
    ]
    return _union_groups(list(range(len(output.indices))), pairs)


def identify_symmetry(sym: Symmetrized) -> Symmetrized:
    if not sym.exploit:
        return sym
    program = sym.program
    einsum = program.einsum
    sets: list[PermutableSet] = []
    notes: list[str] = []

    def taken() -> set[Index]:
        return {i for s in sets for i in s.indices}

    # (a) symmetric operands
    for access in accesses(einsum.rhs):
        for indices in _access_sets(access, program):
            if any(set(indices) == set(s.indices) for s in sets):
                continue
            modes = tuple(m for m, i in enumerate(access.indices) if i in indices)
            clash = set(indices) & taken()
            if clash:
                notes.append(
                    f"{access} symmetric in modes {modes} not exploited: "
                    f"{', '.join(sorted(i.name for i in clash))} already in a permutable set"
                )
                continue
            sets.append(PermutableSet(indices, f"{access.tensor} is symmetric in modes {modes}"))

    # (b) output symmetry: declared groups, then groups found by swap-and-normalize
    output = einsum.output
    reduction = tuple(i for i in indices_of(einsum) if i not in output.indices)
    declared = program.groups_of(output.tensor)
    found = proved_output_groups(program)
    for group in declared:
        if not any(set(group) <= set(f) for f in found):
            warnings.warn(
                f"cannot prove {output} symmetric in modes {group} from the expression; "
                "trusting the declaration (only the canonical part is computed, then mirrored)",
                stacklevel=4,
            )
    groups = list(declared) + [g for g in found if not any(set(g) <= set(d) for d in declared)]
    exploited = []
    for group in groups:
        indices = tuple(output.indices[m] for m in group)
        how = "declared" if group in declared else "found: the right-hand side is invariant under swaps"
        containing = [s for s in sets if set(indices) <= set(s.indices)]
        if containing:
            exploited.append(tuple(group))
            notes.append(f"{output.tensor} symmetric in modes {group} ({how}): canonical part only")
        elif not set(indices) & taken():
            sets.append(PermutableSet(indices, f"{output.tensor} is symmetric in modes {group} ({how})"))
            exploited.append(tuple(group))
        else:
            notes.append(
                f"{output.tensor} symmetric in modes {group} ({how}) not exploited: "
                "its indices straddle permutable sets"
            )

    # (c) invisible symmetry among reduction indices
    free = [i for i in reduction if i not in taken()]
    pairs = [(a, b) for a, b in itertools.combinations(free, 2) if _invariant(program, _swap(a, b), ())]
    for group in _union_groups(free, pairs):
        sets.append(PermutableSet(group, "invisible: the right-hand side is invariant under swaps"))

    return Symmetrized(
        program, sym.exploit, tuple(sets), tuple(exploited), sym.notes + tuple(notes)
    )
