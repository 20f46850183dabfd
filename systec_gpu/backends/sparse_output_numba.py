"""Numba kernels of a sparse symmetric Gram output, C = R·diag(w)·Rᵀ, canonical part (i <= j) only.

Row-wise (Gustavson) SpGEMM on the canonical triangle, in two phases:
- symbolic: per output row i, count the distinct columns j >= i reached through the nonzeros
  (i, k) of R and the entries (j, k) of column k with j >= i: in the column-sorted copy of R
  they are the suffix of column k from the position of (i, k) itself (`tpos`), so the triangle
  costs no search;
- numeric: the same walk accumulates R[i,k]·w[k]·R[j,k] into a dense accumulator of the row,
  lists its columns as first met and writes the row once, its columns in order (a bitmap of the
  row's span read word by word, or a sort of the list when the span is long);
- a repeat call on the same structure runs the numeric phase alone, straight into the kept slots.

Each thread takes a contiguous block of rows holding an equal share of the canonical products (row i
has the most work for small i; blocks, not rows dealt in turn, so that two threads never write
the same cache line of the output); each thread owns its accumulator and marker arrays, and each
output row is written by one thread: no races.
"""

from __future__ import annotations

import numba
import numpy as np
from numba.cpython.unsafe.numbers import trailing_zeros

from .numba_backend import _PARALLEL_LOCK, _THREADING_LAYER

SERIAL_BELOW = 1_000_000  # canonical products (a few ms on one core) below which threads do not pay
# A row's columns come out in order through a bitmap of its span when the span is below this many
# 64-bit words per entry (reading the words is cheaper than sorting the entries).
WORDS_PER_ENTRY = 8
INSERTION_BELOW = 32  # rows this short are sorted in place by insertion (no call, no allocation)


@numba.njit(cache=True, nogil=True)
def _count_rows(rowptr, col, tpos, colptr, csc_row, n, first, stop, counts):
    """Symbolic phase of rows first..stop - 1: distinct columns j >= i of row i."""
    mark = np.full(n, -1, dtype=np.int64)
    for i in range(first, stop):
        found = 0
        for p in range(rowptr[i], rowptr[i + 1]):
            k = col[p]
            for q in range(tpos[p], colptr[k + 1]):
                j = csc_row[q]
                if mark[j] != i:
                    mark[j] = i
                    found += 1
        counts[i] = found


@numba.njit(cache=True, nogil=True)
def _fill_rows(rowptr, col, val, weight, tpos, colptr, csc_row, csc_val, n, first, stop, out_ptr, out_row,
               out_col, out_val):
    """Numeric phase of rows first..stop - 1: each row accumulated densely, its columns
    listed as first met, then written once in order: through a bitmap of the row's span [i, last]
    read word by word (banded rows: the span is short), else by sorting the list."""
    mark = np.full(n, -1, dtype=np.int64)
    words = np.zeros((n >> 6) + 1, dtype=np.uint64)
    acc = np.zeros(n, dtype=out_val.dtype)
    one = np.uint64(1)
    for i in range(first, stop):
        start = out_ptr[i]
        end = start
        last = i
        for p in range(rowptr[i], rowptr[i + 1]):
            k = col[p]
            a = val[p] * weight[k]
            for q in range(tpos[p], colptr[k + 1]):
                j = csc_row[q]
                if mark[j] != i:
                    mark[j] = i
                    out_col[end] = j
                    end += 1
                    if j > last:
                        last = j
                acc[j] += a * csc_val[q]
        low, high = i >> 6, last >> 6
        found = end - start
        # cheapest way to order the row: insertion sort (short rows, ~found^2/4 steps), a bitmap
        # of its span (one read per 64 columns), or a sort of the list
        short = found <= INSERTION_BELOW and found * found < 4 * (high - low + 1)
        if not short and high - low < WORDS_PER_ENTRY * found:
            for t in range(start, end):
                j = out_col[t]
                words[j >> 6] |= one << np.uint64(j & 63)
            t = start
            for w in range(low, high + 1):
                bits = words[w]
                if bits:
                    words[w] = 0
                    while bits:
                        j = (w << 6) + trailing_zeros(bits)
                        bits &= bits - one
                        out_col[t] = j
                        out_row[t] = i
                        out_val[t] = acc[j]
                        acc[j] = 0
                        t += 1
        else:
            if found <= INSERTION_BELOW:
                for t in range(start + 1, end):  # insertion sort: short rows of a wide span
                    j = out_col[t]
                    u = t
                    while u > start and out_col[u - 1] > j:
                        out_col[u] = out_col[u - 1]
                        u -= 1
                    out_col[u] = j
            else:
                out_col[start:end].sort()
            for t in range(start, end):
                j = out_col[t]
                out_row[t] = i
                out_val[t] = acc[j]
                acc[j] = 0


