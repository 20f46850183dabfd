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
    for src, dtype in ((a, np.float32), (torch.from_numpy(a), torch.float32)):
        t = SparseTensor.from_dense(src)  # torch in, torch out
        assert t.dtype == dtype and t.nnz == np.count_nonzero(a)
        np.testing.assert_array_equal(np.asarray(t.to_dense()), a)


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


# ----------------------------------------------------------------------------- torch storage
def as_torch(x):
    """torch twin of a numpy array (lists and scalars pass through)."""
    return torch.from_numpy(np.array(x)) if isinstance(x, np.ndarray) else x


def host(x) -> np.ndarray:
    return x.detach().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def assert_same_tensor(t_torch, t_numpy):
    """Built from torch: torch arrays holding exactly what the numpy build holds."""
    assert type(t_torch) is type(t_numpy) and t_torch.shape == t_numpy.shape
    assert getattr(t_torch, "groups", None) == getattr(t_numpy, "groups", None)
    assert isinstance(t_torch.indices, torch.Tensor) and isinstance(t_numpy.indices, np.ndarray)
    assert isinstance(t_torch.values, torch.Tensor) and isinstance(t_numpy.values, np.ndarray)
    assert t_torch.indices.dtype == torch.int64 and t_numpy.indices.dtype == np.int64
    np.testing.assert_array_equal(host(t_torch.indices), t_numpy.indices)
    np.testing.assert_array_equal(host(t_torch.values), t_numpy.values)
    assert str(t_torch.values.dtype).removeprefix("torch.") == str(t_numpy.values.dtype)


SYM2 = np.array([[1.0, 2.0, 0.0], [2.0, 0.0, 3.0], [0.0, 3.0, 4.0]])
SHUFFLED = (np.array([[2, 0, 2, 1, 0], [1, 3, 1, 0, 0]]), np.array([1.0, 2.0, 3.0, 4.0, 5.0]), (3, 4))
FULL3 = SparseTensor.from_dense(perm_sum(random_dense(np.random.default_rng(7), (4, 4, 4), 0.3), [(0, 1, 2)]))
OFF3 = int(np.flatnonzero(np.ptp(FULL3.indices, axis=0) > 0)[3])  # an entry with a mirror


def _builds():
    """(label, constructor, numpy args, keyword args) of every way to build storage."""
    lower = (np.array([[2, 1, 1], [0, 1, 0]]), np.array([3.0, 4.0, 5.0]), (3, 3))
    both = (np.array([[1, 0, 2, 2], [0, 1, 2, 0]]), np.array([5.0, 5.0, 7.0, 6.0]), (3, 3))
    both_with_mirror = (np.array([[1, 0, 2, 2, 0], [0, 1, 2, 0, 2]]), np.array([5.0, 5.0, 7.0, 6.0, 6.0]), (3, 3))
    return [
        ("sparse from_coo", SparseTensor.from_coo, SHUFFLED, {}),
        ("sparse from_coo int32", SparseTensor.from_coo, (SHUFFLED[0], SHUFFLED[1].astype(np.int32), SHUFFLED[2]), {}),
        ("sparse from_dense", SparseTensor.from_dense, (random_dense(np.random.default_rng(3), (3, 4, 5)),), {}),
        ("sparse from_dense fill", SparseTensor.from_dense, (np.array([[np.inf, 1.0], [0.0, np.inf]]),),
         {"fill": np.inf}),
        ("sparse trusted", SparseTensor, (np.array([[0, 1], [2, 0]]), np.array([1.0, 2.0]), (2, 3)), {}),
        ("symmetric trusted", SymmetricTensor, (np.array([[0, 1], [2, 1]]), np.array([1.0, 2.0]), (3, 3)), {}),
        ("from_canonical", SymmetricTensor.from_canonical,
         (np.array([[1, 0, 0, 1], [2, 1, 0, 2]]), np.array([1.0, 2.0, 3.0, 1.0]), (3, 3), "full"), {}),
        ("from_coo one", SymmetricTensor.from_coo, lower, {"stored": "one"}),
        ("from_coo one unchecked", SymmetricTensor.from_coo, lower, {"stored": "one", "check": False}),
        ("from_coo full unchecked", SymmetricTensor.from_coo, both, {"check": False}),
        ("from_coo full", SymmetricTensor.from_coo, both_with_mirror, {}),
        ("from_coo 3d", SymmetricTensor.from_coo, (FULL3.indices, FULL3.values, FULL3.shape), {}),
        ("from_coo tolerance", SymmetricTensor.from_coo,
         (np.array([[0, 1], [1, 0]]), np.array([1.0, 1.0 + 1e-9]), (2, 2)), {"atol": 1e-8}),
        ("from_dense symmetric", SymmetricTensor.from_dense, (SYM2,), {}),
        ("from_dense partial", SymmetricTensor.from_dense,
         (perm_sum(random_dense(np.random.default_rng(4), (3, 5, 3, 5), 0.3), [(0, 2), (1, 3)]),
          [(0, 2), (1, 3)]), {}),
        ("huge", SymmetricTensor.from_coo,
         (np.array([[2_999_999_999], [1], [2_999_999_998]]), np.array([1.0]), (3_000_000_000,) * 3), {"stored": "one"}),
    ]


