"""Tensor storage: sparse COO tensors and symmetric tensors holding only canonical nonzeros.

A tensor holds its arrays in the kind it was given and computes with that library, where the
data lives: numpy arrays stay numpy; torch tensors stay torch tensors on their device, and
canonicalization, sorting, merging, checks, classes, pointers and expansion run there with torch
ops. One implementation, written against the small namespace of `arrays.py`.

Memory: every pass over the nonzeros that needs temporaries runs blockwise (blocks of at most `xp.chunk`
entries); the sort is over one int64 key per entry (coordinates in mixed radix, and for
symmetric inputs the arrangement of each entry within its canonical point as the last digit),
and the output coordinates are decoded from the sorted keys in place, so that building peaks at
the output plus about two int64 arrays. The only Python loops run over modes, groups, the g!
permutations of a group and those blocks, never over nonzeros. Indices are int64 throughout.
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .arrays import NUMPY, NumpyOps, is_cupy, is_torch, namespace

Groups = tuple[tuple[int, ...], ...]
_I64_MAX = 2**63 - 1
_is_torch = is_torch  # the call path's test of an input's kind


class EntryError(ValueError):
    """An entry conflicts with another (asymmetry, disagreeing duplicates, out of range).

    ``positions`` holds the input positions of the offending entries, so that file readers can
    translate them into line numbers.
    """

    def __init__(self, message: str, positions: tuple[int, ...] = ()):
        super().__init__(message)
        self.positions = positions


# ----------------------------------------------------------------------------- helpers
def _to_numpy(x: Any) -> np.ndarray:
    """A host numpy array of any array (a view of a CPU tensor; bfloat16 as float32)."""
    return namespace(x).to_host(x)


def _fmt(name: str, coord: Sequence[int]) -> str:
    return f"{name}[{', '.join(str(int(c)) for c in coord)}]"


def _val(v: Any) -> str:
    return repr(v.item() if hasattr(v, "item") else v)


def _column(xp: NumpyOps, idx: Any, k: int) -> list[int]:
    """Coordinates of entry `k` on the host (error messages)."""
    return [int(c) for c in xp.to_host(idx[:, k])]


def _block_size(xp: NumpyOps, n: int) -> int:
    """Entries per block of a blockwise pass over `n`: at most `xp.chunk` (temporaries of a few
    MiB at any size), and at most a sixteenth of the pass above `xp.min_chunk` (so that small
    inputs peak low too, without many tiny blocks)."""
    return min(xp.chunk, max(xp.min_chunk, -(-n // 16)))


def _blocks(xp: NumpyOps, n: int):
    size = _block_size(xp, n)
    for start in range(0, n, size):
        yield start, min(n, start + size)


def _agree(a: Any, b: Any, atol: float, rtol: float) -> Any:
    """Elementwise value agreement; NaN agrees with NaN."""
    xp = namespace(a, b)
    eq = a == b
    if xp.is_floating(a.dtype):
        eq |= xp.isnan(a) & xp.isnan(b)
    if (atol or rtol) and xp.is_numeric(a.dtype):
        with xp.errstate():
            diff = xp.abs(xp.astype(a, xp.float64) - b) if xp.is_integer(a.dtype) else xp.abs(a - b)
            eq |= diff <= atol + rtol * xp.abs(b)
    return eq


def _sorting_network(xp: NumpyOps, rows: list) -> list:
    """The rows sorted elementwise (odd-even transposition network): new arrays, inputs kept."""
    rows = list(rows)
    for r in range(len(rows)):
        for t in range(r % 2, len(rows) - 1, 2):
            lo = xp.minimum(rows[t], rows[t + 1])
            rows[t + 1] = xp.maximum(rows[t], rows[t + 1])
            rows[t] = lo
    return rows


def _canonicalize(indices: Any, groups: Groups) -> Any:
    """Sort the coordinates within each group."""
    xp = namespace(indices)
    out = xp.copy(indices)
    for grp in groups:
        for p, row in zip(grp, _sorting_network(xp, [indices[p] for p in grp]), strict=True):
            out[p] = row
    return out


def _canonical_mask(indices: Any, groups: Groups, descending: bool = False) -> Any:
    xp = namespace(indices)
    ok = xp.ones(indices.shape[1], xp.bool)
    for grp in groups:
        for a, b in itertools.pairwise(grp):
            ok &= indices[a] >= indices[b] if descending else indices[a] <= indices[b]
    return ok


def _adjacent_cmp(indices: Any) -> tuple[Any, Any]:
    """For consecutive columns: (equal, less) masks of the lexicographic comparison.

    Built from per-mode boolean comparisons only: no int64 temporaries."""
    xp = namespace(indices)
    n = max(indices.shape[1] - 1, 0)
    equal, less = xp.ones(n, xp.bool), xp.zeros(n, xp.bool)
    for m in reversed(range(indices.shape[0])):  # from the minor mode to the major one
        a, b = indices[m, :-1], indices[m, 1:]
        less = xp.where(a == b, less, a < b)
        equal &= a == b
    return equal, less


def _equal_bits(indices: Any, groups: Groups) -> list[list[Any]]:
    return [[indices[a] == indices[b] for a, b in itertools.pairwise(g)] for g in groups]


def _stabilizer(canon: Any, groups: Groups) -> Any:
    """Group permutations fixing each canonical entry: the product of run-length factorials.
    `canon`: an [ndim, n] array or a list of its rows."""
    first = canon if hasattr(canon, "shape") else canon[0]
    xp = namespace(first)
    n = int(canon.shape[1]) if hasattr(canon, "shape") else int(canon[0].shape[0])
    stab = xp.ones(n, xp.int64)
    for bits in _equal_bits(canon, groups):
        run = xp.ones(n, xp.int64)
        for eq in bits:
            run = xp.where(eq, run + 1, 1)
            stab *= run
    return stab


def _n_expanded(indices: Any, groups: Groups) -> int:
    """Number of distinct permutations of all canonical entries (blockwise: small temporaries)."""
    xp = namespace(indices)
    full = math.prod(math.factorial(len(g)) for g in groups)
    if full == 1:
        return int(indices.shape[1])
    return sum(int((full // _stabilizer(indices[:, a:b], groups)).sum())
               for a, b in _blocks(xp, indices.shape[1]))


def _group_perms(groups: Groups, ndim: int):
    """Yield (per-group slot permutations, full mode map) over the product of group permutations."""
    per = [list(itertools.permutations(range(len(g)))) for g in groups]
    for combo in itertools.product(*per):
        dest = list(range(ndim))  # dest[m] = mode that receives the coordinate of mode m
        for grp, s in zip(groups, combo, strict=True):
            for t, st in enumerate(s):
                dest[grp[t]] = grp[st]
        yield combo, dest


# ----------------------------------------------------------------------------- sort keys
def _word_plan(radices: list[int]) -> list[list[int]]:
    """Digits packed into int64 words, major first: consecutive digits while their volume fits."""
    words, current, volume = [], [], 1
    for d, radix in enumerate(radices):
        if current and volume * max(radix, 1) > _I64_MAX:
            words.append(current)
            current, volume = [], 1
        current.append(d)
        volume *= max(radix, 1)
    return [*words, current] if current else words


class _Keys:
    """Mixed-radix keys of `n` digit tuples (coordinates, then an optional last digit), packed
    into int64 words, major first: one word unless the volume overflows int64. Built block by
    block, sorted with ties in input order (`order`: sorted position -> input position, None
    for the identity), compacted and decoded in place: the words are scratch."""

    def __init__(self, xp: NumpyOps, n: int, radices: Sequence[int]):
        self.xp, self.n, self.radices = xp, n, [int(r) for r in radices]
        self.plan = _word_plan(self.radices)
        self.words = [xp.empty(n, xp.int64) for _ in self.plan]
        self.order: Any = None
        self._filled = 0

    def append(self, digits: list) -> None:
        """The keys of the next entries, given one array per digit."""
        start = self._filled
        stop = start + int(digits[0].shape[0])
        for word, plan in zip(self.words, self.plan, strict=True):
            acc = word[start:stop]
            acc[...] = digits[plan[0]]
            for d in plan[1:]:
                acc *= self.radices[d]
                acc += digits[d]
        self._filled = stop

    def sort(self, unique: bool = False) -> None:
        """Sort; ties keep their input order (`unique`: there are none, any sort will do)."""
        xp = self.xp
        if self.n < 2:
            return
        if len(self.words) == 1:
            word = self.words[0]
            if bool((word[1:] >= word[:-1]).all()):  # often sorted already (files, scipy)
                return
            bound = math.prod(max(self.radices[d], 1) for d in self.plan[0])
            self.words[0], self.order = xp.sort_with_order(word, bound, unique=unique)
        else:
            self.order = xp.lexsort(self.words)
            self.words = [w[self.order] for w in self.words]

    def position(self, k: int) -> int:
        """Input position of the k-th sorted key."""
        return k if self.order is None else int(self.order[k])

    def same_as_previous(self, start: int, stop: int, drop_last: bool = False) -> Any:
        """For sorted positions max(start, 1) .. stop-1: whether the key equals the previous one
        (`drop_last`: ignoring the last digit)."""
        xp, lo = self.xp, max(start, 1)
        equal = None
        for i, (word, plan) in enumerate(zip(self.words, self.plan, strict=True)):
            current, previous = word[lo:stop], word[lo - 1:stop - 1]
            if drop_last and i == len(self.words) - 1:
                if len(plan) == 1:
                    continue  # this word is the last digit alone
                radix = self.radices[plan[-1]]
                current, previous = current // radix, previous // radix
            same = current == previous
            equal = same if equal is None else equal & same
        return xp.ones(stop - lo, xp.bool) if equal is None else equal

    def digits_at(self, k: int) -> list[int]:
        """The digits of the k-th sorted key, on the host (error messages)."""
        out = [0] * len(self.radices)
        for word, plan in zip(self.words, self.plan, strict=True):
            value = int(self.xp.to_host(word[k:k + 1])[0])
            for d in reversed(plan[1:]):
                value, out[d] = divmod(value, self.radices[d])
            out[plan[0]] = value
        return out

    def digits(self, selected: list) -> list:
        """Digit arrays of selected keys (one array per word, copies the caller made)."""
        out: list[Any] = [None] * len(self.radices)
        for word, plan in zip(selected, self.plan, strict=True):
            for d in reversed(plan[1:]):
                out[d] = word % self.radices[d]
                self.xp.floor_divide_(word, self.radices[d])
            out[plan[0]] = word
        return out

    def compact(self, keep: Any) -> int:
        """Keep the keys where `keep` (in place, block by block); returns their number."""
        return _compact(self.xp, self.words, keep)

    def decode(self, count: int, out: Any, ndigits: int) -> None:
        """Digits 0 .. ndigits-1 of the first `count` keys into the rows of `out` (an array or a
        list of arrays, in their dtype), block by block, consuming the words."""
        for a, b in _blocks(self.xp, count):
            for word, plan in zip(self.words, self.plan, strict=True):
                block = word[a:b]
                for d in reversed(plan[1:]):
                    if d < ndigits:
                        out[d][a:b] = block % self.radices[d]
                    self.xp.floor_divide_(block, self.radices[d])
                if plan[0] < ndigits:
                    out[plan[0]][a:b] = block


def _compact(xp: NumpyOps, arrays: list, keep: Any) -> int:
    """Move the entries where `keep` to the front of each array, in place, block by block (an
    entry moves only backwards, onto positions already read); returns their number."""
    count = 0
    for a, b in _blocks(xp, int(keep.shape[0])):
        mask = keep[a:b]
        moved = 0
        for array in arrays:
            part = array[a:b][mask]
            moved = int(part.shape[0])
            array[count:count + moved] = part
        if not arrays:
            moved = int(mask.sum())
        count += moved
    return count


def _take_where(xp: NumpyOps, values: Any, order: Any, keep: Any, count: int) -> Any:
    """values[order][keep] (order None: the identity), block by block into a new array; one
    gather when the values carry autograd (so that the graph has one node)."""
    if getattr(values, "requires_grad", False):
        positions = xp.flatnonzero(keep)
        return values[positions if order is None else order[positions]]
    out = xp.empty(count, values.dtype)
    filled = 0
    for a, b in _blocks(xp, int(keep.shape[0])):
        positions = xp.arange(a, b)[keep[a:b]]
        part = values[positions if order is None else order[positions]]
        out[filled:filled + int(part.shape[0])] = part
        filled += int(part.shape[0])
    return out


def _gather(values: Any, order: Any) -> Any:
    """values[order] (a new array; order None: a copy)."""
    if order is None:
        return namespace(values).copy(values)
    return values[order]


# ----------------------------------------------------------------------------- validation
def normalize_groups(groups: Any, shape: tuple[int, ...], name: str = "A") -> Groups:
    """Validate mode groups: ``"full"``, ``()`` or a list of tuples of 0-based mode positions."""
    ndim = len(shape)
    if groups is True:
        groups = "full"
    if isinstance(groups, str):
        if groups != "full":
            raise ValueError(f"{name}: unknown symmetry {groups!r} (use 'full' or mode groups)")
        groups = [tuple(range(ndim))] if ndim >= 2 else []
    elif groups is None or groups is False:
        groups = []
    elif len(groups) and all(isinstance(m, int | np.integer) for m in groups):
        groups = [tuple(groups)]  # a single group given as a flat tuple
    out, seen = [], set()
    for grp in groups:
        g = tuple(sorted(int(m) for m in grp))
        if len(g) < 2:
            raise ValueError(f"{name}: symmetric group {tuple(grp)} needs at least 2 modes")
        if len(set(g)) != len(g):
            raise ValueError(f"{name}: symmetric group {tuple(grp)} repeats a mode")
        if any(m < 0 or m >= ndim for m in g):
            raise ValueError(f"{name}: symmetric group {tuple(grp)} has a mode outside 0..{ndim-1}")
        if seen & set(g):
            raise ValueError(f"{name}: symmetric group {tuple(grp)} overlaps another group")
        if len({shape[m] for m in g}) != 1:
            sizes = tuple(shape[m] for m in g)
            raise ValueError(f"{name}: symmetric group {g} has modes of unequal sizes {sizes}")
        seen |= set(g)
        out.append(g)
    return tuple(sorted(out))


def _coo_arrays(indices: Any, values: Any, shape: Sequence[int], name: str):
    """(namespace, int64 indices [ndim, nnz], values [nnz], shape) of a COO input, checked: in
    the library of the first torch array given (on its device), numpy otherwise."""
    xp = namespace(indices, values)
    idx = xp.asarray(indices)
    shape = tuple(int(s) for s in shape)
    if idx.ndim == 1 and len(shape) == 1:
        idx = idx[None, :]
    if idx.ndim != 2 or idx.shape[0] != len(shape):
        raise ValueError(f"{name}: indices must have shape [{len(shape)}, nnz], got {tuple(idx.shape)}")
    if math.prod(idx.shape) and not xp.is_integer(idx.dtype):
        raise ValueError(f"{name}: indices must be integers, got dtype {xp.dtype_name(idx.dtype)}")
    idx = xp.as_dtype(idx, xp.int64)  # read by rows: any strides, no copy of an int64 input
    n = int(idx.shape[1])
    vals = xp.asarray(values)
    if vals.ndim == 0:
        vals = xp.full(n, vals)
    if tuple(vals.shape) != (n,):
        raise ValueError(f"{name}: {n} index columns but values of shape {tuple(vals.shape)}")
    if any(s < 0 for s in shape):
        raise ValueError(f"{name}: negative mode size in shape {shape}")
    for m, size in enumerate(shape):
        k = xp.first_true((idx[m] < 0) | (idx[m] >= size))
        if k is not None:
            coord = _column(xp, idx, k)
            raise EntryError(f"{name}: entry {_fmt(name, coord)} has index {coord[m]} in mode {m}, "
                             f"outside the mode size {size}", (k,))
    return xp, idx, vals, shape


def check_coordinates(indices: Any, shape: Sequence[int], groups: Groups = (), name: str = "A") -> None:
    """Raise EntryError naming the operand and its first bad entry unless `indices` ([ndim, nnz]
    integers, numpy or torch on any device) are in range, canonical within `groups`, and sorted
    lexicographically without repeats: what every kernel assumes of a sparse operand (CSR
    pointers, chunk bounds, run detection), so no kernel reads or writes out of bounds.
    Vectorized in the indices' own library, where they live; one scalar comes back unless it
    fails."""
    xp = namespace(indices)
    idx = xp.asarray(indices)
    ndim, nnz = (idx.shape[0], int(idx.shape[1])) if idx.ndim == 2 else (None, None)
    if ndim != len(shape):
        raise ValueError(f"{name}: indices must have shape [{len(shape)}, nnz], got {tuple(idx.shape)}")
    if nnz == 0:
        return
    if not xp.is_integer(idx.dtype):
        raise ValueError(f"{name}: indices must be integers, got {xp.dtype_name(idx.dtype)}")
    outside = xp.zeros(nnz, xp.bool)
    for m, size in enumerate(shape):
        outside |= (idx[m] < 0) | (idx[m] >= size)
    unordered = xp.zeros(nnz, xp.bool)
    for group in groups:
        for p, q in itertools.pairwise(group):
            unordered |= idx[p] > idx[q]
    equal, later = _adjacent_cmp(idx)  # later: column k+1 comes after column k
    if not bool(outside.any() | unordered.any() | ~later.all()):
        return
    k = xp.first_true(outside)
    if k is not None:
        coord = _column(xp, idx, k)
        m = next(m for m, c in enumerate(coord) if not 0 <= c < shape[m])
        raise EntryError(f"{name}: entry {k} {_fmt(name, coord)} has index {coord[m]} in mode {m}, "
                         f"outside the mode size {shape[m]}", (k,))
    k = xp.first_true(unordered)
    if k is not None:
        raise EntryError(f"{name}: entry {k} {_fmt(name, _column(xp, idx, k))} is not canonical for groups "
                         f"{tuple(groups)} (coordinates must be nondecreasing within a group)", (k,))
    k = xp.first_true(~later)
    what = "repeats" if bool(equal[k]) else "comes before"
    raise EntryError(f"{name}: entries must be sorted lexicographically without repeats, but entry {k} "
                     f"{_fmt(name, _column(xp, idx, k))} {what} entry {k + 1} {_fmt(name, _column(xp, idx, k + 1))} "
                     "(SymmetricTensor.from_coo / SparseTensor.from_coo sort and merge them)", (k, k + 1))


def _slabs(xp: NumpyOps, shape: Sequence[int]):
    """Blocks of leading-axis rows holding about one block's entries each."""
    per_row = max(math.prod(shape[1:]), 1)
    rows = max(1, _block_size(xp, shape[0] * per_row) // per_row)
    for start in range(0, shape[0], rows):
        yield start, min(shape[0], start + rows)


def check_dense_symmetry(a: Any, groups: Groups, name: str = "A", atol: float = 0.0,
                         rtol: float = 0.0) -> None:
    """Raise EntryError naming one pair of entries of dense `a` (numpy or torch) that breaks the
    symmetry: the first in row-major order. Compared slab by slab (small temporaries)."""
    xp = namespace(a)
    for g in groups:
        for p, q in itertools.pairwise(g):  # adjacent transpositions generate the group
            swapped = xp.swapaxes(a, p, q)
            for r0, r1 in _slabs(xp, a.shape):
                bad = ~_agree(a[r0:r1], swapped[r0:r1], atol, rtol)
                k = xp.first_true(bad)
                if k is None:
                    continue
                x = [int(c) for c in np.unravel_index(k, tuple(bad.shape))]
                x[0] += r0
                y = list(x)
                y[p], y[q] = x[q], x[p]
                raise EntryError(
                    f"{name} is not symmetric in modes {g}: {_fmt(name, x)} = "
                    f"{_val(a[tuple(x)])} but {_fmt(name, y)} = {_val(a[tuple(y)])}")


def _dense_entries(a: Any, fill: float, groups: Groups) -> tuple[Any, Any]:
    """(int64 coordinates [ndim, k], values) of the entries of dense `a` that differ from `fill`
    (NaN is kept) and are canonical within `groups`, in row-major order. Two passes over slabs
    (count, then fill the preallocated output): the peak is the output plus one slab's masks."""
    xp = namespace(a)
    shape = tuple(int(s) for s in a.shape)
    ndim = len(shape)
    if ndim == 0:
        keep = int(bool(a != fill))
        return xp.zeros((0, keep), xp.int64), a.reshape(1)[:keep]

    def axis(m: int, r0: int, r1: int):
        # coordinates along mode m, shaped to broadcast over a slab of rows r0..r1
        values = xp.arange(r0, r1) if m == 0 else xp.arange(shape[m])
        return values.reshape([-1 if k == m else 1 for k in range(ndim)])

    def entries(r0: int, r1: int):
        slab = a[r0:r1]
        keep = slab != fill
        for g in groups:
            for p, q in itertools.pairwise(g):
                keep &= axis(p, r0, r1) <= axis(q, r0, r1)
        return slab, keep

    slabs = list(_slabs(xp, shape))
    counts = [int(entries(r0, r1)[1].sum()) for r0, r1 in slabs]
    coords = xp.empty((ndim, sum(counts)), xp.int64)
    grad = getattr(a, "requires_grad", False)
    values = None if grad else xp.empty(sum(counts), a.dtype)
    filled = 0
    for (r0, r1), count in zip(slabs, counts, strict=True):
        if not count:
            continue
        slab, keep = entries(r0, r1)
        if values is not None:
            values[filled:filled + count] = slab[keep]
        flat = xp.flatnonzero(keep)  # row-major positions within the slab
        for m in reversed(range(1, ndim)):
            coords[m, filled:filled + count] = flat % shape[m]
            xp.floor_divide_(flat, shape[m])
        coords[0, filled:filled + count] = flat + r0
        filled += count
    if grad:  # one differentiable gather
        values = a[tuple(coords)]
    return coords, values


# ----------------------------------------------------------------------------- canonical sort
class _CanonicalSort:
    """The entries of a COO input sorted by (canonical coordinates, original coordinates).

    The key's digits are the canonical coordinates (sorted within each group) and, last, the
    arrangement of the entry within its canonical point: per grouped mode, the rank of its
    coordinate among its group's (the number of smaller ones), in mode order. Arrangements sort
    as their original coordinates do, and two entries share a key exactly when they share their
    original coordinates. The canonical arrangement is the lexicographic minimum."""

    def __init__(self, xp: NumpyOps, idx: Any, vals: Any, shape: tuple[int, ...], groups: Groups):
        self.xp, self.idx, self.vals, self.shape, self.groups = xp, idx, vals, shape, groups
        self.n, self.ndim = int(idx.shape[1]), len(shape)
        self.group_of = {m: g for g in groups for m in g}
        self.grouped = sorted(self.group_of)
        arrangements = math.prod(len(self.group_of[m]) for m in self.grouped)
        self.keys = _Keys(xp, self.n, [*shape, arrangements] if self.grouped else shape)
        for a, b in _blocks(xp, self.n):
            self.keys.append(self._digits(a, b))
        self.keys.sort()

    def _digits(self, a: int, b: int) -> list:
        xp = self.xp
        rows = [self.idx[m, a:b] for m in range(self.ndim)]
        ranks = {}
        for g in self.groups:
            original = [rows[m] for m in g]
            for t, m in enumerate(g):
                rank = xp.zeros(b - a, xp.int64)
                for s, other in enumerate(original):
                    if s != t:
                        rank += other < original[t]
                ranks[m] = rank
            for m, row in zip(g, _sorting_network(xp, original), strict=True):
                rows[m] = row
        if self.grouped:
            arrangement = ranks[self.grouped[0]]
            for m in self.grouped[1:]:
                arrangement = arrangement * len(self.group_of[m]) + ranks[m]
            rows.append(arrangement)
        return rows

    def position(self, k: int) -> int:
        return self.keys.position(k)

    def value(self, k: int) -> Any:
        return self.vals[self.position(k)]

    def canonical(self, k: int) -> list[int]:
        return self.keys.digits_at(k)[:self.ndim]

    def orig(self, k: int) -> list[int]:
        """Original coordinates of the k-th sorted entry."""
        digits = self.keys.digits_at(k)
        canon, out = digits[:self.ndim], list(digits[:self.ndim])
        if self.grouped:
            arrangement = digits[self.ndim]
            for m in reversed(self.grouped):
                arrangement, rank = divmod(arrangement, len(self.group_of[m]))
                out[m] = canon[self.group_of[m][rank]]
        return out

    def scan(self, atol: float, rtol: float, check: bool, stored: str) -> dict:
        """One pass over the sorted entries, block by block: the canonical run starts (a mask),
        the number of distinct arrangements, the first disagreeing duplicate, the first entry
        disagreeing with its run's first (`check`), the first second arrangement of a run
        (`stored="one"`), and the expanded size implied by the canonical entries."""
        xp, keys, n = self.xp, self.keys, self.n
        full = math.prod(math.factorial(len(g)) for g in self.groups)
        found: dict[str, Any] = {"start": xp.empty(n, xp.bool), "distinct": 0, "expected": 0}
        carry_first, carry_value = 0, None
        for a, b in _blocks(xp, n):
            lo = max(a, 1)
            same_key = keys.same_as_previous(a, b)
            same_canon = keys.same_as_previous(a, b, drop_last=bool(self.grouped))
            positions = xp.arange(lo - 1, b)
            values = self.vals[positions if keys.order is None else keys.order[positions]]
            start = found["start"]
            if a == 0:
                start[0] = True
            start[lo:b] = ~same_canon
            found["distinct"] += int((~same_key).sum()) + (a == 0)
            if "dup" not in found:
                k = xp.first_true(same_key & ~_agree(values[1:], values[:-1], atol, rtol))
                if k is not None:
                    found["dup"] = lo + k
            block = values if a == 0 else values[1:]  # the values of positions a .. b-1
            if check:
                first = xp.running_max(xp.where(start[a:b], xp.arange(a, b), carry_first))
                inside = first >= a
                if carry_value is None:
                    carry_value = block[0]
                first_value = xp.where(inside, block[(first - a) * inside], carry_value)
                if "asymmetric" not in found:
                    k = xp.first_true(~_agree(block, first_value, atol, rtol))
                    if k is not None:
                        found["asymmetric"] = (int(first[k]), a + k)
                if stored == "one" and "two" not in found:
                    k = xp.first_true(~same_key & same_canon)
                    if k is not None:
                        found["two"] = (int(first[lo + k - a]), lo + k)
                carry_first, carry_value = int(first[-1]), first_value[-1]
                if stored == "full" and full > 1:
                    selected = [word[a:b][start[a:b]] for word in keys.words]
                    canon = keys.digits(selected)[:self.ndim]
                    found["expected"] += int((full // _stabilizer(canon, self.groups)).sum())
        return found

    def arrangement_counts(self) -> Any:
        """Distinct arrangements stored per canonical run (error path: full-size arrays)."""
        xp = self.xp
        new_key = xp.concat([xp.ones(1, xp.bool), ~self.keys.same_as_previous(0, self.n)])
        new_run = xp.concat([xp.ones(1, xp.bool), ~self.keys.same_as_previous(0, self.n, drop_last=True)])
        run = xp.cumsum(xp.astype(new_run, xp.int64)) - 1
        return xp.bincount(run[new_key], minlength=int(new_run.sum())), xp.flatnonzero(new_run)


class _Runs:
    """The entries of a numpy COO input sorted by (canonical, original) coordinates and grouped
    into runs of one canonical entry, as full arrays (the .tns reader's symmetry detection)."""

    def __init__(self, idx: np.ndarray, vals: np.ndarray, shape: tuple[int, ...], grp: Groups):
        self._sort = s = _CanonicalSort(NUMPY, idx, vals, shape, grp)
        self.n, self.order = s.n, s.keys.order if s.keys.order is not None else np.arange(s.n)
        self.vals = vals[self.order]
        self.same_orig = s.keys.same_as_previous(0, self.n)
        start = np.concatenate([[True], ~s.keys.same_as_previous(0, self.n, drop_last=bool(grp))]) if self.n \
            else np.zeros(0, dtype=bool)
        self.starts = np.flatnonzero(start)
        self.first = self.starts[np.cumsum(start) - 1]

    def canon_starts(self) -> np.ndarray:
        """Canonical coordinates of each run (sorted, unique)."""
        s = self._sort
        digits = s.keys.digits([word[self.starts] for word in s.keys.words])
        return np.array(digits[:s.ndim], dtype=np.int64).reshape(s.ndim, -1)

    def orig(self, k: int) -> np.ndarray:
        """Original coordinates of the k-th sorted entry."""
        return np.array(self._sort.orig(k), dtype=np.int64)


def _missing_permutation(name: str, groups: Groups, runs: _CanonicalSort, start: int, stop: int) -> EntryError:
    """The error for the run start..stop-1 of a full-storage input, one of whose distinct
    permutations is not stored (error path only: enumerates that one entry's permutations)."""
    present = {tuple(runs.orig(k)) for k in range(start, stop)}
    stored = runs.orig(start)
    missing = None
    for _, dest in _group_perms(groups, len(stored)):
        candidate = [0] * len(stored)
        for m, d in enumerate(dest):
            candidate[d] = int(stored[m])
        if tuple(candidate) not in present:
            missing = candidate
            break
    value = _val(runs.value(start))
    return EntryError(
        f"{name} is declared symmetric in modes {', '.join(map(str, groups))} but stores "
        f"{_fmt(name, stored)} = {value} without its mirror {_fmt(name, missing)}: a sparse input "
        "declared symmetric must store every permutation of each entry (pass check=False to read "
        "only its canonical entries, or build a SymmetricTensor from one triangle with "
        "SymmetricTensor.from_coo(..., stored='one'))",
        (runs.position(start),))


def _sorted_unique(xp: NumpyOps, idx: Any, vals: Any, shape: tuple[int, ...], name: str,
                   merge: str) -> tuple[Any, Any]:
    """Sorted, duplicate-free (indices, values) of a checked COO input. Duplicates: summed
    (`merge="sum"`), an error (`"error"`), or kept once if their values agree (`"agree"`)."""
    n, ndim = int(idx.shape[1]), len(shape)
    keys = _Keys(xp, n, shape)
    for a, b in _blocks(xp, n):
        keys.append([idx[m, a:b] for m in range(ndim)])
    keys.sort()
    start = xp.empty(n, xp.bool)
    for a, b in _blocks(xp, n):
        if a == 0:
            start[0] = True
        start[max(a, 1):b] = ~keys.same_as_previous(a, b)
    count = int(start.sum()) if n else 0
    if count < n:
        k = xp.first_true(~start)  # the first key equal to its predecessor
        if merge == "error":
            raise EntryError(f"{name} has duplicate entries at {_fmt(name, keys.digits_at(k))}",
                             (keys.position(k - 1), keys.position(k)))
        if merge == "agree":
            for a, b in _blocks(xp, n):
                lo = max(a, 1)
                positions = xp.arange(lo - 1, b)
                values = vals[positions if keys.order is None else keys.order[positions]]
                bad = xp.first_true(~start[lo:b] & ~_agree(values[1:], values[:-1], 0.0, 0.0))
                if bad is not None:
                    k = lo + bad
                    raise EntryError(f"{name} has duplicate entries at {_fmt(name, keys.digits_at(k))} "
                                     f"with different values {_val(vals[keys.position(k - 1)])} and "
                                     f"{_val(vals[keys.position(k)])}", (keys.position(k - 1), keys.position(k)))
    if count < n and merge == "sum":
        ordered = _gather(vals, keys.order)
        keys.order = None
        with xp.errstate():  # inf - inf is NaN, as asked
            out_vals = xp.segment_sum(ordered, xp.flatnonzero(start))
        del ordered
    elif count < n:
        out_vals = _take_where(xp, vals, keys.order, start, count)
    else:
        out_vals = _gather(vals, keys.order)
    keys.order = None
    if count < n:
        keys.compact(start)
    del start
    out = xp.empty((ndim, count), xp.int64)
    keys.decode(count, out, ndim)
    return out, out_vals


# ----------------------------------------------------------------------------- SparseTensor
class SparseTensor:
    """A non-symmetric sparse tensor in sorted, duplicate-free COO.

    `indices` (int64, [ndim, nnz]) and `values` ([nnz]) are numpy arrays or torch tensors, as
    given: a tensor built from torch tensors holds torch tensors on their device and computes
    there. `with_values` may pair a numpy structure with torch values (e.g. requiring grad)."""

    def __init__(self, indices: Any, values: Any, shape: Sequence[int], *, check: bool = True):
        """Trusted constructor: ``indices`` must be sorted and unique (verified if ``check``)."""
        self.shape = tuple(int(s) for s in shape)
        xp = namespace(indices)
        idx = xp.astype(xp.asarray(indices), xp.int64)
        # The structure is immutable by contract (everything derived from it is cached, see
        # `_cache`): do not write into `indices`. (Not flagged read-only: torch rejects those.)
        self.indices = idx if idx.ndim == 2 else idx.reshape(len(self.shape), -1)
        self.values = _own_values(xp, values)
        # Structure-derived caches (pointers, classes, kernel coordinates, device copies): they
        # depend on indices, shape and groups only, so `with_values` shares this dict. Nothing
        # derived from the values is ever stored here. Arrays are keyed by their library.
        self._cache: dict[Any, Any] = {}
        if check:
            _coo_arrays(self.indices, self.values, self.shape, type(self).__name__)
            if self.nnz > 1:
                _, less = _adjacent_cmp(self.indices)
                k = xp.first_true(~less)
                if k is not None:
                    raise ValueError(
                        f"{type(self).__name__}: indices not sorted and unique at entry {k + 1}: "
                        f"{_fmt('A', _column(xp, self.indices, k))} then "
                        f"{_fmt('A', _column(xp, self.indices, k + 1))}")

    nnz = property(lambda self: int(self.indices.shape[1]), doc="number of stored entries")
    ndim = property(lambda self: len(self.shape), doc="number of modes")
    dtype = property(lambda self: self.values.dtype, doc="dtype of the values")

    @property
    def device(self):
        """The torch device of the values (where a kernel call on this tensor runs), else of the
        indices; the CPU for numpy storage."""
        import torch

        for x in (self.values, self.indices):
            if is_torch(x):
                return x.device
            if is_cupy(x):
                return torch.from_dlpack(x).device
        return torch.device("cpu")

    @property
    def _xp(self) -> NumpyOps:
        return namespace(self.indices)

    def _cached(self, what: str, make: Callable[[], Any]) -> Any:
        key = (what, self._xp.name)
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    # ------------------------------------------------------------------ moving between devices
    def to(self, device: Any) -> SparseTensor:
        """This tensor with torch indices and values on `device` (values moved differentiably).
        The structure cache is shared when the indices did not move (same memory), else the
        copy is a new structure."""
        import torch

        device = torch.device(device)
        indices = torch.as_tensor(_writable(self.indices)).to(device)
        values = self.values
        if is_cupy(values):
            values = torch.from_dlpack(values)
        values = torch.as_tensor(_writable(values)).to(device)
        return self._moved(indices, values)

    def cuda(self, device: Any = None) -> SparseTensor:
        return self.to("cuda" if device is None else device)

    def cpu(self) -> SparseTensor:
        return self.to("cpu")

    def numpy(self) -> SparseTensor:
        """This tensor with numpy arrays (views of CPU tensors; values detached)."""
        return self._moved(_to_numpy(self.indices), _to_numpy(self.values))

    def _moved(self, indices: Any, values: Any) -> SparseTensor:
        out = copy.copy(self)
        out.indices, out.values = indices, values
        if _address(indices) != _address(self.indices):
            out._cache = {}
        return out

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_coo(
        cls, indices: Any, values: Any, shape: Sequence[int], *, sum_duplicates: bool = True,
        name: str = "A",
    ) -> SparseTensor:
        """COO in any order; duplicates summed (an error naming them if not ``sum_duplicates``)."""
        xp, idx, vals, shape = _coo_arrays(indices, values, shape, name)
        idx, vals = _sorted_unique(xp, idx, vals, shape, name, "sum" if sum_duplicates else "error")
        return SparseTensor(idx, vals, shape, check=False)

    @classmethod
    def from_dense(cls, array: Any, *, fill: float = 0.0) -> SparseTensor:
        """Keep the entries of a numpy or torch array that differ from ``fill`` (NaN is kept).

        ``fill`` is the value of the entries a sparse tensor does not store: 0 under ``+=``,
        +inf under ``min=`` and -inf under ``max=`` (a kernel passes its semiring's)."""
        a = namespace(array).asarray(array)
        coords, values = _dense_entries(a, fill, ())
        return SparseTensor(coords, values, tuple(a.shape), check=False)

    def to_dense(self) -> Any:
        """The dense array, in the values' library (torch: on their device, differentiable)."""
        return self._dense([list(range(self.ndim))])

    def _dense(self, mode_maps: list) -> Any:
        xp = namespace(self.values, self.indices)
        values, indices = xp.asarray(self.values), xp.asarray(self.indices)
        out = xp.zeros(self.shape, values.dtype)
        for dest in mode_maps:
            new = [None] * self.ndim
            for m, d in enumerate(dest):
                new[d] = indices[m]
            if xp is NUMPY:
                out[tuple(new)] = values
            else:
                out = out.index_put(tuple(new), values)
        return out

    def validate(self, name: str = "A") -> None:
        """check_coordinates on this structure, once (cached): the runtime calls it before a
        kernel reads a tensor, so a tensor built with ``check=False`` cannot send a kernel out
        of bounds."""
        if not self._cache.get("valid"):
            check_coordinates(self.indices, self.shape, getattr(self, "groups", ()), name)
            self._cache["valid"] = True

    def csr_pointers(self, mode: int = 0) -> Any:
        """Row pointers (int64, length shape[0] + 1) of the sorted COO over mode 0 (cached)."""
        if mode != 0:
            raise ValueError(f"csr_pointers: only mode 0 (the sort order) is supported, got {mode}")
        return self._cached("csr", lambda: _csr_pointers(self.indices, self.shape))

    def with_values(self, values: Any) -> SparseTensor:
        """Same structure with a new values array (numpy, torch, e.g. requiring grad, or CuPy).
        The structure and its caches are shared, never copied; values are never cached."""
        got = tuple(values.shape)
        if got != (self.nnz,):
            raise ValueError(f"with_values: expected {self.nnz} values, got shape {got}")
        out = copy.copy(self)  # same indices, shape, groups and structure cache
        out.values = _own_values(self._xp, values)
        return out

    def symmetrize(self, how: str = "sum", groups: Any = "full") -> SymmetricTensor:
        """A symmetric tensor from this one: ``sum`` (A + Aᵀ), ``average``, ``upper``, ``lower``."""
        grp = normalize_groups(groups, self.shape)
        xp = namespace(self.values, self.indices)
        idx, vals = xp.asarray(self.indices), self.values
        if how == "upper":
            keep = _canonical_mask(idx, grp)
            return SymmetricTensor(idx[:, keep], vals[keep], self.shape, grp, check=False)
        if how == "lower":
            keep = _canonical_mask(idx, grp, descending=True)
            return SymmetricTensor.from_canonical(
                _canonicalize(idx[:, keep], grp), vals[keep], self.shape, grp
            )
        if how not in ("sum", "average"):
            raise ValueError(f"symmetrize: how must be sum, average, upper or lower, got {how!r}")
        merged = SparseTensor.from_coo(_canonicalize(idx, grp), vals, self.shape)
        stab = _stabilizer(merged.indices, grp)
        out = merged.values * (xp.astype(stab, vals.dtype) if xp.is_numeric(vals.dtype) else stab)
        if how == "average":
            out = out / math.prod(math.factorial(len(g)) for g in grp)
        return SymmetricTensor(merged.indices, out, self.shape, grp, check=False)

    def __repr__(self) -> str:
        return f"SparseTensor(shape={self.shape}, nnz={self.nnz}, dtype={self.dtype})"


def _own_values(xp: NumpyOps, values: Any) -> Any:
    """Values as a tensor holds them: torch and CuPy as given (autograd, device), other arrays in
    the structure's library."""
    if is_torch(values) or is_cupy(values):
        return values
    return xp.asarray(values) if xp is not NUMPY else np.asarray(values)


def _writable(x: Any) -> Any:
    return x.copy() if isinstance(x, np.ndarray) and not x.flags.writeable else x


def _address(x: Any) -> tuple:
    """Where an array's memory is (device, address): equal for views of one buffer."""
    if is_torch(x):
        return (str(x.device), x.data_ptr())
    if isinstance(x, np.ndarray):
        return ("cpu", x.__array_interface__["data"][0])
    return (None, id(x))


def _csr_pointers(indices: Any, shape: tuple[int, ...]) -> Any:
    return csr_pointers_of(indices[0], shape[0]) if shape else namespace(indices).zeros(1, NUMPY.int64)


def csr_pointers_of(rows: Any, n_rows: int) -> Any:
    """Row pointers (int64, length n_rows + 1) of sorted row coordinates, in their library."""
    xp = namespace(rows)
    pointers = xp.zeros(n_rows + 1, xp.int64)
    if rows.shape[0]:
        pointers[1:] = xp.cumsum(xp.bincount(rows, minlength=n_rows))
    return pointers


# ----------------------------------------------------------------------------- SymmetricTensor
class SymmetricTensor(SparseTensor):
    """A tensor symmetric within disjoint mode groups; stores its canonical nonzeros only.

    Canonical: within each group the coordinates are nondecreasing in mode order.
    """

    def __init__(self, indices: Any, values: Any, shape: Sequence[int], groups: Any = "full",
                 *, check: bool = True):
        """Trusted constructor: canonical, sorted, unique indices (verified if ``check``)."""
        super().__init__(indices, values, shape, check=check)
        self.groups = normalize_groups(groups, self.shape)
        if check:
            k = self._xp.first_true(~_canonical_mask(self.indices, self.groups))
            if k is not None:
                raise EntryError(
                    f"SymmetricTensor: entry {_fmt('A', _column(self._xp, self.indices, k))} is not canonical "
                    f"for groups {self.groups} (coordinates must be nondecreasing within a group)",
                    (k,),
                )

    @classmethod
    def from_canonical(cls, indices: Any, values: Any, shape: Sequence[int], groups: Any,
                       *, name: str = "A") -> SymmetricTensor:
        """Fast path for canonical entries in any order; agreeing duplicates are kept once."""
        xp, idx, vals, shape = _coo_arrays(indices, values, shape, name)
        grp = normalize_groups(groups, shape, name)
        k = xp.first_true(~_canonical_mask(idx, grp))
        if k is not None:
            raise EntryError(f"{name}: entry {_fmt(name, _column(xp, idx, k))} is not canonical for groups "
                             f"{grp} (coordinates must be nondecreasing within a group)", (k,))
        idx, vals = _sorted_unique(xp, idx, vals, shape, name, "agree")
        return cls(idx, vals, shape, grp, check=False)

    @classmethod
    def from_coo(cls, indices: Any, values: Any, shape: Sequence[int], groups: Any = "full",
                 *, stored: str = "full", check: bool = True, atol: float = 0.0, rtol: float = 0.0,
                 name: str = "A") -> SymmetricTensor:
        """COO in any order, of a tensor declared symmetric within ``groups``.

        ``stored="full"`` (the default: scipy, torch and pydata sparse inputs, general files):
        every distinct permutation of each entry is stored. With ``check`` an entry whose
        permutation is missing, or stored with another value (beyond ``atol``/``rtol``), is an
        EntryError naming both coordinates; without it only the canonical entries are read (the
        rest is trusted to mirror them), like a dense input with ``check=False``.

        ``stored="one"`` (one triangle: symmetric Matrix Market files, canonical FROSTT files):
        each entry once, in any one of its arrangements; an entry given in two arrangements is an
        EntryError (with ``check``).

        Identical coordinates repeated with different values are an error (among the entries
        read: with ``stored="full"`` and no ``check``, the canonical ones).
        """
        if stored not in ("full", "one"):
            raise ValueError(f"{name}: stored must be 'full' or 'one', got {stored!r}")
        xp, idx, vals, shape = _coo_arrays(indices, values, shape, name)
        grp = normalize_groups(groups, shape, name)
        if stored == "full" and not check:
            # Trusted: the canonical entries carry everything; the other arrangements are unread.
            keep = _canonical_mask(idx, grp)
            return cls.from_canonical(idx[:, keep], vals[keep], shape, grp, name=name)
        if idx.shape[1] == 0:
            return cls(idx, vals, shape, grp, check=False)
        runs = _CanonicalSort(xp, idx, vals, shape, grp)
        found = runs.scan(atol, rtol, check, stored)
        if "dup" in found:
            k = found["dup"]
            raise EntryError(
                f"{name} has duplicate entries at {_fmt(name, runs.orig(k))} with different values "
                f"{_val(runs.value(k - 1))} and {_val(runs.value(k))}", (runs.position(k - 1), runs.position(k)))
        if "asymmetric" in found:
            f, k = found["asymmetric"]
            a, b = runs.orig(f), runs.orig(k)
            modes = [g for g in grp if any(a[m] != b[m] for m in g)]
            raise EntryError(
                f"{name} is not symmetric in modes {', '.join(map(str, modes))}: "
                f"{_fmt(name, a)} = {_val(runs.value(f))} but "
                f"{_fmt(name, b)} = {_val(runs.value(k))}", (runs.position(f), runs.position(k)))
        if "two" in found:
            f, k = found["two"]
            raise EntryError(
                f"{name} stores one entry in two arrangements, {_fmt(name, runs.orig(f))} and "
                f"{_fmt(name, runs.orig(k))}, but was declared to hold each symmetric entry once "
                f"(stored='one'); pass stored='full' if every permutation is stored",
                (runs.position(f), runs.position(k)))
        full = math.prod(math.factorial(len(g)) for g in grp)
        if check and stored == "full" and full > 1 and found["distinct"] != found["expected"]:
            counts, starts = runs.arrangement_counts()
            canon = xp.empty((len(shape), int(starts.shape[0])), xp.int64)
            for m, row in enumerate(runs.keys.digits([w[starts] for w in runs.keys.words])[:len(shape)]):
                canon[m] = row
            run = xp.first_true(counts != full // _stabilizer(canon, grp))
            stop = int(starts[run + 1]) if run + 1 < int(starts.shape[0]) else runs.n
            raise _missing_permutation(name, grp, runs, int(starts[run]), stop)
        start = found.pop("start")
        count = int(start.sum())
        out_vals = _take_where(xp, vals, runs.keys.order, start, count)
        runs.keys.order = None
        runs.keys.compact(start)
        del start
        out = xp.empty((len(shape), count), xp.int64)
        runs.keys.decode(count, out, len(shape))
        tensor = cls(out, out_vals, shape, grp, check=False)
        if check and stored == "full":
            tensor._cache["n_expanded"] = found["expected"] if full > 1 else count
        return tensor

    @classmethod
    def from_dense(cls, t: Any, groups: Any = "full", *, check: bool = True, atol: float = 0.0,
                   rtol: float = 0.0, fill: float = 0.0, name: str = "A") -> SymmetricTensor:
        """Canonical entries of a dense numpy/torch array that differ from ``fill`` (see
        SparseTensor.from_dense), checking its symmetry if ``check``."""
        a = namespace(t).asarray(t)
        grp = normalize_groups(groups, tuple(a.shape), name)
        if check:
            check_dense_symmetry(a, grp, name, atol, rtol)
        coords, values = _dense_entries(a, fill, grp)
        return cls(coords, values, tuple(a.shape), grp, check=False)

    @property
    def classes(self) -> Any:
        """Diagonal class (uint8 bit set of equal adjacent coordinates in groups) per nonzero."""
        def make():
            xp = self._xp
            nbits = sum(len(g) - 1 for g in self.groups)
            if nbits > 8:
                raise ValueError(f"classes: {nbits} diagonal bits do not fit in uint8")
            classes = xp.zeros(self.nnz, xp.uint8)
            bit = 0
            for bits in _equal_bits(self.indices, self.groups):
                for eq in bits:
                    classes |= xp.astype(eq, xp.uint8) << bit
                    bit += 1
            return classes

        return self._cached("classes", make)

    @property
    def n_expanded(self) -> int:
        """Number of nonzeros of the expanded tensor (all distinct permutations)."""
        if "n_expanded" not in self._cache:
            self._cache["n_expanded"] = _n_expanded(self.indices, self.groups)
        return self._cache["n_expanded"]

    canonical_multiplicity = n_expanded

    def expansion(self) -> tuple[SparseTensor, Any]:
        """The structure of the expanded tensor (all distinct permutations of every canonical
        entry, sorted) and, per expanded entry, the position of its canonical entry: expanded
        values are ``values[take]``. Cached: it depends on the structure only."""
        def make():
            xp = self._xp
            coords, take = self.expanded_coordinates(xp.int64, xp.int64)
            return SparseTensor(coords, xp.zeros(0, xp.float64), self.shape, check=False), take

        return self._cached("expansion", make)

    def expanded_coordinates(self, coord_dtype: Any, take_dtype: Any, *, rows: bool = False) -> tuple[Any, Any]:
        """(coordinates [ndim, n_expanded] in `coord_dtype`, take in `take_dtype`) of the expanded
        tensor, sorted, in this tensor's library, not cached: what `expansion` caches, and what a
        kernel over the expanded tensor reads in its own index dtype, without an int64 copy.
        `rows`: the coordinates as a list of separate arrays, one per mode (a caller may drop
        one). Peak: one int64 key and one position per expanded entry, and the result."""
        xp, idx, n = self._xp, self.indices, self.nnz
        total = self.n_expanded
        keys = _Keys(xp, total, self.shape)
        take = xp.empty(total, take_dtype)
        filled = 0
        for combo, dest in _group_perms(self.groups, self.ndim):
            for a, b in _blocks(xp, n):
                block = [idx[m, a:b] for m in range(self.ndim)]
                keep = None
                for g, slots in zip(self.groups, combo, strict=True):
                    for t in range(len(g) - 1):
                        if slots[t] > slots[t + 1]:  # equal values keep their order: each arrangement once
                            distinct = block[g[t]] != block[g[t + 1]]
                            keep = distinct if keep is None else keep & distinct
                permuted: list[Any] = [None] * self.ndim
                for m, d in enumerate(dest):
                    permuted[d] = block[m] if keep is None else block[m][keep]
                positions = xp.arange(a, b) if keep is None else xp.arange(a, b)[keep]
                keys.append(permuted)
                take[filled:filled + int(positions.shape[0])] = positions
                filled += int(positions.shape[0])
        keys.sort(unique=True)
        if keys.order is not None:
            take = take[keys.order]
            keys.order = None
        coords = [xp.empty(total, coord_dtype) for _ in range(self.ndim)] if rows \
            else xp.empty((self.ndim, total), coord_dtype)
        keys.decode(total, coords, self.ndim)
        return coords, take

    def expanded(self) -> SparseTensor:
        """All distinct permutations of every canonical entry, as a sorted SparseTensor (its
        structure and structure caches are shared by every call on this structure)."""
        structure, take = self.expansion()
        values = self.values
        if is_torch(values) and not is_torch(take):
            import torch

            take = torch.from_numpy(take).to(values.device)
        return structure.with_values(values[take])

    def to_dense(self) -> Any:
        return self._dense([dest for _, dest in _group_perms(self.groups, self.ndim)])

    def symmetrize(self, how: str = "sum", groups: Any = "full") -> SymmetricTensor:
        return self.expanded().symmetrize(how, groups)

    def __repr__(self) -> str:
        return (f"SymmetricTensor(shape={self.shape}, groups={self.groups}, nnz={self.nnz} "
                f"canonical ({self.n_expanded} expanded), dtype={self.dtype})")
