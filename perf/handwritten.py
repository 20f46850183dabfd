"""Hand-written Numba kernels of the same schedules as the generated ones: the bar for codegen.

Each kernel reads the arrays `systec_gpu.runtime.bind` prepares (canonical nonzeros, CSR row
pointers for matrices, uint32 coordinates, dense operands in the kernel's layout) and does what
a person would write for that schedule, nothing cleverer:

- one chunk of nonzeros per thread (the same chunk bounds, balanced by nonzeros), each into its
  own partial output (np.zeros; Bellman's min= fills +inf over the rows a chunk can touch), then
  one parallel pass adding the partials over the rows each chunk touched;
- CSR matrices: the diagonal entry is the first of its sorted canonical row, so it is peeled
  before the row's loop; `x[i]` is read once per row; `y[i]` accumulates in a register;
- COO tensors: the strictly off-diagonal class takes a branch-free path with constant factors
  (2 for 3-D MTTKRP, 6 for 4-D, 24 for 5-D) folded into the nonzero's value; diagonal classes
  (rare) read the multiplicity table.

`perf/cpu.py` times these beside the generated kernels so the gap is visible in every run.
"""

from __future__ import annotations

import numba
import numpy as np

# Two prange loops over the same count (the chunks, then the combine) must not be fused into one.
PARALLEL = {"fusion": False}

# ---------------------------------------------------------------------------------------------
# Partial outputs: zeroed by their own thread from `lo` rows on, combined in parallel


@numba.njit(parallel=PARALLEL, cache=True)
def _combine(flat, first_rows, n_rows):
    """partial[0] += partial[c] over the rows chunk c touched, rows split between threads."""
    chunks = flat.shape[0]
    row = flat.shape[1] // max(n_rows, 1)
    for part in numba.prange(chunks if chunks > 1 else 0):
        first = n_rows * part // chunks
        last = n_rows * (part + 1) // chunks
        for c in range(1, chunks):
            for e in range(max(first_rows[c], first) * row, last * row):
                flat[0, e] += flat[c, e]


# ---------------------------------------------------------------------------------------------
# Matrices (CSR of the canonical upper triangle)


@numba.njit(parallel=PARALLEL, cache=True)
def ssymv(partial, ptr, col, val, x, bounds, first_rows):
    """y = A x, A symmetric, upper triangle in CSR: y[i] += a x[j] and y[j] += a x[i] per entry."""
    chunks = partial.shape[0]
    for c in numba.prange(chunks):
        acc = partial[c]
        for i in range(bounds[c], bounds[c + 1]):
            start, stop = ptr[i], ptr[i + 1]
            xi = x[i]
            yi = 0.0
            if start < stop and col[start] == i:
                yi += val[start] * xi
                start += 1
            for p in range(start, stop):
                j = col[p]
                a = val[p]
                yi += a * x[j]
                acc[j] += a * xi
            acc[i] += yi
    _combine(partial, first_rows, partial.shape[1])


@numba.njit(parallel=PARALLEL, cache=True)
def syprd(partial, ptr, col, val, x, bounds):
    """x^T A x: per row, x[i] * (a_ii x[i] + 2 sum_{j>i} a_ij x[j])."""
    chunks = partial.shape[0]
    for c in numba.prange(chunks):
        total = 0.0
        for i in range(bounds[c], bounds[c + 1]):
            start, stop = ptr[i], ptr[i + 1]
            xi = x[i]
            if start < stop and col[start] == i:
                total += val[start] * xi * xi
                start += 1
            for p in range(start, stop):
                total += 2.0 * (val[p] * xi * x[col[p]])
        partial[c, 0] = total
    s = 0.0
    for c in range(chunks):
        s += partial[c, 0]
    partial[0, 0] = s