@pytest.mark.parametrize(("label", "build", "args", "kwargs"), _builds(), ids=[b[0] for b in _builds()])
def test_torch_construction_equals_numpy(label, build, args, kwargs):
    from_numpy = build(*args, **kwargs)
    from_torch = build(*[as_torch(a) for a in args], **kwargs)
    assert_same_tensor(from_torch, from_numpy)
    # everything derived from the structure follows the kind, with the same content
    for derived in ("csr_pointers", "to_dense"):
        if math.prod(from_numpy.shape) > 10**6:
            continue
        got, want = getattr(from_torch, derived)(), getattr(from_numpy, derived)()
        assert isinstance(got, torch.Tensor) and isinstance(want, np.ndarray)
        np.testing.assert_array_equal(host(got), want)
    if isinstance(from_numpy, SymmetricTensor) and from_numpy.ndim < 3 or label == "from_coo 3d":
        assert isinstance(from_torch.classes, torch.Tensor) and from_torch.classes.dtype == torch.uint8
        np.testing.assert_array_equal(host(from_torch.classes), from_numpy.classes)
        assert from_torch.n_expanded == from_numpy.n_expanded
        (s_t, take_t), (s_n, take_n) = from_torch.expansion(), from_numpy.expansion()
        np.testing.assert_array_equal(host(s_t.indices), s_n.indices)
        np.testing.assert_array_equal(host(take_t), take_n)
        assert_same_tensor(from_torch.expanded(), from_numpy.expanded())
        for how in ("sum", "upper", "lower"):
            assert_same_tensor(from_torch.symmetrize(how), from_numpy.symmetrize(how))


