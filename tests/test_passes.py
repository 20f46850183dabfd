"""Unit tests of each symmetry pass, on the symmetrized IR (no tensor data needed)."""

import itertools
import math
import time
from collections import Counter

import pytest

from systec_gpu.ir.einsum import Access, Call, Index, substitute
from systec_gpu.ir.loop import DenseLoop, Guard, SparseLoop
from systec_gpu.ir.symmetrized import Symmetrized, SymmetryLimitError
from systec_gpu.ir.symmetrized import Update as SymUpdate
from systec_gpu.passes.canonical_triangle import restrict_to_canonical_triangle
from systec_gpu.passes.class_updates import distinct_permutations, enumerate_class_updates, index_order
from systec_gpu.passes.concordize import concordize
from systec_gpu.passes.consolidate import consolidate
from systec_gpu.passes.diagonal_classes import enumerate_diagonal_classes
from systec_gpu.passes.identify_symmetry import identify_symmetry
from systec_gpu.passes.loop_nest import unnest
from systec_gpu.passes.lower_loops import ScheduleError, lower_to_loops
from systec_gpu.passes.normalize import normalize
from systec_gpu.passes.output_symmetry import keep_canonical_outputs
from systec_gpu.passes.read_once import read_once
from systec_gpu.pipeline import front, symmetrize

i, j, k, l = (Index(n) for n in "ijkl")


def upto(program, *passes):
    sym = Symmetrized(program)
    for p in passes:
        sym = p(sym)
    return sym


def test_normalize_sorts_symmetric_indices_and_commutative_operands():
    program = front("y[] += x[j]*A[j,i]*x[i]", {"A": "full"})
    rhs = normalize(program.einsum.rhs, program)
    assert rhs == Call("mul", (Access("A", (i, j)), Access("x", (i,)), Access("x", (j,))))
    nested = front("y[i] += A[i,j]*(x[j]*z[j])").einsum.rhs
    assert len(normalize(nested, front("y[i] += A[i,j]*(x[j]*z[j])")).args) == 3  # flattened


def test_identify_visible_symmetry_of_an_operand():
    sym = upto(front("C[i,j] += A[i,k,l]*B[l,j]*B[k,j]", {"A": "full"}), identify_symmetry)
    assert [s.indices for s in sym.sets] == [(i, k, l)]
    assert sym.output_groups == ()


def test_identify_invisible_output_symmetry_of_ssyrk():
    sym = upto(front("C[i,j] += A[i,k]*A[j,k]"), identify_symmetry)
    assert [s.indices for s in sym.sets] == [(i, j)]
    assert sym.output_groups == ((0, 1),)
    assert "found" in sym.sets[0].origin


def test_identify_output_symmetry_inside_an_operand_set_ttm():
    sym = upto(front("C[i,j,l] += A[k,j,l]*B[k,i]", {"A": "full"}), identify_symmetry)
    assert [s.indices for s in sym.sets] == [(k, j, l)]
    assert sym.output_groups == ((1, 2),)


def test_identify_output_symmetry_up_to_renaming_reduction_indices():
    sym = upto(front("C[i,j] += A[i,k]*S[k,l]*A[j,l]", {"S": "full"}), identify_symmetry)
    assert sym.output_groups == ((0, 1),)


def test_identify_invisible_reduction_symmetry():
    sym = upto(front("y[] += x[i]*x[j]"), identify_symmetry)
    assert [s.indices for s in sym.sets] == [(i, j)]
    assert "invisible" in sym.sets[0].origin


def test_no_symmetry_when_not_exploited():
    sym = upto(front("y[i] += A[i,j]*x[j]", {"A": "full"}), identify_symmetry)
    off = identify_symmetry(Symmetrized(front("y[i] += A[i,j]*x[j]", {"A": "full"}), exploit=False))
    assert sym.sets and not off.sets


def test_overlapping_groups_are_noted_not_combined():
    sym = upto(front("y[] += A[i,j]*B[j,k]", {"A": "full", "B": "full"}), identify_symmetry)
    assert [s.indices for s in sym.sets] == [(i, j)]
    assert any("already in a permutable set" in n for n in sym.notes)


