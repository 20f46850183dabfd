"""Operator facts: the one table every pass, emitter and the parser consult instead of testing
`op == "*"`.

OPERATORS: each operator's laws (identity, annihilator, idempotence), its numpy ufunc, its
collective and atomic, and how each backend spells it (Numba, Triton, torch). DOMAINS: the
values a kernel may declare (`compile(..., values=)`). SEMIRING_ROWS: each reduction symbol
with the operator that combines a term's factors, over some values: (+, *), (min, +), (max, +)
over the reals, (max, *) over non-negative values, `|=` as (max, *) on booleans. The rows are
checked when the table loads (the reduction's identity must annihilate the combining
operator), and a statement is checked against its row when compiled (ir/einsum.check_semiring).
A new reduction is a row here (and an operator, if it needs one).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Operator:
    name: str  # IR name ("add", "mul", "min", "max")
    symbol: str  # how the printer writes it
    identity: float
    annihilator: float | None  # x op annihilator == annihilator (None: there is none)
    commutative: bool
    associative: bool
    idempotent: bool  # x op x == x: multiplicities are dropped, not multiplied
    numpy: np.ufunc
    infix: bool  # printed as `a + b` rather than `min(a, b)`
    # The torch.distributed.ReduceOp (by name) that combines partial results under this operator:
    # all_reduce / reduce_scatter of the outputs of shards (systec_gpu/distributed.py).
    collective: str
    # The atomic read-modify-write that applies this reduction to memory ("add", "min", "max"),
    # None where hardware has none (a product of updates is not a reduction here).
    atomic: str | None = None
    # -- spellings: how each backend writes this operator (emitters ask here, never `op == "min"`)
    # Numba: the function of a non-infix operator (infix ones are written with `symbol`).
    numba: str | None = None
    # Triton: two values combined ({a}, {b}); the function that reduces a tile along an axis
    # (`f(value, axis=k, keep_dims=True)`, or `f(value)` for all of it), "" where the kernel
    # reduces with `tl.reduce` and a jit helper spelled by `triton_combine` (Triton's own
    # tl.min/tl.max combine with tl.minimum's default, which drops nan); and the operand of
    # this reduction's atomic ({value}): see `_NAN_STAYS`.
    triton_combine: str = ""
    triton_reduce: str = ""
    triton_atomic_operand: str = "{value}"
    # torch: the function reducing a dimension (`torch.<f>(x, dim=0)`) and the one combining
    # two tensors elementwise (`torch.<f>(a, b)`): the op path, the oracles, the collectives.
    torch_reduce: str = ""
    torch_combine: str = ""

    def numba_call(self, a: str, b: str) -> str:
        """Numba source combining two values under this operator."""
        return f"{a} {self.symbol} {b}" if self.infix else f"{self.numba}({a}, {b})"

    def triton_call(self, a: str, b: str) -> str:
        """Triton source combining two values under this operator."""
        return self.triton_combine.format(a=a, b=b)

    @property
    def relaxed_atomics(self) -> bool:
        """Atomic updates of this reduction may land in any order (it is commutative and
        associative), so they need no memory fence while nothing reads the output before the
        kernel ends: relaxed semantics (fire-and-forget RED on NVIDIA GPUs)."""
        return self.atomic is not None and self.commutative and self.associative

    @property
    def atomic_semantics(self) -> str:
        """The memory semantics of this reduction's atomics in a kernel that does not read its
        output: "relaxed" when the order cannot matter, else "acq_rel"."""
        return "relaxed" if self.relaxed_atomics else "acq_rel"


# nan propagates through min and max as in numpy (np.minimum, the oracle's). Triton's float
# atomic_min/atomic_max are integer atomics on the bits: a signed min/max where the sign bit of
# the value is clear, an unsigned max/min where it is set (triton/language/semantic.py). A nan
# with the sign bit set (-nan) wins a signed min (its bits are a negative integer) and an
# unsigned max (they are above every negative float's): once in memory under atomic_min it
# stays. Likewise +nan under atomic_max. So a nan operand is given that sign before the atomic.
_NAN_STAYS = "tl.where({{value}} != {{value}}, {nan}, {{value}})"

OPERATORS: dict[str, Operator] = {
    op.name: op
    for op in (
        Operator("add", "+", 0.0, None, True, True, False, np.add, True, "SUM", atomic="add",
                 triton_combine="{a} + {b}", triton_reduce="tl.sum", torch_reduce="sum", torch_combine="add"),
        Operator("mul", "*", 1.0, 0.0, True, True, False, np.multiply, True, "PRODUCT",
                 triton_combine="{a} * {b}", torch_reduce="prod",
                 torch_combine="mul"),
        Operator("min", "min", math.inf, -math.inf, True, True, True, np.minimum, False, "MIN", atomic="min",
                 numba="np.minimum", triton_combine="tl.minimum({a}, {b}, propagate_nan=tl.PropagateNan.ALL)",
                 triton_atomic_operand=_NAN_STAYS.format(nan='float("-nan")'),
                 torch_reduce="amin", torch_combine="minimum"),
        Operator("max", "max", -math.inf, math.inf, True, True, True, np.maximum, False, "MAX", atomic="max",
                 numba="np.maximum", triton_combine="tl.maximum({a}, {b}, propagate_nan=tl.PropagateNan.ALL)",
                 triton_atomic_operand=_NAN_STAYS.format(nan='float("nan")'),
                 torch_reduce="amax", torch_combine="maximum"),
    )
}

# Binary operators of the right-hand side, by their source symbol.
INFIX: dict[str, str] = {op.symbol: op.name for op in OPERATORS.values() if op.infix}
# Operators written as functions on the right-hand side (`min(a, b)`), by their source name.
FUNCTIONS: dict[str, str] = {op.symbol: op.name for op in OPERATORS.values() if not op.infix}


@dataclass(frozen=True)
class Domain:
    """The values a kernel's operands hold (declared with `compile(..., values=name)`)."""

    name: str
    lowest: float
    highest: float
    samples: tuple[float, ...]  # finite values of the domain the semiring laws are checked on
    members: tuple[float, ...] = ()  # a finite domain's values (booleans: 0 and 1); () for an interval

    def contains(self, other: Domain) -> bool:
        if other.members:
            return all(self.lowest <= m <= self.highest and (not self.members or m in self.members)
                       for m in other.members)
        return not self.members and self.lowest <= other.lowest and other.highest <= self.highest

    def count_outside(self, values) -> int:
        """How many of `values` (numpy, torch or CuPy) lie outside the domain (in an interval,
        nan lies inside: it propagates whatever the domain)."""
        if self.members:
            outside = values == values  # every element, then those equal to no member dropped
            for member in self.members:
                outside = outside & (values != member)
        else:
            outside = (values < self.lowest) | (values > self.highest)
        return int(outside.sum())


