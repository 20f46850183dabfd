"""SparseTensor / SymmetricTensor: construction, checks, canonical form, classes, expansion."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from systec_gpu.storage import EntryError, SparseTensor, SymmetricTensor, normalize_groups


def perm_sum(a: np.ndarray, groups) -> np.ndarray:
    """Reference: sum of a over all permutations within the groups."""
    out = np.zeros_like(a)
    per = [list(itertools.permutations(g)) for g in groups]
    for combo in itertools.product(*per):
        axes = list(range(a.ndim))
        for g, p in zip(groups, combo, strict=True):
            for src, dst in zip(g, p, strict=True):
                axes[src] = dst
        out = out + a.transpose(axes)
    return out


def random_dense(rng, shape, density=0.4, dtype=np.float64):
    a = rng.integers(1, 5, size=shape).astype(dtype)
    return np.where(rng.random(shape) < density, a, 0).astype(dtype)


# ----------------------------------------------------------------------------- SparseTensor
def test_from_coo_sorts_and_sums_duplicates_keeping_dtype():
    idx = np.array([[2, 0, 2, 1], [1, 3, 1, 0]])
    t = SparseTensor.from_coo(idx, np.array([1, 2, 3, 4], dtype=np.int32), (3, 4))
    assert t.indices.dtype == np.int64
    assert t.indices.tolist() == [[0, 1, 2], [3, 0, 1]]
    assert t.values.tolist() == [2, 4, 4]
    assert t.dtype == np.int32 and t.nnz == 3 and t.ndim == 2


def test_from_coo_no_sum_names_duplicate():
    with pytest.raises(EntryError, match=r"duplicate entries at A\[2, 1\]"):
        SparseTensor.from_coo([[2, 2], [1, 1]], [1.0, 2.0], (3, 3), sum_duplicates=False)


def test_from_coo_out_of_range_names_entry():
    with pytest.raises(ValueError, match=r"index 5 in mode 1, outside the mode size 4"):
        SparseTensor.from_coo([[0, 1], [1, 5]], [1.0, 2.0], (3, 4))


def test_nan_inf_kept():
    t = SparseTensor.from_coo([[0, 1, 2]], [np.nan, np.inf, -np.inf], (3,))
    assert np.isnan(t.values[0]) and t.values[1] == np.inf and t.values[2] == -np.inf
    d = SparseTensor.from_dense(np.array([0.0, np.nan, 0.0]))
    assert d.indices.tolist() == [[1]] and np.isnan(d.values[0])


def test_from_dense_numpy_and_torch_roundtrip():
    rng = np.random.default_rng(0)
    a = random_dense(rng, (3, 4, 5)).astype(np.float32)
    for src in (a, torch.from_numpy(a)):
        t = SparseTensor.from_dense(src)
        assert t.dtype == np.float32 and t.nnz == np.count_nonzero(a)
        np.testing.assert_array_equal(t.to_dense(), a)


def test_constructor_rejects_unsorted():
    with pytest.raises(ValueError, match="not sorted and unique"):
        SparseTensor([[1, 0]], [1.0, 2.0], (2,))


def test_csr_pointers():
    t = SparseTensor.from_coo([[0, 0, 2], [1, 2, 0]], [1.0, 2.0, 3.0], (4, 3))
    assert t.csr_pointers().tolist() == [0, 2, 2, 3, 3]
    assert t.csr_pointers() is t.csr_pointers()  # cached


def test_huge_coordinates():
    n = 3_000_000_000
    t = SparseTensor.from_coo([[n - 1, 5, 2**31], [0, n - 2, 7]], [1.0, 2.0, 3.0], (n, n))
    assert t.indices.tolist() == [[5, 2**31, n - 1], [n - 2, 7, 0]]
    s = SymmetricTensor.from_coo([[n - 1, 0], [0, n - 1]], [4.0, 4.0], (n, n))
    assert s.indices.tolist() == [[0], [n - 1]] and s.n_expanded == 2
    e = s.expanded()
    assert e.indices.tolist() == [[0, n - 1], [n - 1, 0]]
    s3 = SymmetricTensor.from_coo([[n - 1], [1], [n - 2]], [1.0], (n, n, n), stored="one")  # key overflows int64
    assert s3.indices[:, 0].tolist() == [1, n - 2, n - 1] and s3.n_expanded == 6


# ----------------------------------------------------------------------------- groups
@pytest.mark.parametrize(
    ("groups", "msg"),
    [
        ([(0,)], "needs at least 2 modes"),
        ([(0, 3)], "outside"),
        ([(0, 1), (1, 2)], "overlaps"),
        ([(0, 2)], r"unequal sizes \(4, 5\)"),
        ("upper", "unknown symmetry"),
    ],
)
def test_groups_validation(groups, msg):
    with pytest.raises(ValueError, match=msg):
        normalize_groups(groups, (4, 4, 5))


def test_groups_normalization():
    assert normalize_groups("full", (3, 3, 3)) == ((0, 1, 2),)
    assert normalize_groups([(3, 1), [2, 0]], (2, 3, 2, 3)) == ((0, 2), (1, 3))
    assert normalize_groups((), (3, 3)) == ()
    assert normalize_groups((1, 0), (3, 3)) == ((0, 1),)
    assert normalize_groups("full", (5,)) == ()


# ----------------------------------------------------------------------------- SymmetricTensor
def test_from_dense_matrix_canonical_and_classes():
    a = np.array([[1.0, 2.0, 0.0], [2.0, 0.0, 3.0], [0.0, 3.0, 4.0]])
    s = SymmetricTensor.from_dense(a)
    assert s.groups == ((0, 1),)
    assert s.indices.tolist() == [[0, 0, 1, 2], [0, 1, 2, 2]]
    assert s.values.tolist() == [1.0, 2.0, 3.0, 4.0]
    assert s.classes.dtype == np.uint8 and s.classes.tolist() == [1, 0, 0, 1]
    assert s.n_expanded == 6 and s.canonical_multiplicity == 6
    np.testing.assert_array_equal(s.to_dense(), a)
    assert s.csr_pointers().tolist() == [0, 2, 3, 4]


def test_from_dense_error_names_pair():
    a = np.zeros((4, 4))
    a[0, 3], a[3, 0] = 1.5, 2.0
    msg = r"A is not symmetric in modes \(0, 1\): A\[0, 3\] = 1.5 but A\[3, 0\] = 2.0"
    with pytest.raises(ValueError, match=msg):
        SymmetricTensor.from_dense(a)
    with pytest.raises(ValueError, match=r"^B is not symmetric"):
        SymmetricTensor.from_dense(torch.from_numpy(a), name="B")
    assert SymmetricTensor.from_dense(a, check=False).values.tolist() == [1.5]


def test_tolerances():
    a = np.array([[0.0, 1.0], [1.0 + 1e-9, 0.0]])
    with pytest.raises(ValueError, match="not symmetric"):
        SymmetricTensor.from_dense(a)
    assert SymmetricTensor.from_dense(a, atol=1e-8).nnz == 1
    assert SymmetricTensor.from_dense(a, rtol=1e-8).nnz == 1
    with pytest.raises(ValueError, match="not symmetric"):
        SymmetricTensor.from_dense(a, rtol=1e-10)
    idx = [[0, 1], [1, 0]]
    assert SymmetricTensor.from_coo(idx, [1.0, 1.0 + 1e-9], (2, 2), atol=1e-8).nnz == 1
    with pytest.raises(ValueError, match=r"A\[0, 1\] = 1.0 but A\[1, 0\] = 1.000000001"):
        SymmetricTensor.from_coo(idx, [1.0, 1.0 + 1e-9], (2, 2))


def test_nan_agrees_with_nan():
    a = np.array([[0.0, np.nan], [np.nan, np.inf]])
    s = SymmetricTensor.from_dense(a)
    assert s.nnz == 2 and np.isnan(s.values[0]) and s.values[1] == np.inf
    c = SymmetricTensor.from_coo([[0, 1], [1, 0]], [np.nan, np.nan], (2, 2))
    assert c.nnz == 1 and np.isnan(c.values[0])
    with pytest.raises(ValueError, match=r"= nan but"):
        SymmetricTensor.from_coo([[0, 1], [1, 0]], [np.nan, 1.0], (2, 2))


def test_from_coo_triangles_and_duplicates():
    # both triangles agreeing: kept once, not summed
    s = SymmetricTensor.from_coo([[1, 0, 2], [0, 1, 2]], [5.0, 5.0, 7.0], (3, 3))
    assert s.indices.tolist() == [[0, 2], [1, 2]] and s.values.tolist() == [5.0, 7.0]
    # one triangle: an error naming the entry and its missing mirror, unless declared stored="one"
    with pytest.raises(EntryError, match=r"stores A\[2, 0\] = 3.0 without its mirror A\[0, 2\]") as e:
        SymmetricTensor.from_coo([[2, 1], [0, 1]], [3.0, 4.0], (3, 3))
    assert e.value.positions == (0,)
    lower = SymmetricTensor.from_coo([[2, 1], [0, 1]], [3.0, 4.0], (3, 3), stored="one")
    assert lower.indices.tolist() == [[0, 1], [2, 1]]
    with pytest.raises(EntryError, match=r"one entry in two arrangements, A\[0, 1\] and A\[1, 0\]"):
        SymmetricTensor.from_coo([[1, 0], [0, 1]], [5.0, 5.0], (3, 3), stored="one")
    with pytest.raises(EntryError, match=r"A\[0, 1\] = 5.0 but A\[1, 0\] = 6.0") as e:
        SymmetricTensor.from_coo([[1, 0], [0, 1]], [6.0, 5.0], (3, 3))
    assert sorted(e.value.positions) == [0, 1]
    # check=False: the canonical entries are read, the other arrangements are not
    assert SymmetricTensor.from_coo([[1, 0], [0, 1]], [6.0, 5.0], (3, 3), check=False).values == 5
    assert SymmetricTensor.from_coo([[2, 1], [0, 1]], [3.0, 4.0], (3, 3), check=False).indices.tolist() == [
        [1], [1]]
    with pytest.raises(EntryError, match=r"duplicate entries at A\[1, 0\] .* 6.0 and 7.0"):
        SymmetricTensor.from_coo([[1, 1], [0, 0]], [6.0, 7.0], (3, 3))
    with pytest.raises(EntryError, match=r"duplicate entries at A\[0, 1\] .* 6.0 and 7.0"):
        SymmetricTensor.from_coo([[0, 0], [1, 1]], [6.0, 7.0], (3, 3), check=False)
    same = SymmetricTensor.from_coo([[1, 1, 0], [0, 0, 1]], [6.0, 6.0, 6.0], (3, 3))
    assert same.nnz == 1 and same.values.tolist() == [6.0]


def test_from_coo_order3_and_partial_groups():
    rng = np.random.default_rng(1)
    a = perm_sum(random_dense(rng, (4, 4, 4), 0.2), [(0, 1, 2)])
    e = SparseTensor.from_dense(a)
    s = SymmetricTensor.from_coo(e.indices, e.values, e.shape)
    np.testing.assert_array_equal(s.to_dense(), a)
    with pytest.raises(ValueError, match=r"not symmetric in modes \(0, 1, 2\)"):
        v = e.values.copy()
        v[np.flatnonzero(np.ptp(e.indices, axis=0) > 0)[0]] += 1
        SymmetricTensor.from_coo(e.indices, v, e.shape)
    b = perm_sum(random_dense(rng, (3, 5, 3, 5), 0.3), [(0, 2), (1, 3)])
    s2 = SymmetricTensor.from_dense(b, [(0, 2), (1, 3)])
    assert s2.groups == ((0, 2), (1, 3))
    assert (s2.indices[0] <= s2.indices[2]).all() and (s2.indices[1] <= s2.indices[3]).all()
    np.testing.assert_array_equal(s2.to_dense(), b)
    b[0, 1, 2, 1] += 1.0  # breaks only the (0, 2) symmetry
    with pytest.raises(ValueError, match=r"not symmetric in modes \(0, 2\)"):
        SymmetricTensor.from_dense(b, [(0, 2), (1, 3)])


def test_from_canonical():
    s = SymmetricTensor.from_canonical([[1, 0, 0], [2, 1, 0]], [1.0, 2.0, 3.0], (3, 3), "full")
    assert s.indices.tolist() == [[0, 0, 1], [0, 1, 2]] and s.values.tolist() == [3.0, 2.0, 1.0]
    with pytest.raises(EntryError, match=r"A\[2, 1\] is not canonical"):
        SymmetricTensor.from_canonical([[0, 2], [1, 1]], [1.0, 2.0], (3, 3), "full")
    with pytest.raises(EntryError, match="duplicate entries"):
        SymmetricTensor.from_canonical([[0, 0], [1, 1]], [1.0, 2.0], (3, 3), "full")


def test_classes_bits_follow_group_order():
    # groups (0,2) and (1,3,4): bit 0 = (i0 == i2), bit 1 = (i1 == i3), bit 2 = (i3 == i4)
    idx = np.array([[0, 0, 1, 2], [1, 1, 1, 0], [0, 3, 1, 2], [1, 2, 1, 0], [2, 2, 1, 0]]).T.copy()
    s = SymmetricTensor.from_canonical(idx.T, np.ones(4), (4, 3, 4, 3, 3), [(0, 2), (1, 3, 4)])
    got = dict(zip(map(tuple, s.indices.T.tolist()), s.classes.tolist(), strict=True))
    assert got == {(0, 1, 0, 1, 2): 0b011, (0, 1, 3, 2, 2): 0b100, (1, 1, 1, 1, 1): 0b111,
                   (2, 0, 2, 0, 0): 0b111}


def test_with_values_keeps_structure_and_autograd():
    s = SymmetricTensor.from_dense(np.array([[1.0, 2.0], [2.0, 3.0]]))
    _ = s.classes, s.csr_pointers()
    w = torch.ones(s.nnz, dtype=torch.float64, requires_grad=True)
    t = s.with_values(w)
    assert t.values is w and t.indices is s.indices and t.classes is s.classes
    assert t.dtype == torch.float64
    n = s.with_values(np.array([5.0, 6.0, 7.0]))
    np.testing.assert_array_equal(n.to_dense(), [[5.0, 6.0], [6.0, 7.0]])
    with pytest.raises(ValueError, match="expected 3 values"):
        s.with_values(np.ones(2))


def test_symmetrize_matrix():
    a = np.array([[1.0, 2.0, 0.0], [5.0, 0.0, 0.0], [0.0, 3.0, 4.0]])
    t = SparseTensor.from_dense(a)
    np.testing.assert_array_equal(t.symmetrize("sum").to_dense(), a + a.T)
    np.testing.assert_array_equal(t.symmetrize("average").to_dense(), (a + a.T) / 2)
    up, lo = np.triu(a), np.tril(a)
    np.testing.assert_array_equal(t.symmetrize("upper").to_dense(), up + np.triu(a, 1).T)
    np.testing.assert_array_equal(t.symmetrize("lower").to_dense(), lo + np.tril(a, -1).T)
    assert t.symmetrize("sum").dtype == np.float64
    with pytest.raises(ValueError, match="how must be"):
        t.symmetrize("max")


def test_repr():
    s = SymmetricTensor.from_dense(np.eye(3))
    assert repr(s) == ("SymmetricTensor(shape=(3, 3), groups=((0, 1),), nnz=3 canonical "
                       "(3 expanded), dtype=float64)")
    assert repr(SparseTensor.from_dense(np.eye(2))) == "SparseTensor(shape=(2, 2), nnz=2, " \
                                                       "dtype=float64)"


# ----------------------------------------------------------------------------- properties
@st.composite
def tensors_and_groups(draw):
    ndim = draw(st.integers(1, 5))
    n = draw(st.integers(1, 4 if ndim <= 3 else 3))
    modes = list(draw(st.permutations(range(ndim))))
    groups, i = [], 0
    while i < ndim:  # a random partition of a random permutation of the modes
        g = draw(st.integers(1, ndim - i))
        if g >= 2:
            groups.append(tuple(sorted(modes[i:i + g])))
        i += g
    shape = [draw(st.integers(1, 3)) for _ in range(ndim)]
    for g in groups:
        for m in g:
            shape[m] = n
    seed = draw(st.integers(0, 2**32 - 1))
    return tuple(shape), groups, seed


@settings(max_examples=60, deadline=None)
@given(tensors_and_groups(), st.sampled_from(["sum", "average", "upper", "lower"]))
def test_symmetrize_and_expand_match_dense_reference(case, how):
    shape, groups, seed = case
    rng = np.random.default_rng(seed)
    a = random_dense(rng, shape, 0.5)
    t = SparseTensor.from_dense(a)
    s = t.symmetrize(how, groups)
    size = math.prod(math.factorial(len(g)) for g in groups)
    if how in ("sum", "average"):
        ref = perm_sum(a, groups) / (size if how == "average" else 1)
    else:
        keep = np.ones(shape, dtype=bool)
        grid = np.indices(shape)
        for g in groups:
            for p, q in itertools.pairwise(g):
                keep &= grid[p] <= grid[q] if how == "upper" else grid[p] >= grid[q]
        canon = np.where(keep, a, 0)
        ref = np.zeros_like(a)
        for x in zip(*np.nonzero(canon), strict=True):
            for y in _orbit(x, groups):
                ref[y] = canon[x]
    np.testing.assert_array_equal(s.to_dense(), ref)
    e = s.expanded()
    np.testing.assert_array_equal(e.to_dense(), ref)
    assert e.nnz == s.n_expanded == np.count_nonzero(ref)
    # canonical form, sortedness and classes
    for g in s.groups:
        for p, q in itertools.pairwise(g):
            assert (s.indices[p] <= s.indices[q]).all()
    keys = [tuple(c) for c in s.indices.T.tolist()]
    assert keys == sorted(set(keys))
    bits = [s.indices[p] == s.indices[q] for g in s.groups for p, q in itertools.pairwise(g)]
    want = sum((b.astype(np.int64) << k for k, b in enumerate(bits)), np.zeros(s.nnz, np.int64))
    assert s.classes.tolist() == want.tolist()
    # the expanded entries give back the same canonical tensor (all permutations agree)
    back = SymmetricTensor.from_coo(e.indices, e.values, e.shape, s.groups)
    np.testing.assert_array_equal(back.indices, s.indices)
    np.testing.assert_array_equal(back.values, s.values)
    dense_back = SymmetricTensor.from_dense(ref, s.groups)
    np.testing.assert_array_equal(dense_back.indices, s.indices)


def _orbit(x, groups):
    out = set()
    per = [list(itertools.permutations(g)) for g in groups]
    for combo in itertools.product(*per):
        y = list(x)
        for g, p in zip(groups, combo, strict=True):
            for src, dst in zip(g, p, strict=True):
                y[dst] = x[src]
        out.add(tuple(y))
    return out
