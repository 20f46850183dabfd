"""Derivative expressions of `+=` einsums, written as einsum text for this same compiler.

For `out[o] += c * F1[..] * F2[..] * ...` the gradient w.r.t. one access occurrence X[idx] is
`dX[idx] += c * grad_out[o] * (the other factors)`; the gradient of a tensor sums its occurrences.
Occurrences whose derivative terms are equal up to renaming summed indices, reordering factors
and sorting the indices of a symmetric access (e.g. the three B's of a symmetric MTTKRP) are
compiled once and weighted by their count, so symmetric kernels pay for one derivative kernel.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

from .ir.einsum import Access, Call, Literal, Program, accesses

GRAD_PREFIX = "grad_"
DERIV_PREFIX = "d_"


@dataclass(frozen=True)
class DerivativeTerm:
    """`weight * compile(expression)` is (part of) the gradient of `target`.

    `expression` reads `grad_<out>` and the forward's other tensors by their own names; its
    output `d_<target>` has the target's modes in order.
    """

    target: str
    expression: str
    weight: float
    symmetric: dict[str, tuple[tuple[int, ...], ...]]
    formats: dict[str, str]
    # the product's factors as (tensor, index names); the target's modes are named o0, o1, ... and
    # the summed indices s0, s1, ...: enough to evaluate the term at chosen points (sampled.py)
    factors: tuple[tuple[str, tuple[str, ...]], ...] = ()


def _factors(expr) -> tuple[list[Access], float]:
    """The accesses and the constant of a product; NotImplementedError for anything else."""
    if isinstance(expr, Access):
        return [expr], 1.0
    if isinstance(expr, Literal):
        return [], float(expr.value)
    if isinstance(expr, Call) and expr.op == "mul":
        accs: list[Access] = []
        const = 1.0
        for arg in expr.args:
            a, c = _factors(arg)
            accs += a
            const *= c
        return accs, const
    raise NotImplementedError(
        "autograd supports `+=` einsums whose right-hand side is a product of tensors and constants; "
        f"got a {getattr(expr, 'op', type(expr).__name__)!r} node"
    )


def _normal_form(factors: list[tuple[str, tuple[str, ...]]], rename: dict[str, str],
                 groups: dict[str, tuple[tuple[int, ...], ...]]) -> str:
    """Factors after renaming, indices sorted within symmetric groups, factors sorted."""
    parts = []
    for tensor, idx in factors:
        new = [rename[i] for i in idx]
        for group in groups.get(tensor, ()):
            for pos, name in zip(group, sorted(new[p] for p in group), strict=True):
                new[pos] = name
        parts.append(f"{tensor}[{','.join(new)}]")
    return "*".join(sorted(parts))


def _fresh(base: str, taken: set[str]) -> str:
    name, k = base, 1
    while name in taken:
        k += 1
        name = f"{base}{k}"
    return name


def grad_name(program: Program) -> str:
    """The name of the output's gradient in derivative expressions (fresh in `program`)."""
    einsum = program.einsum
    names = {a.tensor for a in accesses(einsum.rhs)} | {einsum.output.tensor}
    return _fresh(GRAD_PREFIX + einsum.output.tensor, names)


def derivative_terms(program: Program, target: str) -> list[DerivativeTerm]:
    """The derivative kernels (expression text + weight) whose weighted sum is d out / d target."""
    einsum = program.einsum
    if einsum.reduce != "+=":
        raise NotImplementedError(
            f"derivative expressions exist for `+=` einsums only, not {einsum.reduce!r}: min=/max= "
            "gradients follow the arg-min/arg-max instead (sampled.minmax_gradients)"
        )
    accs, const = _factors(einsum.rhs)
    out = einsum.output
    grad = grad_name(program)
    names = {a.tensor for a in accs} | {out.tensor, grad}
    # the derivative's own name: fresh, so that it can be differentiated again (double backward)
    result = _fresh(DERIV_PREFIX + target, names)
    groups = {a.tensor: program.groups_of(a.tensor) for a in accs if program.groups_of(a.tensor)}
    found: dict[str, list] = {}
    for pos, occ in enumerate(accs):
        if occ.tensor != target:
            continue
        idx = tuple(i.name for i in occ.indices)
        if len(set(idx)) != len(idx):
            raise NotImplementedError(f"autograd of an access with a repeated index ({occ}) is not implemented")
        others = [(a.tensor, tuple(i.name for i in a.indices)) for k, a in enumerate(accs) if k != pos]
        factors = [(grad, tuple(i.name for i in out.indices)), *others]
        seen = {i for _, ix in factors for i in ix}
        lost = [i for i in idx if i not in seen]
        if lost:
            raise NotImplementedError(
                f"autograd w.r.t. {occ}: index {lost[0]} appears in no other factor nor the output "
                "(the gradient would be a broadcast); not implemented")
        rename = {name: f"o{m}" for m, name in enumerate(idx)}
        summed = sorted(seen - set(idx))
        # the least normal form over all namings of the summed indices identifies equal terms
        best = None
        for perm in itertools.permutations(range(len(summed))) if len(summed) <= 6 else [range(len(summed))]:
            trial = {**rename, **{s: f"s{p}" for s, p in zip(summed, perm, strict=True)}}
            form = _normal_form(factors, trial, groups)
            if best is None or form < best:
                best = form
        entry = found.setdefault(best, [0])
        entry[0] += 1
    terms = []
    formats = dict(program.formats)
    ndim = next(len(a.indices) for a in accs if a.tensor == target)
    lhs = f"{result}[{','.join(f'o{m}' for m in range(ndim))}]"
    for form, (count,) in found.items():
        factors = tuple(_parse_factor(f) for f in form.split("*"))
        used = sorted({t for t, _ in factors} - {grad})
        terms.append(DerivativeTerm(
            target=target,
            expression=f"{lhs} += {form}",
            weight=const * count,
            symmetric={t: groups[t] for t in used if t in groups},
            # a symmetric operand declared dense stays dense (its default would be sparse)
            formats={t: formats[t] for t in used if t in formats and formats[t].sparse or t in groups},
            factors=factors,
        ))
    return terms


def _parse_factor(text: str) -> tuple[str, tuple[str, ...]]:
    """`T[a,b]` -> ("T", ("a", "b")); `T[]` -> ("T", ())."""
    tensor, rest = text.split("[", 1)
    inner = rest.rstrip("]")
    return tensor, tuple(inner.split(",")) if inner else ()


def permutations_of(groups: tuple[tuple[int, ...], ...], ndim: int) -> list[tuple[int, ...]]:
    """Every mode permutation within the groups (identity first): `perm[m]` is the source mode."""
    per_group = [list(itertools.permutations(g)) for g in groups]
    out = []
    for combo in itertools.product(*per_group):
        perm = list(range(ndim))
        for group, image in zip(groups, combo, strict=True):
            for dst, src in zip(group, image, strict=True):
                perm[dst] = src
        out.append(tuple(perm))
    assert len(out) == math.prod(math.factorial(len(g)) for g in groups)
    return out