def test_declared_unprovable_output_symmetry_warns():
    with pytest.warns(UserWarning, match="cannot prove C\\[i,j\\] symmetric"):
        upto(front("C[i,j] += A[i,k]*B[j,k]", {"C": "full"}), identify_symmetry)


def test_canonical_triangle_chains():
    sym = upto(front("C[i,j] += A[i,k,l]*B[l,j]*B[k,j]", {"A": "full"}),
               identify_symmetry, restrict_to_canonical_triangle)
    assert sym.constraints == ((i, k), (k, l))


@pytest.mark.parametrize("order", [2, 3, 4, 5])
def test_diagonal_classes_count(order):
    indices = ",".join("abcde"[:order])
    sym = upto(front(f"y[] += A[{indices}]", {"A": "full"}), identify_symmetry, enumerate_diagonal_classes)
    assert len(sym.classes) == 2 ** (order - 1)
    assert [c.row for c in sym.classes] == list(range(2 ** (order - 1)))
    assert sym.classes[0].equal == ((False,) * (order - 1),)


def test_distinct_permutations_of_rank_patterns():
    assert len(distinct_permutations((0, 1, 2))) == 6
    assert len(distinct_permutations((0, 0, 1))) == 3
    assert len(distinct_permutations((0, 0, 0))) == 1
    assert distinct_permutations((0, 0, 1))[0] == (0, 1, 2)  # the identity comes first


@pytest.mark.parametrize("order", [3, 4, 5])
def test_mttkrp_factors_count_every_original_point_once(order):
    # For +=, the factors of a class add up to the number of distinct permutations of its points.
    modes = "iklmn"[:order]
    rhs = "*".join(f"B[{m},j]" for m in modes[1:])
    sym = symmetrize(front(f"C[i,j] += A[{','.join(modes)}]*{rhs}", {"A": "full"}))
    for diagonal, row in zip(sym.classes, sym.table, strict=True):
        counts = Counter(diagonal.ranks(0))
        distinct = math.factorial(order) // math.prod(math.factorial(c) for c in counts.values())
        assert sum(row) == distinct
    assert sym.table[0] == (math.factorial(order - 1),) * order  # strict class: g distinct updates


def test_ssymv_updates_and_table():
    sym = symmetrize(front("y[i] += A[i,j]*x[j]", {"A": "full"}))
    assert [str(u) for u in sym.updates] == ["y[i] <- A[i,j] * x[j]", "y[j] <- A[i,j] * x[i]"]
    assert sym.table == ((1, 1), (1, 0))


def test_syprd_merges_permutations_into_one_update():
    sym = symmetrize(front("y[] += x[i]*A[i,j]*x[j]", {"A": "full"}))
    assert len(sym.updates) == 1 and sym.table == ((2,), (1,))


def test_idempotent_reductions_drop_multiplicities():
    sym = symmetrize(front("y[] min= x[i] + A[i,j] + x[j]", {"A": "full"}))
    assert sym.table == ((1,), (1,))


def test_output_symmetry_drops_non_canonical_updates():
    program = front("C[i,j,l] += A[k,j,l]*B[k,i]", {"A": "full"})
    before = upto(program, identify_symmetry, restrict_to_canonical_triangle, enumerate_diagonal_classes,
                  enumerate_class_updates)
    after = keep_canonical_outputs(before)
    strict_before = dict(before.class_updates[0].updates)
    strict_after = dict(after.class_updates[0].updates)
    assert len(strict_before) == 6 and len(strict_after) == 3
    assert consolidate(after).table[0] == (1, 1, 1)


def test_lowering_uses_sparse_driver_and_triangle_bounds():
    loops = lower_to_loops(symmetrize(front("C[i,j] += A[i,k]*A[j,k]", formats={"A": "coo"})))
    levels = unnest(loops.body)
    assert isinstance(levels[1].header, SparseLoop) and not levels[1].header.expanded
    inner = levels[2].header
    assert isinstance(inner, DenseLoop) and inner.index == j and inner.lower == i


