"""Step 7 of the algorithm: read each operand once per point, share partial products.

- every distinct read becomes one let-binding, hoisted to the outermost loop where its
  indices are bound (loop-invariant code motion), and so are the class row and the membership
  of a guarded sparse read (`Stored`);
- when the updates are leave-one-out products of m >= 3 factors (MTTKRP), prefix and suffix
  products give all m of them with 3(m-2) multiplications instead of m(m-2).
"""

from __future__ import annotations

import dataclasses
from collections import Counter

from ..ir.einsum import Access, Call, Index
from ..ir.loop import ClassOf, DriverValue, Factor, Let, LoopProgram, Ref, Select, Stored, Update
from .loop_nest import Level, renest, unnest


def _read_name(read) -> str:
    if isinstance(read, DriverValue):
        return f"{read.tensor}_val"
    if isinstance(read, Stored):
        return f"{read.access.tensor}_stored_{'_'.join(i.name for i in read.access.indices)}"
    return f"{read.tensor}_{'_'.join(i.name for i in read.indices)}" if read.indices else read.tensor


def _bind_reads(expr, lets: dict):
    match expr:
        case Access() | DriverValue() | Stored():
            if expr not in lets:
                lets[expr] = _read_name(expr)
            return Ref(lets[expr])
        case Call(op=op, args=args):
            return Call(op, tuple(_bind_reads(a, lets) for a in args))
        case Select(when=when, value=value, otherwise=otherwise):
            return Select(tuple(_bind_reads(c, lets) for c in when), _bind_reads(value, lets), otherwise)
    return expr


def _factors(value) -> list:
    return list(value.args) if isinstance(value, Call) and value.op == "mul" else [value]


def _product(factors: list):
    return factors[0] if len(factors) == 1 else Call("mul", tuple(factors))


def _leave_one_out(updates: list[Update]) -> tuple[list[Let], list[Update]]:
    """Prefix/suffix products when each update misses exactly one of m >= 3 shared factors."""
    if len(updates) < 3:
        return [], updates
    factor_lists = [Counter(_factors(u.value)) for u in updates]
    if not all(isinstance(f, Ref) for counts in factor_lists for f in counts):
        return [], updates
    common = factor_lists[0].copy()
    for counts in factor_lists[1:]:
        common &= counts
    residuals = [counts - common for counts in factor_lists]
    union = Counter()
    for r in residuals:
        union |= r
    if sum(union.values()) != len(updates) or any(union[k] != 1 for k in union):
        return [], updates
    ordered = sorted(union, key=lambda ref: ref.name)
    missing = []
    for r in residuals:
        gone = [k for k in ordered if r[k] == 0]
        if len(gone) != 1 or sum(r.values()) != len(ordered) - 1:
            return [], updates
        missing.append(gone[0])
    if len(set(missing)) != len(missing):
        return [], updates
    m = len(ordered)
    lets: list[Let] = []
    prefix = [None, ordered[0]]  # prefix[t] = product of ordered[:t]
    for t in range(2, m):
        lets.append(Let(f"prefix{t}", Call("mul", (prefix[t - 1], ordered[t - 1]))))
        prefix.append(Ref(f"prefix{t}"))
    suffix = {m - 1: ordered[m - 1]}  # suffix[t] = product of ordered[t:]
    for t in range(m - 2, 0, -1):
        lets.append(Let(f"suffix{t}", Call("mul", (ordered[t], suffix[t + 1]))))
        suffix[t] = Ref(f"suffix{t}")
    common_factors = list(common.elements())
    rewritten = []
    for update, gone in zip(updates, missing, strict=True):
        t = ordered.index(gone)
        parts = [p for p in (prefix[t] if t > 0 else None, suffix.get(t + 1)) if p is not None]
        rewritten.append(dataclasses.replace(update, value=_product(common_factors + parts)))
    return lets, rewritten


def _dependencies(expr, names_to_level: dict[str, int], levels: list[Level]) -> int:
    """The outermost level at which every index and name used by `expr` is available."""
    level = 0
    match expr:
        case Access(indices=idx) | Stored(access=Access(indices=idx)):
            level = max((_binding_level(i, levels) for i in idx), default=0)
        case DriverValue(tensor=t):
            level = next(n for n, lv in enumerate(levels) if lv.header is not None
                         and getattr(lv.header, "tensor", None) == t)
        case Ref(name=name):
            level = names_to_level.get(name, 0)
        case ClassOf(chains=chains):
            level = max((_binding_level(i, levels) for c in chains for i in c), default=0)
        case Factor(row=row):
            level = _dependencies(row, names_to_level, levels)
        case Call(args=args):
            level = max((_dependencies(a, names_to_level, levels) for a in args), default=0)
        case Select(when=when, value=value):
            level = max(_dependencies(a, names_to_level, levels) for a in (*when, value))
    return level


def _binding_level(index: Index, levels: list[Level]) -> int:
    return next(n for n, level in enumerate(levels) if index in level.bound)


def read_once(program: LoopProgram) -> LoopProgram:
    levels = unnest(program.body)
    innermost = levels[-1]
    lets: dict = {}
    prelude = [s for s in innermost.stmts if isinstance(s, Let)]
    updates = [
        dataclasses.replace(u, value=_bind_reads(u.value, lets))
        for u in innermost.stmts
        if isinstance(u, Update)
    ]
    updates = [dataclasses.replace(u, when=tuple(_bind_reads(c, lets) for c in u.when)) if u.when else u
               for u in updates]
    shared, updates = _leave_one_out(updates)
    # Table lookups depend on the class only: bind them so they hoist with it.
    factors = []
    for n, update in enumerate(updates):
        if isinstance(update.factor, Factor):
            factors.append(Let(f"{update.factor.table}_{update.factor.column}", update.factor))
            updates[n] = dataclasses.replace(update, factor=Ref(factors[-1].name))
    bindings = prelude + factors + [Let(name, read) for read, name in lets.items()] + shared

    # Hoist every binding to the outermost level where what it uses is available.
    placed: list[list] = [list(level.stmts) for level in levels[:-1]] + [[]]
    names_to_level: dict[str, int] = {}
    for let in bindings:
        at = _dependencies(let.value, names_to_level, levels)
        names_to_level[let.name] = at
        placed[at].append(let)
    placed[-1].extend(updates)
    new_levels = [dataclasses.replace(lv, stmts=tuple(p)) for lv, p in zip(levels, placed, strict=True)]
    return dataclasses.replace(program, body=renest(new_levels))
