"""Step 7: lower the symmetrized einsum to loops (the schedule: driver and loop order).

The outer loop visits the stored nonzeros of one sparse operand (the driver) when every update
has the driver's value as a factor of its combining operator (then skipping the entries it does
not store is exact); the remaining indices become dense loops whose bounds keep each permutable
set in canonical order. Schedules that cannot be applied are refused with a reason.

A driver access that repeats an index (`A[i,i]`, `A[i,j,i]`) binds one coordinate per mode: the
repeat binds a copy of the index (`i_1`: the index at mode 1) and a pair of guards
`i <= i_1 <= i` keeps only the stored entries whose coordinates agree, on every backend.

A sparse operand that is a factor of an update but not the driver (a second access of the
driver's tensor, `A[i,j]*A[j,i]`, or a second sparse tensor) is read densely, where its unstored
entries hold the fill value; the update is guarded by its membership (`Stored`): an unstored
factor makes the term contribute nothing, whatever the other factors hold (no `0 * inf`).
Where such an operand is a factor of a call that is only part of the update (a product under a
sum, `A[i,j]*x[j] + B[i,j]`), that call becomes the semiring's zero where the factor is
unstored (`Select`); which calls those are, the algebra table says (the zero annihilates their
operator). `membership_guards` decides both.
"""

from __future__ import annotations

from .. import algebra
from ..formats.choice import loop_format
from ..ir.einsum import Access, Call, Index, Literal, accesses, format_einsum, indices_of
from ..ir.loop import (
    Block,
    ClassOf,
    DenseLoop,
    DriverValue,
    Extent,
    Factor,
    Guard,
    Let,
    LoopProgram,
    Ref,
    Select,
    SparseLoop,
    Stored,
    Table,
    Update,
)
from ..ir.symmetrized import Symmetrized, describe_class
from ..ir.traverse import walk
from .class_updates import index_order
from .normalize import normalize


class ScheduleError(ValueError):
    """A schedule (loop order, driver) that cannot be applied; the message says why."""


def _top_factors(expr, combine: str) -> tuple:
    return expr.args if isinstance(expr, Call) and expr.op == combine else (expr,)


def _with_driver(expr, driver_key: Access, sym: Symmetrized, order):
    """Replace reads equal (up to symmetry) to the driver access by the driver's value."""
    match expr:
        case Access():
            if normalize(expr, sym.program, order) == driver_key:
                return DriverValue(expr.tensor)
            return expr
        case Call(op=op, args=args):
            return Call(op, tuple(_with_driver(a, driver_key, sym, order) for a in args))
    return expr


def _factors(expr, combine: str) -> list:
    """The factors of `expr` under the combining operator, nested products flattened."""
    if isinstance(expr, Call) and expr.op == combine:
        return [f for a in expr.args for f in _factors(a, combine)]
    return [expr]


def membership_guards(value, program, ring: algebra.Semiring) -> tuple[object, tuple[Stored, ...]]:
    """(value, guards) of an update whose value (driver reads already replaced) is `value`: the
    one place that decides which sparse reads (read densely, holding the zero where unstored)
    need their membership tested, and where.

    A call whose operator the semiring's zero annihilates (a product under `+=`, a sum under
    `min=`) is that zero wherever one of its sparse factors is unstored: for the call that is the
    whole value, the update is guarded (`when`: it contributes nothing); a call inside it (a term
    of a sum, an argument of `max`) becomes `Select(membership, call, zero)`. A sparse read under
    an operator whose identity is the zero (a term of a sum under `+=`) needs nothing: reading the
    zero there is exact."""

    def sparse_factors(call) -> tuple[Stored, ...]:
        return tuple(dict.fromkeys(Stored(f) for f in _factors(call, call.op)
                                   if isinstance(f, Access) and program.format_of(f.tensor).sparse))

    def annihilated(expr) -> bool:
        return isinstance(expr, Call) and ring.annihilates(algebra.operator(expr.op))

    def chain(call):
        """`call` with the calls below its (flattened) factors guarded."""
        return Call(call.op, tuple(chain(a) if isinstance(a, Call) and a.op == call.op else term(a)
                                   for a in call.args))

    def term(expr):
        if not isinstance(expr, Call):
            return expr
        if annihilated(expr):
            guards = sparse_factors(expr)
            return Select(guards, chain(expr), Literal(ring.zero)) if guards else chain(expr)
        return Call(expr.op, tuple(term(a) for a in expr.args))

    if annihilated(value):
        return chain(value), sparse_factors(value)
    if isinstance(value, Access) and program.format_of(value.tensor).sparse:
        return value, (Stored(value),)
    return term(value), ()


