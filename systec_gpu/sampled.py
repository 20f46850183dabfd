"""Gradients evaluated only at a sparse operand's stored coordinates (never an n^ndim array).

A canonical value v_p of a symmetric operand stands for every distinct permutation of its
coordinates c_p, so dL/dv_p = sum over those distinct permutations pi of D[pi(c_p)], where D is
the gradient w.r.t. the dense tensor. For a `+=` product, D at a point is the product of the
other factors times grad_out with the summed (dense) indices contracted: each factor is gathered
at the points (one row per point, the summed modes kept) and contracted by `torch.einsum`. For a
`min=`/`max=` sum of accesses, the gradient goes to the arg-min/arg-max point of each output.
Everything is torch ops on the coordinate tensors, so it traces under torch.compile.
"""

from __future__ import annotations

import string
from collections.abc import Iterator, Mapping, Sequence

import torch

from .autodiff import permutations_of
from .ir.einsum import Access, Call, Einsum, Literal

Groups = tuple[tuple[int, ...], ...]


def distinct_permutations(indices: torch.Tensor, groups: Groups) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(coordinates, keep) per group permutation: `keep[p]` marks the first copy of each distinct point.

    `indices` are canonical (ascending within each group), so equal coordinates of a group sit in
    runs. A permutation that moves a later mode of a run before an earlier one repeats an
    arrangement another permutation already produced; keeping only the arrangements in which equal
    values keep their mode order yields each distinct permutation of every entry exactly once
    (the rule of `SymmetricTensor.expanded`), with static shapes.
    """
    ndim = indices.shape[0]
    for perm in permutations_of(tuple(groups), ndim):
        coords = indices[list(perm)]
        keep = torch.ones(indices.shape[1], dtype=torch.bool, device=indices.device)
        for group in groups:
            for a_pos, a in enumerate(group):
                for b in group[a_pos + 1:]:
                    if perm[a] > perm[b]:  # order swapped: only allowed where the values differ
                        keep = keep & (indices[perm[a]] != indices[perm[b]])
        yield coords, keep


def product_at(factors: Sequence[tuple[str, tuple[str, ...]]], coords: torch.Tensor,
               tensors: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Sum over the summed indices of the product of dense `factors`, at each point of `coords`.

    Index `o<m>` takes its value from `coords[m]` (one column per point); every other index is
    summed over its full range. Returns one value per point.
    """
    letters = iter(string.ascii_letters.replace("p", ""))
    summed: dict[str, str] = {}
    operands = []
    subscripts = []
    for tensor, names in factors:
        t = tensors[tensor]
        fixed = [m for m, n in enumerate(names) if n.startswith("o")]
        free = [m for m, n in enumerate(names) if not n.startswith("o")]
        if fixed:
            # point modes first, then one row per point: [points, *summed modes]
            t = t.permute(*fixed, *free)[tuple(coords[int(names[m][1:])] for m in fixed)]
        sub = "p" if fixed else ""
        for m in free:
            if names[m] not in summed:
                summed[names[m]] = next(letters)
            sub += summed[names[m]]
        operands.append(t)
        subscripts.append(sub)
    if not any(s.startswith("p") for s in subscripts):
        raise ValueError("product_at: no factor reads the point's coordinates")
    return torch.einsum(",".join(subscripts) + "->p", *operands)


def _terms_of_sum(expr) -> list[Access | Literal]:
    if isinstance(expr, Access | Literal):
        return [expr]
    if isinstance(expr, Call) and expr.op == "add":
        return [t for a in expr.args for t in _terms_of_sum(a)]
    raise NotImplementedError(
        "autograd of min=/max= supports a right-hand side that is a sum (`+`) of tensor accesses and "
        f"constants; got a {getattr(expr, 'op', type(expr).__name__)!r} node")