def _failures():
    """(label, callable, numpy args, kwargs): every construction error."""
    return [
        ("out of range", SparseTensor.from_coo, ([[0, 1], [1, 5]], np.array([1.0, 2.0]), (3, 4)), {}),
        ("negative index", SymmetricTensor.from_coo, (np.array([[0, -1], [1, 0]]), np.array([1.0, 2.0]), (3, 3)), {}),
        ("float indices", SparseTensor.from_coo, (np.array([[0.0, 1.0]]), np.array([1.0, 2.0]), (3,)), {}),
        ("index shape", SparseTensor.from_coo, (np.array([[0, 1]]), np.array([1.0, 2.0]), (3, 3)), {}),
        ("values shape", SparseTensor.from_coo, (np.array([[0, 1]]), np.array([1.0, 2.0, 3.0]), (3,)), {}),
        ("duplicates", SparseTensor.from_coo, (np.array([[2, 0, 2], [1, 0, 1]]), np.array([1.0, 2.0, 3.0]), (3, 3)),
         {"sum_duplicates": False}),
        ("unsorted", SparseTensor, (np.array([[1, 0]]), np.array([1.0, 2.0]), (2,)), {}),
        ("not canonical", SymmetricTensor, (np.array([[1], [0]]), np.array([1.0]), (2, 2)), {}),
        ("canonical input not canonical", SymmetricTensor.from_canonical,
         (np.array([[0, 2], [1, 1]]), np.array([1.0, 2.0]), (3, 3), "full"), {}),
        ("canonical duplicates", SymmetricTensor.from_canonical,
         (np.array([[1, 0, 0], [1, 1, 1]]), np.array([3.0, 1.0, 2.0]), (3, 3), "full"), {}),
        ("missing mirror", SymmetricTensor.from_coo, (np.array([[2, 1], [0, 1]]), np.array([3.0, 4.0]), (3, 3)), {}),
        ("missing mirror 3d", SymmetricTensor.from_coo,
         (np.delete(FULL3.indices, OFF3, axis=1), np.delete(FULL3.values, OFF3), FULL3.shape), {}),
        ("asymmetric", SymmetricTensor.from_coo, (np.array([[1, 0], [0, 1]]), np.array([6.0, 5.0]), (3, 3)), {}),
        ("asymmetric nan", SymmetricTensor.from_coo,
         (np.array([[0, 1], [1, 0]]), np.array([np.nan, 1.0]), (2, 2)), {}),
        ("asymmetric partial", SymmetricTensor.from_coo,
         (np.array([[0, 2, 0], [1, 1, 1], [2, 0, 2], [3, 3, 3]]), np.array([1.0, 1.0, 2.0]), (3, 4, 3, 4)),
         {"groups": [(0, 2), (1, 3)]}),
        ("two arrangements", SymmetricTensor.from_coo, (np.array([[1, 0], [0, 1]]), np.array([5.0, 5.0]), (3, 3)),
         {"stored": "one"}),
        ("duplicates disagree", SymmetricTensor.from_coo,
         (np.array([[1, 1], [0, 0]]), np.array([6.0, 7.0]), (3, 3)), {}),
        ("duplicates disagree unchecked", SymmetricTensor.from_coo,
         (np.array([[0, 0], [1, 1]]), np.array([6.0, 7.0]), (3, 3)), {"check": False}),
        ("dense asymmetric", SymmetricTensor.from_dense, (np.array([[0.0, 1.5], [2.0, 0.0]]),), {}),
        ("dense asymmetric 3d", SymmetricTensor.from_dense,
         (np.arange(27.0).reshape(3, 3, 3),), {"groups": [(1, 2)], "name": "T"}),
    ]


@pytest.mark.parametrize(("label", "build", "args", "kwargs"), _failures(), ids=[f[0] for f in _failures()])
def test_torch_errors_equal_numpy(label, build, args, kwargs):
    with pytest.raises(ValueError) as from_numpy:
        build(*args, **kwargs)
    with pytest.raises(ValueError) as from_torch:
        build(*[as_torch(a) for a in args], **kwargs)
    assert type(from_torch.value) is type(from_numpy.value)
    assert str(from_torch.value) == str(from_numpy.value)
    assert getattr(from_torch.value, "positions", ()) == getattr(from_numpy.value, "positions", ())


@pytest.mark.parametrize("indices", [
    [[0, 2, 1], [1, 0, 2]],  # not canonical
    [[0, 0, 1], [1, 1, 2]],  # repeats
    [[1, 0], [1, 1]],  # comes before
    [[0, 7], [1, 1]],  # outside
])
def test_check_coordinates_torch_equals_numpy(indices):
    from systec_gpu.storage import check_coordinates

    messages = []
    for idx in (np.array(indices), torch.tensor(indices)):
        with pytest.raises(EntryError) as error:
            check_coordinates(idx, (3, 3), ((0, 1),))
        messages.append((str(error.value), error.value.positions))
    assert messages[0] == messages[1]