DOMAINS: dict[str, Domain] = {
    d.name: d
    for d in (
        Domain("real", -math.inf, math.inf, (-2.5, -1.0, 0.0, 0.5, 3.0)),
        Domain("nonnegative", 0.0, math.inf, (0.0, 0.5, 1.0, 3.0)),
        Domain("boolean", 0.0, 1.0, (0.0, 1.0), members=(0.0, 1.0)),
    )
}

# The reductions: source symbol, reduction, combining operator (the one that binds a sparse
# operand into its term, so that its unstored entries, the reduction's identity over the
# values, annihilate the term and can be skipped), and the values it holds over. A statement's
# semiring is the row of its symbol whose values contain the declared ones, preferring the
# row whose combining operator is the right-hand side's and then the narrowest values
# (`semiring`): `y[i] max= A[i,j] * x[j]` over non-negative values is (max, *).
SEMIRING_ROWS: tuple[tuple[str, str, str, str], ...] = (
    ("+=", "add", "mul", "real"),
    ("min=", "min", "add", "real"),
    ("max=", "max", "add", "real"),
    ("max=", "max", "mul", "nonnegative"),  # max-times (Viterbi): unstored entries are 0
    ("|=", "max", "mul", "boolean"),  # (or, and) on 0/1 values: reachability
)


class SemiringError(ValueError):
    """A reduction and an operator that do not form a semiring over the declared values."""


@dataclass(frozen=True)
class Semiring:
    symbol: str  # as written in the source: "+=", "max=", ...
    reduce: Operator  # its identity is the one over `domain`: the value of an unstored entry
    combine: Operator
    domain: Domain

    @property
    def zero(self) -> float:
        return self.reduce.identity

    def __str__(self) -> str:
        return f"({self.reduce.symbol}, {self.combine.symbol}) over {self.domain.name} values"

    def annihilates(self, op: Operator) -> bool:
        """This semiring's zero annihilates `op` over its values (`zero op x == zero`): a call of
        `op` with an unstored sparse argument is the zero itself, whatever the other arguments
        hold (the `0 * inf` and `inf + -inf` of floating point are not what the sparse operand
        means)."""
        zero = self.zero
        with np.errstate(invalid="ignore"):
            return all(op.numpy(zero, x) == zero and op.numpy(x, zero) == zero for x in self.domain.samples)

    def neutral_in(self, op: Operator) -> bool:
        """This semiring's zero is `op`'s identity over its values (`zero op x == x`): reading an
        unstored entry as the zero is exact under `op`."""
        zero = self.zero
        with np.errstate(invalid="ignore"):
            return all(op.numpy(zero, x) == x and op.numpy(x, zero) == x for x in self.domain.samples)

    def binding_error(self, op: Operator) -> str | None:
        """Why a sparse operand bound into its term by `op` cannot hold this semiring's zero in
        its unstored entries (the zero must annihilate `op`, so that skipping the entry and
        reading it agree, or be `op`'s identity, a neutral value), or None when it can."""
        zero, samples = self.zero, self.domain.samples
        if self.annihilates(op) or self.neutral_in(op):
            return None
        with np.errstate(invalid="ignore"):
            x = next(x for x in samples if op.numpy(zero, x) != zero)
            shown = f"{zero!r} {op.symbol} {x!r}" if op.infix else f"{op.symbol}({zero!r}, {x!r})"
            got = float(op.numpy(zero, x))
        return (f"its unstored entries hold {zero!r}, the identity of {self.reduce.symbol} over {self.domain.name} "
                f"values, which does not annihilate {op.symbol} ({shown} = {got!r}): ({self.reduce.symbol}, "
                f"{op.symbol}) is not a semiring over {self.domain.name} values")