def check_minmax(einsum: Einsum, sparse: Mapping[str, bool]) -> tuple[Access, list[Access | Literal]]:
    """The driver access and the summed terms of a differentiable min=/max= einsum, or NotImplementedError.

    Supported: `out[..] min= S[..] + X[..] + c ...` with exactly one sparse operand S (the driver,
    accessed once, no repeated index), dense operands indexed only by S's indices, and output
    indices among S's indices: then every candidate point is a stored entry of S (or one of its
    distinct permutations) and its dense operands are gathered at that point.
    """
    terms = _terms_of_sum(einsum.rhs)
    accs = [t for t in terms if isinstance(t, Access)]
    drivers = [a for a in accs if sparse[a.tensor]]
    what = f"autograd of {einsum.output} {einsum.reduce} ..."
    if len(drivers) != 1:
        raise NotImplementedError(f"{what}: needs exactly one sparse operand access (the driver); "
                                  f"found {len(drivers)}")
    (driver,) = drivers
    names = [i.name for i in driver.indices]
    if len(set(names)) != len(names):
        raise NotImplementedError(f"{what}: the sparse access {driver} repeats an index")
    for a in accs:
        off = [i.name for i in a.indices if i.name not in names]
        if off:
            raise NotImplementedError(f"{what}: {a} uses index {off[0]}, which the sparse driver {driver} lacks")
    off = [i.name for i in einsum.output.indices if i.name not in names]
    if off:
        raise NotImplementedError(f"{what}: output index {off[0]} is not an index of the sparse driver {driver}")
    return driver, terms


def minmax_gradients(einsum: Einsum, sparse: Mapping[str, bool], groups: Groups, indices: torch.Tensor,
                     tensors: Mapping[str, torch.Tensor], out_shape: Sequence[int],
                     grad: torch.Tensor) -> dict[str, torch.Tensor]:
    """Subgradients of a min=/max= einsum (see `check_minmax`) w.r.t. the driver's values and dense operands.

    Each output entry is the min (max) over its candidate points: every distinct permutation of
    every stored entry of the driver whose output coordinates match. The gradient of the output
    entry flows with weight 1 to the operand entries read by its winning point. Ties go to the
    first winning point in canonical order: the lowest stored entry index, then the first
    permutation in `permutations_of` order (identity first). `tensors` holds the dense operands
    by name and the driver's values under the driver's name; the result has the same keys.
    """
    driver, terms = check_minmax(einsum, sparse)
    lowest = einsum.reduce == "min="
    values = tensors[driver.tensor]
    nnz = indices.shape[1]
    coords_parts, keep_parts = [], []
    for coords, keep in distinct_permutations(indices, groups):
        coords_parts.append(coords)
        keep_parts.append(keep)
    n_perm = len(coords_parts)
    coords = torch.cat(coords_parts, dim=1)  # point k*nnz + p: permutation k of entry p
    keep = torch.cat(keep_parts)
    at = {i.name: coords[m] for m, i in enumerate(driver.indices)}
    point_vals = values.repeat(n_perm)
    for t in terms:
        if isinstance(t, Literal):
            point_vals = point_vals + t.value
        elif t is not driver:
            point_vals = point_vals + tensors[t.tensor][tuple(at[i.name] for i in t.indices)]
    worst = torch.tensor(float("inf") if lowest else float("-inf"), dtype=values.dtype, device=values.device)
    point_vals = torch.where(keep, point_vals, worst)
    n_out = 1
    for s in out_shape:
        n_out *= s
    lin = torch.zeros_like(coords[0])
    for i, size in zip(einsum.output.indices, out_shape, strict=True):
        lin = lin * size + at[i.name]
    # recomputed from the same point values, so the equality test below is exact
    best = torch.full((n_out,), float(worst), dtype=values.dtype, device=values.device)
    best = best.scatter_reduce(0, lin, point_vals, "amin" if lowest else "amax", include_self=True)
    candidate = keep & (point_vals == best[lin])
    n_points = n_perm * nnz
    order = torch.arange(n_points, device=coords.device)
    key = (order % nnz) * n_perm + order // nnz  # canonical order: entry first, then permutation
    key = torch.where(candidate, key, n_points)
    first = torch.full((n_out,), n_points, dtype=key.dtype, device=key.device)
    first = first.scatter_reduce(0, lin, key, "amin", include_self=True)
    winner = candidate & (key == first[lin])
    g = torch.where(winner, grad.reshape(-1)[lin], torch.zeros((), dtype=grad.dtype, device=grad.device))
    out: dict[str, torch.Tensor] = {driver.tensor: g.reshape(n_perm, nnz).sum(0)}
    for t in terms:
        if isinstance(t, Literal) or t is driver:
            continue
        x = tensors[t.tensor]
        lin_x = torch.zeros_like(coords[0])
        for i, size in zip(t.indices, x.shape, strict=True):
            lin_x = lin_x * size + at[i.name]
        part = torch.zeros(x.numel(), dtype=x.dtype, device=x.device).index_add(0, lin_x, g).reshape(x.shape)
        out[t.tensor] = part if t.tensor not in out else out[t.tensor] + part
    return out