def test_lowering_guards_constraints_storage_does_not_imply():
    loops = lower_to_loops(symmetrize(front("y[] += x[i]*A[i,j]*x[j]", {"A": "full"}), exploit=True))
    assert not any(isinstance(lv.header, Guard) for lv in unnest(loops.body))
    program = front("y[] += B[j,k]*A[i,j,k]", {"A": "full", "B": "full"}, {"B": "dense"})
    guarded = lower_to_loops(symmetrize(program))
    # (j, k) is permutable through B; A's group overlaps it, so A is visited expanded and its
    # storage implies no order between j and k: a guard keeps j <= k.
    levels = unnest(guarded.body)
    assert levels[1].header.expanded
    assert any(isinstance(lv.header, Guard) and (lv.header.lhs, lv.header.rhs) == (j, k) for lv in levels)


def test_loop_order_is_validated_with_a_reason():
    sym = symmetrize(front("Y[i,r] += A[i,j]*X[j,r]", {"A": "full"}))
    with pytest.raises(ScheduleError, match="A is sparse and iterated outermost"):
        lower_to_loops(sym, ("r", "i", "j"))
    with pytest.raises(ScheduleError, match="must list each index once"):
        lower_to_loops(sym, ("i", "j"))


def test_read_once_binds_each_read_once_and_uses_prefix_suffix_products():
    program = front("C[i,j] += A[i,k,l,m]*B[k,j]*B[l,j]*B[m,j]", {"A": "full"})
    loops = read_once(lower_to_loops(symmetrize(program)))
    innermost = unnest(loops.body)[-1].stmts
    names = [s.name for s in innermost if hasattr(s, "name")]
    assert len(set(names)) == len(names)
    assert {"prefix2", "prefix3", "suffix1", "suffix2"} <= set(names)
    driver_level = unnest(loops.body)[1].stmts
    assert any(getattr(s, "name", "") == "cls" for s in driver_level)  # hoisted out of the j loop


def test_concordize_makes_innermost_loop_contiguous():
    loops = concordize(read_once(lower_to_loops(symmetrize(front("C[i,j,l] += A[k,j,l]*B[k,i]", {"A": "full"})))))
    assert loops.layout_of("C") == (1, 2, 0)
    assert loops.layout_of("B") is None  # B[k,i] is already contiguous along i


# ---------------------------------------------------------------------------------------------
# Class updates are counted, not enumerated: same result as enumerating every permutation, and
# high orders compile in seconds or are refused with the limit.


def _enumerated_class_updates(sym, diagonal):
    """The definition, by brute force: every permutation, the first of each distinct image."""
    order = index_order(sym)
    per_set = []
    for n, s in enumerate(sym.sets):
        firsts = {}
        for perm in itertools.permutations(range(len(s.indices))):
            firsts.setdefault(tuple(diagonal.ranks(n)[p] for p in perm), perm)
        per_set.append([dict(zip(s.indices, (s.indices[p] for p in perm), strict=True)) for perm in firsts.values()])
    counts = Counter()
    for choice in itertools.product(*per_set):
        mapping = {a: b for part in choice for a, b in part.items()}
        einsum = sym.program.einsum
        counts[SymUpdate(substitute(einsum.output, mapping),
                         normalize(substitute(einsum.rhs, mapping), sym.program, order))] += 1
    return tuple(counts.items())


COUNTED = [
    ("C[i,j] += A[i,k,l,m,n]*B[l,j]*B[k,j]*B[m,j]*B[n,j]", {"A": "full"}),
    ("y[] += x[i]*A[i,j]*x[j]", {"A": "full"}),
    ("C[i,j] += A[i,k]*A[j,k]", None),
    ("y[i] min= A[i,j] + x[j]", {"A": "full"}),
    ("y[i] += A[i,j,k]*x[j]*z[k]", {"A": "full"}),
    ("y[] += A[i,j,k,l]*x[i]*w[j]*z[k]*v[l]", {"A": "full"}),
    ("C[i,l] += A[i,j,k,l]*x[j]*z[k]", {"A": [(0, 1), (2, 3)]}),
    ("y[] += A[i,j]*A[j,k]*A[k,l]*A[l,i]", {"A": "full"}),
    ("C[i,j,k] += A[i,j,k,l]*x[l]", {"A": "full", "C": "full"}),
    ("C[i,j] += A[i,j,k,l]*B[k,l]", {"A": [(0, 1), (2, 3)]}),
    ("y[j] += A[i,i,j,j,k]*x[k]", {"A": "full"}),
]


