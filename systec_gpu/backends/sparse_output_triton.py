"""Triton kernels of a sparse symmetric Gram output, C = R·diag(w)·Rᵀ, canonical part (i <= j) only.

Expand, sort, compress (ESC), kept simple:
- symbolic: one lane per nonzero (i, k) of R counts its canonical products, the entries (j, k)
  of column k with j >= i (the suffix of column k from the position of (i, k) itself); an
  exclusive scan of the counts gives each nonzero its slots, and their sum per row of R the
  canonical products of each output row;
- numeric: one program per nonzero writes its products R[i,k]·w[k]·R[j,k] with the key i·n + j
  into its slots, a block of column entries at a time;
- compress: sort by key, add equal keys (torch ops on the device): the canonical nonzeros in
  row-major order, each output row's entries contiguous and sorted.

Under TRITON_INTERPRET=1 the kernels run on CPU tensors (tests); on a GPU on CUDA tensors.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK_NONZEROS = 256  # lanes of the counting kernel
BLOCK_COLUMN = 64  # column entries written per step by the expanding kernel


@triton.jit
def _count_products(tpos, col, colptr, counts, nnz, BLOCK: tl.constexpr):
    p = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    inside = p < nnz
    k = tl.load(col + p, mask=inside, other=0)
    start = tl.load(tpos + p, mask=inside, other=0)
    stop = tl.load(colptr + k + 1, mask=inside, other=0)
    tl.store(counts + p, stop - start, mask=inside)


@triton.jit
def _expand_products(row, col, val, weight, tpos, colptr, csc_row, csc_val, slots, keys, products, n,
                     BLOCK: tl.constexpr):
    p = tl.program_id(0)
    i = tl.load(row + p).to(tl.int64)
    k = tl.load(col + p)
    a = tl.load(val + p) * tl.load(weight + k)
    start = tl.load(tpos + p)
    stop = tl.load(colptr + k + 1)
    base = tl.load(slots + p)
    for first in range(start, stop, BLOCK):
        q = first + tl.arange(0, BLOCK)
        inside = q < stop
        j = tl.load(csc_row + q, mask=inside, other=0).to(tl.int64)
        v = tl.load(csc_val + q, mask=inside, other=0.0)
        slot = base + (q - start)
        tl.store(keys + slot, i * n + j, mask=inside)
        tl.store(products + slot, a * v, mask=inside)


def gram_canonical(structure, values: torch.Tensor, weight: torch.Tensor):
    """(indices [2, nnz] int64, values, products per output row) of the canonical part of
    R·diag(w)·Rᵀ, all torch tensors on `values`' device. `structure` is a spgemm.GramStructure
    whose arrays `structure.on(device)` gives as torch tensors."""
    device = values.device
    s = structure.on(device)
    nnz, n = structure.nnz, structure.n
    counts = torch.empty(nnz, dtype=torch.int64, device=device)
    if nnz:
        _count_products[(triton.cdiv(nnz, BLOCK_NONZEROS),)](s["tpos"], s["col"], s["colptr"], counts, nnz,
                                                              BLOCK=BLOCK_NONZEROS)
    slots = torch.zeros(nnz + 1, dtype=torch.int64, device=device)
    torch.cumsum(counts, 0, out=slots[1:])
    total = int(slots[-1])  # the one value that comes back to the host: the expanded size
    per_row = torch.zeros(n, dtype=torch.int64, device=device).index_add_(0, s["row"], counts)
    keys = torch.empty(total, dtype=torch.int64, device=device)
    products = torch.empty(total, dtype=values.dtype, device=device)
    if total:
        csc_val = values[s["csc_perm"]]
        _expand_products[(nnz,)](s["row"], s["col"], values, weight, s["tpos"], s["colptr"], s["csc_row"], csc_val,
                                 slots, keys, products, n, BLOCK=BLOCK_COLUMN)
    keys, order = torch.sort(keys)
    unique, inverse = torch.unique_consecutive(keys, return_inverse=True)
    sums = torch.zeros(unique.numel(), dtype=values.dtype, device=device).index_add_(0, inverse, products[order])
    indices = torch.stack((torch.div(unique, n, rounding_mode="floor"), unique % n)) if n else \
        torch.zeros((2, 0), dtype=torch.int64, device=device)
    return indices, sums, per_row