def test_values_keep_requires_grad():
    idx = torch.tensor([[2, 0, 2, 1], [1, 3, 1, 0]])
    v = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64, requires_grad=True)
    t = SparseTensor.from_coo(idx, v, (3, 4))
    assert t.values.requires_grad
    t.values.sum().backward()  # every input entry reaches one stored entry once
    np.testing.assert_array_equal(v.grad.numpy(), [1.0, 1.0, 1.0, 1.0])
    # symmetric: the canonical arrangement's value is the stored one
    w = torch.tensor([5.0, 5.0, 7.0], dtype=torch.float64, requires_grad=True)
    s = SymmetricTensor.from_coo(torch.tensor([[1, 0, 2], [0, 1, 2]]), w, (3, 3))
    (s.values * torch.tensor([1.0, 10.0], dtype=torch.float64)).sum().backward()
    np.testing.assert_array_equal(w.grad.numpy(), [0.0, 1.0, 10.0])
    dense = torch.from_numpy(SYM2.copy()).requires_grad_()
    d = SymmetricTensor.from_dense(dense)
    assert d.values.requires_grad
    d.values.sum().backward()
    np.testing.assert_array_equal(dense.grad.numpy(), np.triu(SYM2 != 0))
    # with_values keeps it, on numpy and on torch structures, and so does the expansion
    for structure in (SymmetricTensor.from_dense(SYM2), SymmetricTensor.from_dense(torch.from_numpy(SYM2))):
        grad_values = torch.ones(structure.nnz, dtype=torch.float64, requires_grad=True)
        moved = structure.with_values(grad_values)
        assert moved.values is grad_values and moved._cache is structure._cache
        expanded = moved.expanded()
        assert expanded.values.requires_grad
        expanded.values.sum().backward()
        np.testing.assert_array_equal(grad_values.grad.numpy(), [1.0, 2.0, 2.0, 1.0])  # diagonal once, pairs twice
        dense_again = moved.to_dense()
        assert isinstance(dense_again, torch.Tensor) and dense_again.requires_grad


def test_to_round_trips_and_structure_cache():
    s = SymmetricTensor.from_dense(SYM2)
    _ = s.csr_pointers(), s.classes, s.n_expanded
    t = s.to("cpu")  # numpy -> torch on the CPU: the same memory, the same structure
    assert isinstance(t.indices, torch.Tensor) and isinstance(t.values, torch.Tensor)
    assert t.device == torch.device("cpu") and s.device == torch.device("cpu")
    assert t._cache is s._cache
    assert isinstance(t.csr_pointers(), torch.Tensor) and isinstance(s.csr_pointers(), np.ndarray)  # by kind
    np.testing.assert_array_equal(t.csr_pointers().numpy(), s.csr_pointers())
    back = t.numpy()
    assert isinstance(back.indices, np.ndarray) and back._cache is s._cache
    np.testing.assert_array_equal(back.indices, s.indices)
    np.testing.assert_array_equal(back.values, s.values)
    assert t.cpu()._cache is s._cache
    # a structure that moved is a new structure: nothing cached for the old place comes along
    meta = t.to("meta")
    assert meta.indices.device.type == "meta" and meta._cache is not s._cache and meta._cache == {}
    # values requiring grad move differentiably
    v = torch.ones(s.nnz, dtype=torch.float64, requires_grad=True)
    moved = s.with_values(v).to("cpu")
    assert moved.values.requires_grad


def test_with_values_shares_structure_cache_only():
    s = SymmetricTensor.from_dense(torch.from_numpy(SYM2))
    _ = s.csr_pointers(), s.classes, s.expansion()
    twice = s.with_values(s.values * 2)
    assert twice._cache is s._cache and twice.indices is s.indices
    np.testing.assert_array_equal(twice.to_dense().numpy(), 2 * SYM2)
    # the cache holds structure only: no entry changes with the values
    for value in s._cache.values():
        arrays = value if isinstance(value, tuple) else (value,)
        for array in arrays:
            if isinstance(array, torch.Tensor):
                assert array.dtype in (torch.int64, torch.int32, torch.uint8)
    numpy_values = s.with_values(np.array([1.0, 2.0, 3.0, 4.0]))  # numpy values on a torch structure
    assert isinstance(numpy_values.values, torch.Tensor)