@numba.njit(cache=True, nogil=True)
def _numeric_rows(rowptr, col, val, weight, tpos, colptr, csc_row, csc_val, n, first, stop, out_ptr, out_col,
                  out_val):
    """Numeric phase on a known output structure (a repeat call): each product added straight
    into its output slot, found through the row's column -> slot map. `out_val` starts zeroed."""
    slot = np.zeros(n, dtype=np.int64)
    for i in range(first, stop):
        for t in range(out_ptr[i], out_ptr[i + 1]):
            slot[out_col[t]] = t
        for p in range(rowptr[i], rowptr[i + 1]):
            k = col[p]
            a = val[p] * weight[k]
            for q in range(tpos[p], colptr[k + 1]):
                out_val[slot[csc_row[q]]] += a * csc_val[q]


@numba.njit(parallel=True, cache=True, nogil=True)
def _count(rowptr, col, tpos, colptr, csc_row, n, bounds, counts):
    for chunk in numba.prange(bounds.shape[0] - 1):
        _count_rows(rowptr, col, tpos, colptr, csc_row, n, bounds[chunk], bounds[chunk + 1], counts)


@numba.njit(parallel=True, cache=True, nogil=True)
def _fill(rowptr, col, val, weight, tpos, colptr, csc_row, csc_val, n, bounds, out_ptr, out_row, out_col,
          out_val):
    for chunk in numba.prange(bounds.shape[0] - 1):
        _fill_rows(rowptr, col, val, weight, tpos, colptr, csc_row, csc_val, n, bounds[chunk], bounds[chunk + 1],
                   out_ptr, out_row, out_col, out_val)


@numba.njit(parallel=True, cache=True, nogil=True)
def _numeric(rowptr, col, val, weight, tpos, colptr, csc_row, csc_val, n, bounds, out_ptr, out_col, out_val):
    for chunk in numba.prange(bounds.shape[0] - 1):
        _numeric_rows(rowptr, col, val, weight, tpos, colptr, csc_row, csc_val, n, bounds[chunk], bounds[chunk + 1],
                      out_ptr, out_col, out_val)


def gram_canonical(structure, values: np.ndarray, weight: np.ndarray, threads: int | None = None):
    """(indices [2, nnz] int64, values, canonical entries per row) of the canonical part of R·diag(w)·Rᵀ.

    `structure` is a spgemm.GramStructure; `values` R's values in CSR order; `weight` one factor
    per column of R (ones when there is none). The output's structure depends on R's structure
    only: the first call finds it (symbolic phase: count per row, then the fill lists and orders
    each row's columns while it accumulates), keeps it on `structure.outputs`, and a repeat call
    on the same structure runs the numeric phase alone. The indices array returned is that kept
    structure: do not write into it."""
    s = structure
    dtype = values.dtype
    weight = weight.astype(dtype, copy=False)
    csc_val = np.ascontiguousarray(values[s.csc_perm])
    serial = threads == 1 or (threads is None and s.products < SERIAL_BELOW)
    guard = not serial and _THREADING_LAYER[0] in (None, "workqueue")
    if guard and not _PARALLEL_LOCK.acquire(blocking=False):
        serial, guard = True, False  # another thread runs a parallel kernel: workqueue cannot nest
    try:
        bounds = s.row_bounds(1 if serial else threads or numba.get_num_threads())
        arrays = (s.rowptr, s.col, values, weight, s.tpos, s.colptr, s.csc_row, csc_val, s.n)
        known = s.outputs.get("numba")
        if known is not None:
            out_ptr, indices, counts = known
            out_val = np.zeros(indices.shape[1], dtype=dtype)
            if serial:
                _numeric_rows(*arrays, 0, s.n, out_ptr, indices[1], out_val)
            else:
                _numeric(*arrays, bounds, out_ptr, indices[1], out_val)
        else:
            counts = np.zeros(s.n, dtype=np.int64)
            if serial:
                _count_rows(s.rowptr, s.col, s.tpos, s.colptr, s.csc_row, s.n, 0, s.n, counts)
            else:
                _count(s.rowptr, s.col, s.tpos, s.colptr, s.csc_row, s.n, bounds, counts)
            out_ptr = np.zeros(s.n + 1, dtype=np.int64)
            np.cumsum(counts, out=out_ptr[1:])
            nnz = int(out_ptr[-1])
            indices = np.empty((2, nnz), dtype=np.int64)
            out_val = np.empty(nnz, dtype=dtype)
            if serial:
                _fill_rows(*arrays, 0, s.n, out_ptr, indices[0], indices[1], out_val)
            else:
                _fill(*arrays, bounds, out_ptr, indices[0], indices[1], out_val)
            s.outputs["numba"] = (out_ptr, indices, counts)
        if not serial and _THREADING_LAYER[0] is None:
            _THREADING_LAYER[0] = numba.threading_layer()
    finally:
        if guard:
            _PARALLEL_LOCK.release()
    return indices, out_val, counts