@numba.njit(parallel=PARALLEL, cache=True)
def bellman(partial, ptr, col, val, x, bounds, first_rows):
    """y[i] = min_j a_ij + x[j] over an undirected graph stored once."""
    chunks = partial.shape[0]
    for c in numba.prange(chunks):
        acc = partial[c]
        lo = first_rows[c]
        acc[lo:] = np.inf
        for i in range(bounds[c], bounds[c + 1]):
            start, stop = ptr[i], ptr[i + 1]
            xi = x[i]
            yi = np.inf
            if start < stop and col[start] == i:
                yi = min(yi, val[start] + xi)
                start += 1
            for p in range(start, stop):
                j = col[p]
                a = val[p]
                yi = min(yi, a + x[j])
                acc[j] = min(acc[j], a + xi)
            acc[i] = min(acc[i], yi)
    n = partial.shape[1]
    for part in numba.prange(chunks if chunks > 1 else 0):
        first, last = n * part // chunks, n * (part + 1) // chunks
        for c in range(1, chunks):
            for e in range(max(first_rows[c], first), last):
                partial[0, e] = min(partial[0, e], partial[c, e])


@numba.njit(parallel=PARALLEL, cache=True)
def ssymm(partial, ptr, col, val, X, bounds, first_rows):
    """Y = A X, A symmetric (CSR upper triangle), X dense n x R: rows of R lanes."""
    chunks = partial.shape[0]
    R = X.shape[1]
    for c in numba.prange(chunks):
        acc = partial[c]
        for i in range(bounds[c], bounds[c + 1]):
            start, stop = ptr[i], ptr[i + 1]
            if start < stop and col[start] == i:
                a = val[start]
                for r in range(R):
                    acc[i, r] += a * X[i, r]
                start += 1
            for p in range(start, stop):
                j = col[p]
                a = val[p]
                for r in range(R):
                    acc[i, r] += a * X[j, r]
                    acc[j, r] += a * X[i, r]
    _combine(partial.reshape((chunks, partial.size // chunks)), first_rows, partial.shape[1])


# ---------------------------------------------------------------------------------------------
# Tensors (canonical COO, sorted)


@numba.njit(parallel=PARALLEL, cache=True)
def ttm(partial, i0, i1, i2, val, B, bounds, first_rows, mult):
    """C[j,l,:] (canonical j <= l, layout (j, l, r)) += A[k,j,l] B[k,:] over the 3 distinct
    updates of each canonical (k <= j <= l); diagonal classes read the table. Each thread zeroes
    the canonical part of the rows it can touch; the combine adds them and copies every row's
    canonical part to the other half in 16 x 16 blocks."""
    chunks = partial.shape[0]
    n = partial.shape[1]
    R = B.shape[1]
    for c in numba.prange(chunks):
        acc = partial[c]
        for p in range(bounds[c], bounds[c + 1]):
            k, j, l = i0[p], i1[p], i2[p]
            a = val[p]
            if k != j and j != l:
                for r in range(R):
                    acc[j, l, r] += a * B[k, r]
                    acc[k, l, r] += a * B[j, r]
                    acc[k, j, r] += a * B[l, r]
            else:
                cls = (k == j) * 1 + (j == l) * 2
                m0, m1, m2 = mult[cls, 0] * a, mult[cls, 1] * a, mult[cls, 2] * a
                for r in range(R):
                    if m0 != 0:
                        acc[j, l, r] += m0 * B[k, r]
                    if m1 != 0:
                        acc[k, l, r] += m1 * B[j, r]
                    if m2 != 0:
                        acc[k, j, r] += m2 * B[l, r]
    out = partial[0]
    for part in numba.prange(chunks):
        for r0 in range(part * 16, n, chunks * 16):
            r1 = min(r0 + 16, n)
            for c in range(1, chunks):
                for row in range(max(r0, first_rows[c]), r1):
                    out[row, row:, :] += partial[c, row, row:, :]
            for c0 in range(r0, n, 16):
                for col in range(c0, min(c0 + 16, n)):
                    for row in range(r0, min(r1, col)):
                        out[col, row, :] = out[row, col, :]


@numba.njit(parallel=PARALLEL, cache=True)
def mttkrp3(partial, i0, i1, i2, val, B, bounds, first_rows, mult):
    """C[i,:] += A[i,k,l] B[k,:]*B[l,:] and its 2 mirrored updates per canonical (i <= k <= l)."""
    chunks = partial.shape[0]
    R = B.shape[1]
    flat = partial.reshape((chunks, partial.size // chunks))
    for c in numba.prange(chunks):
        acc = partial[c]
        for p in range(bounds[c], bounds[c + 1]):
            i, k, l = i0[p], i1[p], i2[p]
            if i != k and k != l:
                a = 2.0 * val[p]
                for r in range(R):
                    bi, bk, bl = B[i, r], B[k, r], B[l, r]
                    acc[i, r] += a * (bk * bl)
                    acc[k, r] += a * (bi * bl)
                    acc[l, r] += a * (bi * bk)
            else:
                a = val[p]
                cls = (i == k) * 1 + (k == l) * 2
                m0, m1, m2 = mult[cls, 0] * a, mult[cls, 1] * a, mult[cls, 2] * a
                for r in range(R):
                    bi, bk, bl = B[i, r], B[k, r], B[l, r]
                    acc[i, r] += m0 * (bk * bl)
                    acc[k, r] += m1 * (bi * bl)
                    acc[l, r] += m2 * (bi * bk)
    _combine(flat, first_rows, partial.shape[1])


@numba.njit(parallel=PARALLEL, cache=True)
def mttkrp4(partial, i0, i1, i2, i3, val, B, bounds, first_rows, mult):
    """4-D MTTKRP over canonical (i <= k <= l <= m): leave-one-out products by prefix/suffix."""
    chunks = partial.shape[0]
    R = B.shape[1]
    flat = partial.reshape((chunks, partial.size // chunks))
    for c in numba.prange(chunks):
        acc = partial[c]
        for p in range(bounds[c], bounds[c + 1]):
            i, k, l, m = i0[p], i1[p], i2[p], i3[p]
            if i != k and k != l and l != m:
                a = 6.0 * val[p]
                for r in range(R):
                    b0, b1, b2, b3 = B[i, r], B[k, r], B[l, r], B[m, r]
                    p01 = b0 * b1
                    s23 = b2 * b3
                    acc[i, r] += a * (b1 * s23)
                    acc[k, r] += a * (b0 * s23)
                    acc[l, r] += a * (p01 * b3)
                    acc[m, r] += a * (p01 * b2)
            else:
                a = val[p]
                cls = (i == k) * 1 + (k == l) * 2 + (l == m) * 4
                m0, m1, m2, m3 = mult[cls, 0] * a, mult[cls, 1] * a, mult[cls, 2] * a, mult[cls, 3] * a
                for r in range(R):
                    b0, b1, b2, b3 = B[i, r], B[k, r], B[l, r], B[m, r]
                    p01 = b0 * b1
                    s23 = b2 * b3
                    acc[i, r] += m0 * (b1 * s23)
                    acc[k, r] += m1 * (b0 * s23)
                    acc[l, r] += m2 * (p01 * b3)
                    acc[m, r] += m3 * (p01 * b2)
    _combine(flat, first_rows, partial.shape[1])


@numba.njit(parallel=PARALLEL, cache=True)
def mttkrp5(partial, i0, i1, i2, i3, i4, val, B, bounds, first_rows, mult):
    """5-D MTTKRP over canonical (i <= k <= l <= m <= n)."""
    chunks = partial.shape[0]
    R = B.shape[1]
    flat = partial.reshape((chunks, partial.size // chunks))
    for c in numba.prange(chunks):
        acc = partial[c]
        for p in range(bounds[c], bounds[c + 1]):
            i, k, l, m, n = i0[p], i1[p], i2[p], i3[p], i4[p]
            if i != k and k != l and l != m and m != n:
                a = 24.0 * val[p]
                for r in range(R):
                    b0, b1, b2, b3, b4 = B[i, r], B[k, r], B[l, r], B[m, r], B[n, r]
                    p01 = b0 * b1
                    p012 = p01 * b2
                    s34 = b3 * b4
                    s234 = b2 * s34
                    acc[i, r] += a * (b1 * s234)
                    acc[k, r] += a * (b0 * s234)
                    acc[l, r] += a * (p01 * s34)
                    acc[m, r] += a * (p012 * b4)
                    acc[n, r] += a * (p012 * b3)
            else:
                a = val[p]
                cls = (i == k) * 1 + (k == l) * 2 + (l == m) * 4 + (m == n) * 8
                m0, m1, m2 = mult[cls, 0] * a, mult[cls, 1] * a, mult[cls, 2] * a
                m3, m4 = mult[cls, 3] * a, mult[cls, 4] * a
                for r in range(R):
                    b0, b1, b2, b3, b4 = B[i, r], B[k, r], B[l, r], B[m, r], B[n, r]
                    p01 = b0 * b1
                    p012 = p01 * b2
                    s34 = b3 * b4
                    s234 = b2 * s34
                    acc[i, r] += m0 * (b1 * s234)
                    acc[k, r] += m1 * (b0 * s234)
                    acc[l, r] += m2 * (p01 * s34)
                    acc[m, r] += m3 * (p012 * b4)
                    acc[n, r] += m4 * (p012 * b3)
    _combine(flat, first_rows, partial.shape[1])


# ---------------------------------------------------------------------------------------------
# Runner: the same bound arguments and chunk bounds the generated kernel gets

HANDWRITTEN = ("ssymv", "syprd", "bellman", "ssymm", "ttm", "mttkrp3", "mttkrp4", "mttkrp5")


def runner(kernel: str, loops, args, threads: int):
    """A zero-argument function running the hand-written `kernel` on bound `args` (the same
    arrays as the generated kernel's); it returns the output in the kernel's layout."""
    numba.set_num_threads(threads)
    d = args.driver
    bounds = d.chunk_bounds(threads)
    shape = (threads, *args.out_shape)
    table = args.tables.get("mult")
    dense = next(iter(args.dense.values())) if args.dense else None

    rows = args.out_shape[0]
    if d.pointers is not None:  # CSR: a chunk's rows start at its first row
        first_rows = np.minimum(bounds[:-1], rows)
    else:  # COO: at the leading coordinate of its first nonzero
        nonempty = bounds[:-1] < bounds[1:]
        first_rows = np.full(threads, rows, dtype=np.int64)
        first_rows[nonempty] = d.coords[0][bounds[:-1][nonempty]]
    first_rows[0] = 0  # chunk 0's buffer is the result: every row

    if kernel in ("ssymv", "bellman", "ssymm"):
        fn = {"ssymv": ssymv, "bellman": bellman, "ssymm": ssymm}[kernel]

        def run():
            partial = (np.empty if kernel == "bellman" else np.zeros)(shape, dtype=args.dtype)
            fn(partial, d.pointers, d.coords[1], d.values, dense, bounds, first_rows)
            return partial[0]
    elif kernel == "syprd":
        def run():
            partial = (np.empty if kernel == "bellman" else np.zeros)(shape, dtype=args.dtype)
            syprd(partial, d.pointers, d.coords[1], d.values, dense, bounds)
            return partial[0]
    else:
        fn = {"ttm": ttm, "mttkrp3": mttkrp3, "mttkrp4": mttkrp4, "mttkrp5": mttkrp5}[kernel]

        def run():
            partial = (np.empty if kernel == "bellman" else np.zeros)(shape, dtype=args.dtype)
            fn(partial, *d.coords, d.values, dense, bounds, first_rows, table)
            return partial[0]
    return run