# ----------------------------------------------------------------------------- blocks
@pytest.fixture
def tiny_blocks(monkeypatch):
    """Blocks of 3 entries: every blockwise pass crosses block boundaries."""
    from systec_gpu import arrays

    monkeypatch.setattr(arrays.NumpyOps, "chunk", 3)
    monkeypatch.setattr(arrays.TorchOps, "chunk", 3)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 4), st.integers(0, 40), st.integers(0, 2**32 - 1), st.booleans())
def test_from_coo_matches_reference_in_small_blocks(ndim, nnz, seed, use_torch):
    from systec_gpu import arrays

    saved = arrays.NumpyOps.chunk, arrays.TorchOps.chunk
    arrays.NumpyOps.chunk = arrays.TorchOps.chunk = 3
    try:
        rng = np.random.default_rng(seed)
        shape = (3,) * ndim
        idx = rng.integers(0, 3, (ndim, nnz))
        vals = rng.integers(1, 5, nnz).astype(np.float64)
        want: dict = {}
        for col, v in zip(map(tuple, idx.T.tolist()), vals.tolist(), strict=True):
            want[col] = want.get(col, 0.0) + v
        convert = as_torch if use_torch else (lambda x: x)
        t = SparseTensor.from_coo(convert(idx), convert(vals), shape)
        got = dict(zip(map(tuple, host(t.indices).T.tolist()), host(t.values).tolist(), strict=True))
        assert got == want and list(got) == sorted(want)
        if ndim >= 2:  # one triangle in random arrangements, with agreeing repeats
            canon = {tuple(sorted(c)): v for c, v in want.items()}
            coords = [tuple(rng.permutation(c)) for c in canon]
            values = list(canon.values())
            coords, values = coords + coords[:2], values + values[:2]
            s = SymmetricTensor.from_coo(convert(np.array(coords, dtype=np.int64).T.reshape(ndim, -1)),
                                         convert(np.array(values)), shape, stored="one")
            got = dict(zip(map(tuple, host(s.indices).T.tolist()), host(s.values).tolist(), strict=True))
            assert got == canon and list(got) == sorted(canon)
            full = s.expanded()
            back = SymmetricTensor.from_coo(full.indices, full.values, shape)  # every permutation stored
            np.testing.assert_array_equal(host(back.indices), host(s.indices))
            assert back.n_expanded == s.n_expanded == full.nnz
    finally:
        arrays.NumpyOps.chunk, arrays.TorchOps.chunk = saved


def test_errors_in_small_blocks_name_the_same_entries(tiny_blocks):
    e = SparseTensor.from_dense(perm_sum(random_dense(np.random.default_rng(5), (5, 5), 0.6), [(0, 1)]))
    order = np.random.default_rng(0).permutation(e.nnz)
    idx, vals = e.indices[:, order], e.values[order].copy()
    off = int(np.flatnonzero(idx[0, :] != idx[1, :])[-1])
    vals[off] += 1.0
    with pytest.raises(EntryError, match="is not symmetric in modes") as error:
        SymmetricTensor.from_coo(idx, vals, e.shape)
    assert off in error.value.positions
    with pytest.raises(EntryError, match="without its mirror"):
        SymmetricTensor.from_coo(np.delete(idx, off, axis=1), np.delete(e.values[order], off), e.shape)
    with pytest.raises(EntryError, match=r"A is not symmetric in modes \(0, 1\)"):
        SymmetricTensor.from_dense(np.triu(np.ones((5, 5))))


# ----------------------------------------------------------------------------- memory
def _peak(build) -> int:
    import tracemalloc

    tracemalloc.start()
    try:
        result = build()
        return tracemalloc.get_traced_memory()[1], result
    finally:
        tracemalloc.stop()


