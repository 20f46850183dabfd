"""Normal form of right-hand sides, so that equal updates compare equal structurally.

- the indices of a symmetric access are sorted within each symmetric group;
- nested applications of an associative operator are flattened;
- operands of commutative operators are sorted by a structural key.
"""

from __future__ import annotations

from collections.abc import Callable

from .. import algebra
from ..ir.einsum import Access, Call, Expr, Index, Literal, Program, sort_key

IndexOrder = Callable[[Index], tuple]


def by_name(index: Index) -> tuple:
    return (index.name,)


def normalize(expr: Expr, program: Program, order: IndexOrder = by_name) -> Expr:
    match expr:
        # A[j,i] with A symmetric in (0,1) and i before j => A[i,j]
        case Access(tensor=tensor, indices=indices):
            groups = program.groups_of(tensor)
            if not groups:
                return expr
            result = list(indices)
            for group in groups:
                for mode, index in zip(group, sorted((indices[m] for m in group), key=order), strict=True):
                    result[mode] = index
            return Access(tensor, tuple(result))
        case Literal():
            return expr
        # op(a, op(b, c)) => op(a, b, c) when op is associative; sort when commutative
        case Call(op=op, args=args):
            info = algebra.operator(op)
            flat: list[Expr] = []
            for arg in (normalize(a, program, order) for a in args):
                if info.associative and isinstance(arg, Call) and arg.op == op:
                    flat.extend(arg.args)
                else:
                    flat.append(arg)
            if info.commutative:
                flat.sort(key=sort_key)
            return Call(op, tuple(flat))
    raise TypeError(f"not an einsum expression: {expr!r}")