@pytest.mark.parametrize("text,symmetric", COUNTED, ids=[t for t, _ in COUNTED])
def test_counted_class_updates_equal_enumerated_ones(text, symmetric):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sym = symmetrize(front(text, symmetric))
    assert sym.sets
    for cu in enumerate_class_updates(sym).class_updates:  # before output symmetry drops any
        assert cu.updates == _enumerated_class_updates(sym, cu.diagonal)  # order included


def test_distinct_permutations_are_the_multiset_permutations_in_order():
    ranks = (0, 0, 1, 2, 2)
    firsts = {}
    for perm in itertools.permutations(range(5)):
        firsts.setdefault(tuple(ranks[p] for p in perm), perm)
    assert distinct_permutations(ranks) == list(firsts.values())
    assert len(distinct_permutations((0,) * 4 + (1,) * 4 + (2,) * 4)) == math.factorial(12) // math.factorial(4) ** 3


def _mttkrp(order: int) -> str:
    modes = "klmnopqrstuv"[: order - 1]
    return f"C[i,j] += A[i,{','.join(modes)}]*" + "*".join(f"B[{m},j]" for m in modes)


def test_eight_mode_mttkrp_compiles_in_seconds():
    # It took 72 s when every permutation of every class was normalized. The bound is generous
    # (a shared CI machine): this is a complexity check, not a benchmark.
    start = time.perf_counter()
    sym = symmetrize(front(_mttkrp(8), {"A": "full"}))
    assert time.perf_counter() - start < 30
    assert len(sym.classes) == 2**7 and len(sym.updates) == 8
    assert sym.table[0] == (math.factorial(7),) * 8
    for diagonal, row in zip(sym.classes, sym.table, strict=True):
        counts = Counter(diagonal.ranks(0))
        assert sum(row) == math.factorial(8) // math.prod(math.factorial(c) for c in counts.values())


def test_too_many_diagonal_classes_are_refused_early_with_the_limit():
    start = time.perf_counter()
    with pytest.raises(SymmetryLimitError, match=r"\(of order 13\) have 4096 diagonal classes, more than the limit"):
        symmetrize(front(_mttkrp(13), {"A": "full"}))
    assert time.perf_counter() - start < 30
    symmetrize(front(_mttkrp(13), {"A": "full"}), exploit=False)  # the baseline still compiles


def test_too_many_distinct_updates_are_refused_with_the_limit():
    # Every permutation of (i..o) changes the statement: 7! = 5040 distinct updates per point.
    text = "y[] += A[i,j,k,l,m,n,o]*a[i]*b[j]*c[k]*d[l]*e[m]*f[n]*g[o]"
    with pytest.raises(SymmetryLimitError, match=r"more than 720 distinct updates per canonical point"):
        symmetrize(front(text, {"A": "full"}))


def test_too_large_a_factor_table_is_refused_early_with_the_limit():
    # 10 permutable indices (512 classes) and 3 of them distinguished: 720 distinct updates.
    modes = "klmnopqrs"
    text = f"C[i,j] += A[i,{','.join(modes)}]*v[k]*w[l]*" + "*".join(f"B[{m},j]" for m in modes[2:])
    start = time.perf_counter()
    with pytest.raises(SymmetryLimitError, match=r"more than 128 distinct updates per canonical point, which with "
                                                 r"its 512 diagonal classes makes a factor table beyond the limit"):
        symmetrize(front(text, {"A": "full"}))
    assert time.perf_counter() - start < 30
