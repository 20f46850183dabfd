"""Tensor storage: sparse COO tensors and symmetric tensors holding only canonical nonzeros.

All work is vectorized numpy; the only Python loops run over modes, groups and the g!
permutations of a group, never over nonzeros. Indices are int64 throughout.
"""

from __future__ import annotations

import copy
import itertools
import math
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

Groups = tuple[tuple[int, ...], ...]
_I64_MAX = 2**63 - 1


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
    if type(x).__module__.startswith("torch"):
        x = x.detach().cpu()
        if str(x.dtype) == "torch.bfloat16":  # numpy has no bfloat16
            x = x.float()
        return x.numpy()
    return np.asarray(x)


def _is_torch(x: Any) -> bool:
    # isinstance, not the type's module name: torch.compile traces isinstance
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def _fmt(name: str, coord: Sequence[int]) -> str:
    return f"{name}[{', '.join(str(int(c)) for c in coord)}]"


def _val(v: Any) -> str:
    return repr(v.item() if hasattr(v, "item") else v)


def _linear_key(indices: np.ndarray, shape: tuple[int, ...]) -> np.ndarray | None:
    """Row-major linear index as int64, or None if the shape's volume overflows int64."""
    if math.prod(shape) > _I64_MAX:
        return None
    key = np.zeros(indices.shape[1], dtype=np.int64)
    for m, size in enumerate(shape):
        key *= size
        key += indices[m]
    return key