def _over(op: Operator, domain: Domain) -> Operator:
    """`op` on `domain`: its identity there (the real one, clamped into the domain, checked on
    the samples), under a name of its own where that identity differs (max over non-negative
    values starts from 0, not -inf)."""
    identity = min(max(op.identity, domain.lowest), domain.highest)
    if not all(op.numpy(identity, x) == x for x in domain.samples):
        raise SemiringError(f"{op.name} has no identity over {domain.name} values")
    return op if identity == op.identity else dataclasses.replace(op, name=f"{op.name}_{domain.name}",
                                                                  identity=identity)


def _semirings() -> dict[tuple[str, str], Semiring]:
    """The rows, checked: each reduction's identity must annihilate its combining operator."""
    rings = {}
    for symbol, reduce, combine, values in SEMIRING_ROWS:
        domain = DOMAINS[values]
        ring = Semiring(symbol, _over(OPERATORS[reduce], domain), OPERATORS[combine], domain)
        reason = ring.binding_error(ring.combine)
        if reason is not None:
            raise SemiringError(f"algebra.SEMIRING_ROWS: {symbol} {ring}: {reason}")
        rings[symbol, values] = ring
        OPERATORS.setdefault(ring.reduce.name, ring.reduce)
    return rings


SEMIRINGS: dict[tuple[str, str], Semiring] = _semirings()
# The source symbols of the reductions (the parser's tokens), each with its first row.
REDUCTIONS: dict[str, Semiring] = {}
for _symbol, *_, _values in SEMIRING_ROWS:
    REDUCTIONS.setdefault(_symbol, SEMIRINGS[_symbol, _values])


def operator(name: str) -> Operator:
    try:
        return OPERATORS[name]
    except KeyError:
        raise ValueError(f"unknown operator {name!r}; known: {sorted(OPERATORS)}") from None


@functools.lru_cache(maxsize=64)
def semiring(symbol: str, values: str = "real", op: str | None = None) -> Semiring:
    """The semiring of an assignment symbol such as `min=` over the declared values, for a
    right-hand side whose operator is `op` (None: an access or a literal): the row of the symbol
    whose values contain the declared ones, one combining with `op` first, then the narrowest.
    The row's values are narrowed to the declared ones (checked at call time)."""
    if symbol not in REDUCTIONS:
        raise ValueError(f"unknown reduction {symbol!r}; known: {', '.join(REDUCTIONS)}")
    if values not in DOMAINS:
        raise ValueError(f"values={values!r}: unknown; known: {', '.join(DOMAINS)}")
    declared = DOMAINS[values]
    rows = [ring for (s, _), ring in SEMIRINGS.items() if s == symbol and ring.domain.contains(declared)]
    if not rows:
        over = ", ".join(f"{ring} (declare values={ring.domain.name!r})" for (s, _), ring in SEMIRINGS.items()
                         if s == symbol)
        raise SemiringError(f"{symbol} over {values} values: no such semiring; {symbol} is {over}")
    # the narrowest values: those that contain the fewest other candidates' values
    rows.sort(key=lambda ring: (ring.combine.name != op, sum(ring.domain.contains(r.domain) for r in rows)))
    return dataclasses.replace(rows[0], domain=declared)


def semirings_hint(symbol: str, op: str) -> str:
    """Where the table makes (`symbol`, `op`) a semiring: the values to declare, or ""."""
    rows = [ring for (s, _), ring in SEMIRINGS.items() if s == symbol and ring.combine.name == op]
    return "; ".join(f"declare values={ring.domain.name!r} (checked at call time): {ring} is a semiring whose "
                     f"zero is {ring.zero!r}" for ring in rows)


def reduction_for(symbol: str, values: str | None = None) -> tuple[Operator, Operator]:
    """(reduction, combining operator) of an assignment symbol such as `min=` over `values`
    (None: its first row, e.g. over the reals)."""
    if values is None and symbol in REDUCTIONS:
        return REDUCTIONS[symbol].reduce, REDUCTIONS[symbol].combine
    ring = semiring(symbol, values or "real")
    return ring.reduce, ring.combine


def apply(op: str, values):
    """`op` folded left over `values` (numpy scalars or arrays): the interpreters' one evaluator."""
    ufunc = operator(op).numpy
    result = values[0]
    for value in values[1:]:
        result = ufunc(result, value)
    return result


def fill_value(reduce: Operator) -> float:
    """Value of an entry a sparse operand does not store: the reduction's identity.

    It is the annihilator of the semiring's combining operator (0 for *, +inf for + under min),
    so iterating over stored entries only is exact.
    """
    return reduce.identity