def _driver_is_factor(update_rhs, driver: Access, sym: Symmetrized, combine: str, order) -> bool:
    key = normalize(driver, sym.program, order)
    return any(
        isinstance(f, Access) and normalize(f, sym.program, order) == key
        for f in _top_factors(update_rhs, combine)
    )


def choose_driver(sym: Symmetrized) -> tuple[Access | None, list[str]]:
    """The first sparse access that is a factor of every update; notes for the ones refused."""
    program = sym.program
    combine = program.einsum.semiring.combine
    order = index_order(sym)
    notes = []
    for access in accesses(program.einsum.rhs):
        if not program.format_of(access.tensor).sparse:
            continue
        if all(_driver_is_factor(u.rhs, access, sym, combine.name, order) for u in sym.updates):
            return access, notes
        notes.append(
            f"{access.tensor} is sparse but not a factor ({combine.symbol}) of every update: read densely"
        )
    return None, notes


def _extents(sym: Symmetrized) -> dict[Index, Extent]:
    einsum = sym.program.einsum
    extents: dict[Index, Extent] = {}
    for access in (*accesses(einsum.rhs), einsum.output):
        for mode, index in enumerate(access.indices):
            extents.setdefault(index, Extent(access.tensor, mode))
    return extents


def loop_order_for(sym: Symmetrized, driver: Access | None, requested) -> tuple[Index, ...]:
    einsum = sym.program.einsum
    every = indices_of(einsum)
    bound = tuple(dict.fromkeys(driver.indices)) if driver else ()
    if requested is not None:
        order = tuple(Index(n) if isinstance(n, str) else n for n in requested)
        if sorted(order) != sorted(every):
            raise ScheduleError(
                f"loop_order {tuple(i.name for i in order)} must list each index once: "
                f"{', '.join(i.name for i in every)}"
            )
        head = order[: len(bound)]
        if set(head) != set(bound):
            raise ScheduleError(
                f"loop_order {tuple(i.name for i in order)}: {driver.tensor} is sparse and iterated "
                f"outermost, so its indices {', '.join(i.name for i in bound)} must come first"
            )
        return bound + order[len(bound):]
    rest = [i for s in sym.sets for i in s.indices if i not in bound]
    rest += [i for i in einsum.output.indices if i not in bound and i not in rest]
    rest += [i for i in every if i not in bound and i not in rest]
    return bound + tuple(rest)


def _neighbours(sym: Symmetrized, index: Index, bound: list[Index]):
    """Nearest already-bound indices before and after `index` in its canonical chain."""
    for permutable in sym.sets:
        chain = permutable.indices
        if index in chain:
            at = chain.index(index)
            lower = next((c for c in reversed(chain[:at]) if c in bound), None)
            upper = next((c for c in chain[at + 1:] if c in bound), None)
            return lower, upper
    return None, None


def _implied_by_storage(sym: Symmetrized, driver: Access, expanded: bool, a: Index, b: Index) -> bool:
    if expanded:
        return False
    for group in sym.program.groups_of(driver.tensor):
        indices = [driver.indices[m] for m in group]
        if a in indices and b in indices and indices.index(a) < indices.index(b):
            return True
    return False


def _collapse_runs(indices: tuple[Index, ...]) -> tuple[Index, ...]:
    """(i, i, j, j) -> (i, j): one index per run of equal neighbours."""
    return tuple(i for n, i in enumerate(indices) if n == 0 or indices[n - 1] != i)


def driver_binding(driver: Access, taken: set[Index]) -> tuple[tuple[Index, ...], tuple[tuple[Index, Index], ...]]:
    """The indices a sparse loop over `driver` binds (one per mode, all distinct) and the pairs
    (index, copy) that must be equal: a repeated index binds a fresh copy at each later mode."""
    bound: list[Index] = []
    equal: list[tuple[Index, Index]] = []
    used = set(taken)
    for mode, index in enumerate(driver.indices):
        if index not in bound:
            bound.append(index)
            continue
        copy, n = Index(f"{index.name}_{mode}"), 0
        while copy in used:
            n += 1
            copy = Index(f"{index.name}_{mode}_{n}")
        used.add(copy)
        bound.append(copy)
        equal.append((index, copy))
    return tuple(bound), tuple(equal)