def _lex_argsort(indices: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    key = _linear_key(indices, shape)
    if key is not None:
        return np.argsort(key, kind="stable")
    return np.lexsort(indices[::-1])


def _adjacent_cmp(indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For consecutive columns: (equal, less) masks of the lexicographic comparison.

    Built from per-mode boolean comparisons only: no int64 temporaries (peak memory of loads).
    """
    n = max(indices.shape[1] - 1, 0)
    equal, less = np.ones(n, dtype=bool), np.zeros(n, dtype=bool)
    for row in indices[::-1]:  # from the minor mode to the major one
        a, b = row[:-1], row[1:]
        less = np.where(a == b, less, a < b)
        equal &= a == b
    return equal, less


def _agree(a: np.ndarray, b: np.ndarray, atol: float, rtol: float) -> np.ndarray:
    """Elementwise value agreement; NaN agrees with NaN."""
    eq = a == b
    if a.dtype.kind in "fc":
        eq |= np.isnan(a) & np.isnan(b)
    if (atol or rtol) and a.dtype.kind in "fciu":
        with np.errstate(invalid="ignore", over="ignore"):
            diff = np.abs(a.astype(np.float64) - b) if a.dtype.kind in "iu" else np.abs(a - b)
            eq |= diff <= atol + rtol * np.abs(b)
    return eq


def _canonicalize(indices: np.ndarray, groups: Groups) -> np.ndarray:
    """Sort the coordinates within each group (odd-even transposition network)."""
    out = indices.copy()
    for grp in groups:
        rows = [out[p] for p in grp]  # views: the network below only allocates new arrays
        for r in range(len(grp)):
            for t in range(r % 2, len(grp) - 1, 2):
                lo = np.minimum(rows[t], rows[t + 1])
                rows[t + 1] = np.maximum(rows[t], rows[t + 1])
                rows[t] = lo
        for p, row in zip(grp, rows, strict=True):
            out[p] = row
    return out


def _canonical_mask(indices: np.ndarray, groups: Groups, descending: bool = False) -> np.ndarray:
    ok = np.ones(indices.shape[1], dtype=bool)
    for grp in groups:
        for a, b in itertools.pairwise(grp):
            ok &= indices[a] >= indices[b] if descending else indices[a] <= indices[b]
    return ok


def _equal_bits(indices: np.ndarray, groups: Groups) -> list[list[np.ndarray]]:
    return [[indices[a] == indices[b] for a, b in itertools.pairwise(g)] for g in groups]


def _stabilizer(canon: np.ndarray, groups: Groups) -> np.ndarray:
    """Group permutations fixing each canonical entry: the product of run-length factorials."""
    stab = np.ones(canon.shape[1], dtype=np.int64)
    for bits in _equal_bits(canon, groups):
        run = np.ones(canon.shape[1], dtype=np.int64)
        for eq in bits:
            run = np.where(eq, run + 1, 1)
            stab *= run
    return stab


def _group_perms(groups: Groups, ndim: int):
    """Yield (per-group slot permutations, full mode map) over the product of group permutations."""
    per = [list(itertools.permutations(range(len(g)))) for g in groups]
    for combo in itertools.product(*per):
        dest = list(range(ndim))  # dest[m] = mode that receives the coordinate of mode m
        for grp, s in zip(groups, combo, strict=True):
            for t, st in enumerate(s):
                dest[grp[t]] = grp[st]
        yield combo, dest


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
    idx = _to_numpy(indices)
    shape = tuple(int(s) for s in shape)
    if idx.ndim == 1 and len(shape) == 1:
        idx = idx[None, :]
    if idx.ndim != 2 or idx.shape[0] != len(shape):
        raise ValueError(f"{name}: indices must have shape [{len(shape)}, nnz], got {idx.shape}")
    if idx.size and idx.dtype.kind not in "iu":
        raise ValueError(f"{name}: indices must be integers, got dtype {idx.dtype}")
    idx = np.ascontiguousarray(idx, dtype=np.int64)
    vals = _to_numpy(values)
    if vals.ndim == 0:
        vals = np.full(idx.shape[1], vals)
    if vals.shape != (idx.shape[1],):
        raise ValueError(f"{name}: {idx.shape[1]} index columns but values of shape {vals.shape}")
    if any(s < 0 for s in shape):
        raise ValueError(f"{name}: negative mode size in shape {shape}")
    for m, size in enumerate(shape):
        bad = (idx[m] < 0) | (idx[m] >= size)
        if bad.any():
            k = int(np.argmax(bad))
            raise EntryError(
                f"{name}: entry {_fmt(name, idx[:, k])} has index {int(idx[m, k])} in mode {m}, "
                f"outside the mode size {size}",
                (k,),
            )
    return idx, vals, shape


class _Runs:
    """Entries sorted by (canonical coordinates, original coordinates), grouped into runs.

    With int64 linear keys only the keys are sorted: the canonical coordinates are rebuilt for
    the run starts alone (peak memory of large loads).
    """

    def __init__(self, idx: np.ndarray, vals: np.ndarray, shape: tuple[int, ...], grp: Groups):
        self.n, self._idx, self._grp = idx.shape[1], idx, grp
        canon = _canonicalize(idx, grp)
        kc, ko = _linear_key(canon, shape), _linear_key(idx, shape)
        # sort by (canonical, original); the canonical arrangement is the lexicographic minimum
        if kc is not None:
            del canon
            order = np.arange(self.n)
            if not (ko[1:] >= ko[:-1]).all():  # input files are often sorted already
                order = np.argsort(ko, kind="stable")
            order = order[np.argsort(kc[order], kind="stable")]
            sk, so = kc[order], ko[order]
            del kc, ko
            same_canon, self.same_orig = sk[1:] == sk[:-1], so[1:] == so[:-1]
        else:
            order = np.lexsort(tuple(idx[::-1]) + tuple(canon[::-1]))
            same_canon = _adjacent_cmp(canon[:, order])[0]
            self.same_orig = _adjacent_cmp(idx[:, order])[0]
        self.order, self.vals = order, vals[order]
        start = np.concatenate([[True], ~same_canon]) if self.n else np.zeros(0, dtype=bool)
        self.starts = np.flatnonzero(start)
        self.first = self.starts[np.cumsum(start) - 1]

    def canon_starts(self) -> np.ndarray:
        """Canonical coordinates of each run (sorted, unique)."""
        return _canonicalize(self._idx[:, self.order[self.starts]], self._grp)

    def orig(self, k: int) -> np.ndarray:
        """Original coordinates of the k-th sorted entry."""
        return self._idx[:, self.order[k]]


def _first_true(mask: np.ndarray) -> int | None:
    return int(np.argmax(mask)) if mask.any() else None


def check_coordinates(indices: Any, shape: Sequence[int], groups: Groups = (), name: str = "A") -> None:
    """Raise EntryError naming the operand and its first bad entry unless `indices` ([ndim, nnz]
    integers, numpy or torch on any device) are in range, canonical within `groups`, and sorted
    lexicographically without repeats: what every kernel assumes of a sparse operand (CSR
    pointers, chunk bounds, run detection), so no kernel reads or writes out of bounds.
    Vectorized with torch ops where the indices live; one scalar comes back unless it fails."""
    import torch

    idx = torch.as_tensor(indices)
    ndim, nnz = (idx.shape[0], idx.shape[1]) if idx.dim() == 2 else (None, None)
    if ndim != len(shape):
        raise ValueError(f"{name}: indices must have shape [{len(shape)}, nnz], got {tuple(idx.shape)}")
    if nnz == 0:
        return
    if idx.dtype.is_floating_point or idx.dtype == torch.bool or idx.is_complex():
        raise ValueError(f"{name}: indices must be integers, got {idx.dtype}")
    idx = idx.long()
    limits = torch.tensor(list(shape), dtype=torch.int64, device=idx.device)[:, None]
    outside = ((idx < 0) | (idx >= limits)).any(dim=0)
    later = torch.zeros(nnz - 1, dtype=torch.bool, device=idx.device)  # column k+1 after column k
    equal = torch.ones(nnz - 1, dtype=torch.bool, device=idx.device)
    for row in idx.flip(0):  # minor mode first: the major mode decides last
        a, b = row[:-1], row[1:]
        later = torch.where(a == b, later, a < b)
        equal &= a == b
    unordered = torch.zeros(nnz, dtype=torch.bool, device=idx.device)
    for group in groups:
        for p, q in itertools.pairwise(group):
            unordered |= idx[p] > idx[q]
    if not bool(outside.any() | unordered.any() | ~later.all()):
        return
    host = idx.cpu().numpy()
    if outside.any():
        k = int(torch.argmax(outside.to(torch.uint8)))
        m = int(np.argmax((host[:, k] < 0) | (host[:, k] >= np.array(shape))))
        raise EntryError(f"{name}: entry {k} {_fmt(name, host[:, k])} has index {int(host[m, k])} in mode {m}, "
                         f"outside the mode size {shape[m]}", (k,))
    if unordered.any():
        k = int(torch.argmax(unordered.to(torch.uint8)))
        raise EntryError(f"{name}: entry {k} {_fmt(name, host[:, k])} is not canonical for groups {tuple(groups)} "
                         "(coordinates must be nondecreasing within a group)", (k,))
    k = int(torch.argmax((~later).to(torch.uint8)))
    what = "repeats" if bool(equal[k]) else "comes before"
    raise EntryError(f"{name}: entries must be sorted lexicographically without repeats, but entry {k} "
                     f"{_fmt(name, host[:, k])} {what} entry {k + 1} {_fmt(name, host[:, k + 1])} "
                     "(SymmetricTensor.from_coo / SparseTensor.from_coo sort and merge them)", (k, k + 1))


def check_dense_symmetry(a: np.ndarray, groups: Groups, name: str = "A", atol: float = 0.0,
                         rtol: float = 0.0) -> None:
    """Raise EntryError naming one pair of entries of dense `a` that breaks the symmetry."""
    for g in groups:
        for p, q in itertools.pairwise(g):  # adjacent transpositions generate the group
            bad = ~_agree(a, np.swapaxes(a, p, q), atol, rtol)
            if bad.any():
                x = np.unravel_index(int(np.argmax(bad)), a.shape)
                y = list(x)
                y[p], y[q] = x[q], x[p]
                raise EntryError(
                    f"{name} is not symmetric in modes {g}: {_fmt(name, x)} = "
                    f"{_val(a[x])} but {_fmt(name, y)} = {_val(a[tuple(y)])}")


def _missing_permutation(name: str, groups: Groups, runs: _Runs, run: int) -> EntryError:
    """The error for the `run`-th canonical entry of a full-storage input, one of whose distinct
    permutations is not stored (error path only: enumerates that one entry's permutations)."""
    start = runs.starts[run]
    stop = runs.starts[run + 1] if run + 1 < len(runs.starts) else runs.n
    present = {tuple(int(c) for c in runs.orig(k)) for k in range(start, stop)}
    stored = runs.orig(start)
    missing = None
    for _, dest in _group_perms(groups, len(stored)):
        candidate = [0] * len(stored)
        for m, d in enumerate(dest):
            candidate[d] = int(stored[m])
        if tuple(candidate) not in present:
            missing = candidate
            break
    value = _val(runs.vals[start])
    return EntryError(
        f"{name} is declared symmetric in modes {', '.join(map(str, groups))} but stores "
        f"{_fmt(name, stored)} = {value} without its mirror {_fmt(name, missing)}: a sparse input "
        "declared symmetric must store every permutation of each entry (pass check=False to read "
        "only its canonical entries, or build a SymmetricTensor from one triangle with "
        "SymmetricTensor.from_coo(..., stored='one'))",
        (int(runs.order[start]),))


# ----------------------------------------------------------------------------- SparseTensor
class SparseTensor:
    """A non-symmetric sparse tensor in sorted, duplicate-free COO."""

    def __init__(self, indices: Any, values: Any, shape: Sequence[int], *, check: bool = True):
        """Trusted constructor: ``indices`` must be sorted and unique (verified if ``check``)."""
        self.shape = tuple(int(s) for s in shape)
        idx = np.ascontiguousarray(_to_numpy(indices), dtype=np.int64)
        # The structure is immutable by contract (everything derived from it is cached, see
        # `_cache`): do not write into `indices`. (Not flagged read-only: torch rejects those.)
        self.indices = idx if idx.ndim == 2 else idx.reshape(len(self.shape), -1)
        self.values = values if _is_torch(values) else np.asarray(values)
        # Structure-derived caches (pointers, classes, kernel coordinates, device copies): they
        # depend on indices, shape and groups only, so `with_values` shares this dict. Nothing
        # derived from the values is ever stored here.
        self._cache: dict[str, Any] = {}
        if check:
            _coo_arrays(self.indices, self.values, self.shape, type(self).__name__)
            if self.nnz > 1:
                _, less = _adjacent_cmp(self.indices)
                k = _first_true(~less)
                if k is not None:
                    raise ValueError(
                        f"{type(self).__name__}: indices not sorted and unique at entry {k + 1}: "
                        f"{_fmt('A', self.indices[:, k])} then {_fmt('A', self.indices[:, k + 1])}"
                    )

    nnz = property(lambda self: int(self.indices.shape[1]), doc="number of stored entries")
    ndim = property(lambda self: len(self.shape), doc="number of modes")
    dtype = property(lambda self: self.values.dtype, doc="dtype of the values")

    @classmethod
    def from_coo(
        cls, indices: Any, values: Any, shape: Sequence[int], *, sum_duplicates: bool = True,
        name: str = "A",
    ) -> SparseTensor:
        """COO in any order; duplicates summed (an error naming them if not ``sum_duplicates``)."""
        idx, vals, shape = _coo_arrays(indices, values, shape, name)
        order = _lex_argsort(idx, shape)
        idx, vals = idx[:, order], vals[order]
        if idx.shape[1] > 1:
            equal, _ = _adjacent_cmp(idx)
            if equal.any():
                if not sum_duplicates:
                    k = int(np.argmax(equal))
                    raise EntryError(
                        f"{name} has duplicate entries at {_fmt(name, idx[:, k])}",
                        (int(order[k]), int(order[k + 1])),
                    )
                starts = np.flatnonzero(np.concatenate([[True], ~equal]))
                with np.errstate(invalid="ignore", over="ignore"):  # inf - inf is NaN, as asked
                    vals = np.add.reduceat(vals, starts, dtype=vals.dtype)
                idx = idx[:, starts]
        return SparseTensor(idx, vals, shape, check=False)

    @classmethod
    def from_dense(cls, array: Any, *, fill: float = 0.0) -> SparseTensor:
        """Keep the entries of a numpy or torch array that differ from ``fill`` (NaN is kept).

        ``fill`` is the value of the entries a sparse tensor does not store: 0 under ``+=``,
        +inf under ``min=`` and -inf under ``max=`` (a kernel passes its semiring's)."""
        a = _to_numpy(array)
        nz = np.nonzero(a != fill)
        return SparseTensor(np.array(nz, dtype=np.int64).reshape(a.ndim, -1), a[nz], a.shape,
                            check=False)

    def to_dense(self) -> np.ndarray:
        out = np.zeros(self.shape, dtype=_to_numpy(self.values).dtype)
        out[tuple(self.indices)] = _to_numpy(self.values)
        return out

    def validate(self, name: str = "A") -> None:
        """check_coordinates on this structure, once (cached): the runtime calls it before a
        kernel reads a tensor, so a tensor built with ``check=False`` cannot send a kernel out
        of bounds."""
        if not self._cache.get("valid"):
            check_coordinates(self.indices, self.shape, getattr(self, "groups", ()), name)
            self._cache["valid"] = True

    def csr_pointers(self, mode: int = 0) -> np.ndarray:
        """Row pointers (int64, length shape[0] + 1) of the sorted COO over mode 0 (cached)."""
        if mode != 0:
            raise ValueError(f"csr_pointers: only mode 0 (the sort order) is supported, got {mode}")
        if "csr" not in self._cache:
            counts = np.bincount(self.indices[0], minlength=self.shape[0]) if self.ndim else []
            self._cache["csr"] = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        return self._cache["csr"]

    def with_values(self, values: Any) -> SparseTensor:
        """Same structure with a new values array (numpy or torch, e.g. requiring grad). The
        structure and its caches are shared, never copied; values are never cached."""
        got = tuple(values.shape)
        if got != (self.nnz,):
            raise ValueError(f"with_values: expected {self.nnz} values, got shape {got}")
        out = copy.copy(self)  # same indices, shape, groups and structure cache
        out.values = values if _is_torch(values) else np.asarray(values)
        return out

    def symmetrize(self, how: str = "sum", groups: Any = "full") -> SymmetricTensor:
        """A symmetric tensor from this one: ``sum`` (A + Aᵀ), ``average``, ``upper``, ``lower``."""
        grp = normalize_groups(groups, self.shape)
        idx, vals = self.indices, _to_numpy(self.values)
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
        out = merged.values * (stab.astype(vals.dtype) if vals.dtype.kind in "fciu" else stab)
        if how == "average":
            out = out / math.prod(math.factorial(len(g)) for g in grp)
        return SymmetricTensor(merged.indices, out, self.shape, grp, check=False)

    def __repr__(self) -> str:
        return f"SparseTensor(shape={self.shape}, nnz={self.nnz}, dtype={self.dtype})"


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
            k = _first_true(~_canonical_mask(self.indices, self.groups))
            if k is not None:
                raise EntryError(
                    f"SymmetricTensor: entry {_fmt('A', self.indices[:, k])} is not canonical for "
                    f"groups {self.groups} (coordinates must be nondecreasing within a group)",
                    (k,),
                )

    @classmethod
    def from_canonical(cls, indices: Any, values: Any, shape: Sequence[int], groups: Any,
                       *, name: str = "A") -> SymmetricTensor:
        """Fast path for canonical entries in any order; agreeing duplicates are kept once."""
        idx, vals, shape = _coo_arrays(indices, values, shape, name)
        grp = normalize_groups(groups, shape, name)
        k = _first_true(~_canonical_mask(idx, grp))
        if k is not None:
            raise EntryError(f"{name}: entry {_fmt(name, idx[:, k])} is not canonical for groups "
                             f"{grp} (coordinates must be nondecreasing within a group)", (k,))
        order = None
        if idx.shape[1] > 1:
            equal, less = _adjacent_cmp(idx)
            if not less.all():
                order = _lex_argsort(idx, shape)
                idx, vals = idx[:, order], vals[order]
                equal, _ = _adjacent_cmp(idx)
            if equal.any():
                bad = equal & ~_agree(vals[1:], vals[:-1], 0.0, 0.0)
                k = _first_true(bad)
                if k is not None:
                    pos = (k, k + 1) if order is None else (int(order[k]), int(order[k + 1]))
                    raise EntryError(f"{name} has duplicate entries at {_fmt(name, idx[:, k])} "
                                     f"with different values {_val(vals[k])} and "
                                     f"{_val(vals[k + 1])}", pos)
                keep = np.concatenate([[True], ~equal])
                idx, vals = idx[:, keep], vals[keep]
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
        idx, vals, shape = _coo_arrays(indices, values, shape, name)
        grp = normalize_groups(groups, shape, name)
        if stored == "full" and not check:
            # Trusted: the canonical entries carry everything; the other arrangements are unread.
            keep = _canonical_mask(idx, grp)
            return cls.from_canonical(idx[:, keep], vals[keep], shape, grp, name=name)
        r = _Runs(idx, vals, shape, grp)
        if r.n == 0:
            return cls(idx, vals, shape, grp, check=False)
        vals, order, first = r.vals, r.order, r.first
        dup = np.concatenate([[False], r.same_orig & ~_agree(vals[1:], vals[:-1], atol, rtol)])
        k = _first_true(dup)
        if k is not None:
            raise EntryError(
                f"{name} has duplicate entries at {_fmt(name, r.orig(k))} with different values "
                f"{_val(vals[k - 1])} and {_val(vals[k])}", (int(order[k - 1]), int(order[k])))
        canon = r.canon_starts()
        if check:
            k = _first_true(~_agree(vals, vals[first], atol, rtol))
            if k is not None:
                f = first[k]
                a, b = r.orig(f), r.orig(k)
                modes = [g for g in grp if (a[list(g)] != b[list(g)]).any()]
                raise EntryError(
                    f"{name} is not symmetric in modes {', '.join(map(str, modes))}: "
                    f"{_fmt(name, a)} = {_val(vals[f])} but "
                    f"{_fmt(name, b)} = {_val(vals[k])}", (int(order[f]), int(order[k])))
            # arrangements per canonical entry (repeats of one arrangement count once)
            new_arrangement = np.concatenate([[True], ~r.same_orig]).astype(np.int64)
            arrangements = np.add.reduceat(new_arrangement, r.starts)
            if stored == "full":
                expected = math.prod(math.factorial(len(g)) for g in grp) // _stabilizer(canon, grp)
                run = _first_true(arrangements != expected)
                if run is not None:
                    raise _missing_permutation(name, grp, r, run)
            else:
                run = _first_true(arrangements > 1)
                if run is not None:
                    a = r.orig(r.starts[run])
                    later = r.starts[run] + 1 + int(np.argmax(~r.same_orig[r.starts[run]:]))
                    b = r.orig(later)
                    raise EntryError(
                        f"{name} stores one entry in two arrangements, {_fmt(name, a)} and "
                        f"{_fmt(name, b)}, but was declared to hold each symmetric entry once "
                        f"(stored='one'); pass stored='full' if every permutation is stored",
                        (int(order[r.starts[run]]), int(order[later])))
        return cls(canon, vals[r.starts], shape, grp, check=False)

    @classmethod
    def from_dense(cls, t: Any, groups: Any = "full", *, check: bool = True, atol: float = 0.0,
                   rtol: float = 0.0, fill: float = 0.0, name: str = "A") -> SymmetricTensor:
        """Canonical entries of a dense numpy/torch array that differ from ``fill`` (see
        SparseTensor.from_dense), checking its symmetry if ``check``."""
        a = _to_numpy(t)
        grp = normalize_groups(groups, a.shape, name)
        if check:
            check_dense_symmetry(a, grp, name, atol, rtol)
        nz = np.array(np.nonzero(a != fill), dtype=np.int64).reshape(a.ndim, -1)
        nz = nz[:, _canonical_mask(nz, grp)]
        return cls(nz, a[tuple(nz)], a.shape, grp, check=False)

    @property
    def classes(self) -> np.ndarray:
        """Diagonal class (uint8 bit set of equal adjacent coordinates in groups) per nonzero."""
        if "classes" not in self._cache:
            nbits = sum(len(g) - 1 for g in self.groups)
            if nbits > 8:
                raise ValueError(f"classes: {nbits} diagonal bits do not fit in uint8")
            cls_ = np.zeros(self.nnz, dtype=np.uint8)
            bit = 0
            for bits in _equal_bits(self.indices, self.groups):
                for eq in bits:
                    cls_ |= eq.astype(np.uint8) << np.uint8(bit)
                    bit += 1
            self._cache["classes"] = cls_
        return self._cache["classes"]

    def _perm_counts(self) -> np.ndarray:
        full = math.prod(math.factorial(len(g)) for g in self.groups)
        return full // _stabilizer(self.indices, self.groups)

    @property
    def n_expanded(self) -> int:
        """Number of nonzeros of the expanded tensor (all distinct permutations)."""
        if "n_expanded" not in self._cache:
            self._cache["n_expanded"] = int(self._perm_counts().sum())
        return self._cache["n_expanded"]

    canonical_multiplicity = n_expanded

    def expansion(self) -> tuple[SparseTensor, np.ndarray]:
        """The structure of the expanded tensor (all distinct permutations of every canonical
        entry, sorted) and, per expanded entry, the position of its canonical entry: expanded
        values are ``values[take]``. Cached: it depends on the structure only."""
        if "expansion" not in self._cache:
            bits = _equal_bits(self.indices, self.groups)
            parts_i, parts_t = [], []
            positions = np.arange(self.nnz, dtype=np.int64)
            for combo, dest in _group_perms(self.groups, self.ndim):
                keep = np.ones(self.nnz, dtype=bool)
                for gbits, s in zip(bits, combo, strict=True):
                    for t, eq in enumerate(gbits):
                        if s[t] > s[t + 1]:  # equal values keep their order: each arrangement once
                            keep &= ~eq
                new = np.empty((self.ndim, int(keep.sum())), dtype=np.int64)
                new[dest] = self.indices[:, keep]
                parts_i.append(new)
                parts_t.append(positions[keep])
            idx = np.concatenate(parts_i, axis=1) if parts_i else np.array(self.indices)
            take = np.concatenate(parts_t) if parts_t else positions
            order = _lex_argsort(idx, self.shape)
            structure = SparseTensor(idx[:, order], np.zeros(0), self.shape, check=False)
            self._cache["expansion"] = (structure, take[order])
        return self._cache["expansion"]

    def expanded(self) -> SparseTensor:
        """All distinct permutations of every canonical entry, as a sorted SparseTensor (its
        structure and structure caches are shared by every call on this structure)."""
        structure, take = self.expansion()
        if _is_torch(self.values):
            import torch

            return structure.with_values(self.values[torch.from_numpy(take).to(self.values.device)])
        return structure.with_values(np.asarray(self.values)[take])

    def to_dense(self) -> np.ndarray:
        vals = _to_numpy(self.values)
        out = np.zeros(self.shape, dtype=vals.dtype)
        for _, dest in _group_perms(self.groups, self.ndim):
            new = np.empty_like(self.indices)
            new[dest] = self.indices
            out[tuple(new)] = vals
        return out

    def symmetrize(self, how: str = "sum", groups: Any = "full") -> SymmetricTensor:
        return self.expanded().symmetrize(how, groups)

    def __repr__(self) -> str:
        return (f"SymmetricTensor(shape={self.shape}, groups={self.groups}, nnz={self.nnz} "
                f"canonical ({self.n_expanded} expanded), dtype={self.dtype})")