def test_building_peaks_below_one_and_a_half_times_the_input(monkeypatch):
    """tracemalloc peak of the allocations a build makes (its output included), against the
    bytes of the coordinates and values given: at most 1.5x (3.4-3.8x before the key sort)."""
    from systec_gpu import arrays

    monkeypatch.setattr(arrays.NumpyOps, "chunk", 1 << 13)  # blocks small against 1e5 entries, as 2**20 is at 1e7
    rng = np.random.default_rng(0)
    n, size = 100_000, 50_000
    idx = rng.integers(0, size, (2, n))
    vals = rng.uniform(0.5, 2.0, n)
    raw = idx.nbytes + vals.nbytes
    peak, _ = _peak(lambda: SparseTensor.from_coo(idx, vals, (size, size)))
    assert peak <= 1.5 * raw, peak / raw
    canonical = np.sort(idx, axis=0)
    canonical = canonical[:, np.unique(canonical[0] * size + canonical[1], return_index=True)[1]]
    full = np.concatenate([canonical, canonical[::-1]], axis=1)  # both triangles, diagonal twice
    full_vals = np.tile(rng.uniform(0.5, 2.0, canonical.shape[1]), 2)
    order = rng.permutation(full.shape[1])
    full, full_vals = full[:, order], full_vals[order]
    peak, s = _peak(lambda: SymmetricTensor.from_coo(full, full_vals, (size, size)))
    assert peak <= 1.5 * (full.nbytes + full_vals.nbytes), peak / (full.nbytes + full_vals.nbytes)
    # the kernel's expanded structure: its own size (int32 coordinates, take) plus at most 1x the input
    own = s.n_expanded * (2 * 4 + 4)
    raw_canonical = s.indices.nbytes + s.values.nbytes
    peak, (coords, take) = _peak(lambda: s.expanded_coordinates(np.int32, np.int32))
    assert coords.shape == (2, s.n_expanded) and peak <= own + raw_canonical, (peak - own) / raw_canonical


def test_from_dense_peaks_at_its_output(monkeypatch):
    from systec_gpu import arrays

    monkeypatch.setattr(arrays.NumpyOps, "chunk", 1 << 13)
    rng = np.random.default_rng(1)
    a = perm_sum(random_dense(rng, (1000, 1000), 0.5), [(0, 1)])
    peak, s = _peak(lambda: SymmetricTensor.from_dense(a))
    output = s.indices.nbytes + s.values.nbytes
    assert peak <= output + 0.1 * a.nbytes, (peak - output) / a.nbytes  # was 4x the dense input


@pytest.mark.parametrize("bound", [2**20, 2**50, 2**62])  # one packed sort; two and three digits
def test_numpy_sort_with_order_is_a_stable_argsort(bound):
    from systec_gpu.arrays import NUMPY

    rng = np.random.default_rng(bound % 97)
    key = rng.integers(0, bound, 5000)
    key[:1000] = key[1000:2000]  # ties keep their input order
    got, order = NUMPY.sort_with_order(key.copy(), bound)
    want = np.argsort(key, kind="stable")
    np.testing.assert_array_equal(order, want)
    np.testing.assert_array_equal(got, key[want])


def test_torch_storage_saves_and_converts_like_numpy(tmp_path):
    import systec_gpu as sg
    from systec_gpu.io.convert import to_numpy, to_scipy, to_torch

    for build in (lambda a: a, torch.from_numpy):
        s = SymmetricTensor.from_dense(build(SYM2))
        for suffix in ("mtx", "mtx.gz", "tns"):
            path = tmp_path / f"a.{suffix}"
            sg.save(path, s)
            back = sg.load(path)
            np.testing.assert_array_equal(host(back.to_dense()), SYM2)
        np.testing.assert_array_equal(to_numpy(s), SYM2)
        np.testing.assert_array_equal(to_scipy(s).toarray(), SYM2)
        np.testing.assert_array_equal(to_torch(s).to_dense().numpy(), SYM2)
        np.testing.assert_array_equal(to_torch(s, "strided").numpy(), SYM2)