def lower_to_loops(sym: Symmetrized, loop_order=None) -> LoopProgram:
    program = sym.program
    einsum = program.einsum
    reduce = einsum.semiring.reduce
    order = index_order(sym)
    driver, notes = choose_driver(sym)
    extents = _extents(sym)
    loops = loop_order_for(sym, driver, loop_order)

    driver_groups = program.groups_of(driver.tensor) if driver else ()
    set_tuples = {s.indices for s in sym.sets}
    # Canonical nonzeros suffice when every visited point reads the driver in sorted order:
    # each group's indices (runs of a repeated index collapsed) are one index or a permutable set.
    expanded = bool(driver_groups) and not all(
        len(runs) == 1 or runs in set_tuples
        for runs in (_collapse_runs(tuple(driver.indices[m] for m in g)) for g in driver_groups)
    )

    # Innermost block: the class row, then one update per base update.
    # One factor row for every class (e.g. SSYRK): no table, the factors are constants.
    multi_class = len(set(sym.table)) > 1
    body: list = []
    if multi_class:
        body.append(Let("cls", ClassOf(tuple(s.indices for s in sym.sets))))
    driver_key = normalize(driver, program, order) if driver else None
    for column, update in enumerate(sym.updates):
        value = _with_driver(update.rhs, driver_key, sym, order) if driver else update.rhs
        value, guards = membership_guards(value, program, einsum.semiring)
        if multi_class:
            factor = Factor("mult", Ref("cls"), column)
        else:
            count = sym.table[0][column]
            if count == 0:
                continue
            factor = None if count == 1 else Literal(float(count))
        body.append(Update(update.output, reduce.name, value, factor, guards))
    block = Block(tuple(body))

    # Dense loops, innermost first, with canonical-order bounds.
    bound: list[Index] = list(dict.fromkeys(driver.indices)) if driver else []
    dense = [i for i in loops if i not in bound]
    headers = []
    for index in dense:
        lower, upper = _neighbours(sym, index, bound)
        headers.append((index, lower, upper))
        bound.append(index)
    for index, lower, upper in reversed(headers):
        block = Block((DenseLoop(index, extents[index], lower, upper, block),))

    if driver:
        # Canonical-order constraints between two driver indices that storage does not imply.
        for a, b in reversed(sym.constraints):
            if a in driver.indices and b in driver.indices and not _implied_by_storage(
                sym, driver, expanded, a, b
            ):
                block = Block((Guard(a, b, block),))
        # A repeated index: only the stored entries whose repeated coordinates agree count.
        binding, equal = driver_binding(driver, set(indices_of(einsum)))
        for index, copy in reversed(equal):
            block = Block((Guard(index, copy, Block((Guard(copy, index, block),))),))
        fmt, note = loop_format(program.format_of(driver.tensor), driver.tensor, expanded)
        notes += [note] if note else []
        block = Block((SparseLoop(driver.tensor, binding, expanded, fmt, block),))

    # What remains an Access after the driver's reads became DriverValue is read densely.
    dense_inputs = tuple(
        dict.fromkeys(n.tensor for u in body if isinstance(u, Update) for n in walk(u.value) if isinstance(n, Access))
    )
    guarded = tuple(dict.fromkeys(
        g.access for u in body if isinstance(u, Update) for g in u.when))
    selected = tuple(dict.fromkeys(
        g.access for u in body if isinstance(u, Update) for s in walk(u.value) if isinstance(s, Select)
        for g in s.when))
    stored_inputs = tuple(dict.fromkeys(a.tensor for a in guarded + selected))
    if guarded:
        reads = ", ".join(map(str, guarded))
        notes.append(f"{reads} read densely (sparse, not the driver): a mask of the stored entries guards each "
                     "update they are a factor of, so an unstored entry contributes nothing, even beside inf or nan")
    if selected:
        reads = ", ".join(map(str, selected))
        notes.append(f"{reads} read densely (sparse, a factor of a term, not of the whole update): where one is "
                     f"unstored its term is {einsum.semiring.zero!r} (the reduction's identity), even beside inf "
                     "or nan")
    rows = sym.table if multi_class else ()
    tables = (
        (Table("mult", tuple(rows), tuple(describe_class(sym, c) for c in sym.classes)),)
        if multi_class
        else ()
    )
    return LoopProgram(
        source=format_einsum(einsum),
        output=einsum.output,
        output_shape=tuple(extents[i] for i in einsum.output.indices),
        reduce=reduce.name,
        output_groups=sym.output_groups,
        tables=tables,
        body=block,
        dense_inputs=dense_inputs,
        driver=driver.tensor if driver else None,
        sets=tuple(s.indices for s in sym.sets),
        symmetric_inputs=tuple((s.tensor, s.groups) for s in program.symmetries
                               if s.tensor != einsum.output.tensor),
        notes=sym.notes + tuple(notes),
        stored_inputs=stored_inputs,
    )
