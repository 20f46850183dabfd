"""Python interpreter of the loop level (backend "reference").

Executes the symmetrized program point by point, so the symmetry passes are checked
independently of any code generator. Slow by design: for small tensors.
"""

from __future__ import annotations

import numpy as np

from .. import algebra
from .einsum import Access, Call, Literal
from .loop import (
    Block,
    ClassOf,
    DenseLoop,
    DriverValue,
    Factor,
    Guard,
    Let,
    LoopProgram,
    Ref,
    Select,
    SparseLoop,
    Stored,
    Update,
)


def interpret_loops(program: LoopProgram, args) -> np.ndarray:
    """Run `program` on `args` (a runtime.KernelArgs) and return its output array."""
    out = args.out
    env: dict = {}

    def value(expr):
        match expr:
            case Access(tensor=t, indices=idx):
                if not idx:  # a scalar operand is bound as a 1-element array
                    return args.dense[t].reshape(-1)[0]
                return args.dense[t][tuple(env[i] for i in idx)]
            case Stored(access=Access(tensor=t, indices=idx)):
                return args.stored[t][tuple(env[i] for i in idx)] if idx else args.stored[t].reshape(-1)[0]
            case DriverValue():
                return env["<driver>"]
            case Ref(name=name):
                return env[name]
            case Literal(value=v):
                return v
            case ClassOf(chains=chains):
                row, bit = 0, 0
                for chain in chains:
                    for a, b in zip(chain, chain[1:], strict=False):
                        row |= int(env[a] == env[b]) << bit
                        bit += 1
                return row
            case Factor(table=t, row=row, column=column):
                return int(args.tables[t][value(row), column])
            case Call(op=op, args=operands):
                return algebra.apply(op, [value(a) for a in operands])
            case Select(when=when, value=chosen, otherwise=otherwise):
                # an unstored sparse factor: the term is the zero (its other factors not evaluated)
                return value(chosen) if all(value(c) for c in when) else value(otherwise)
        raise TypeError(f"not a loop expression: {expr!r}")

    def run(stmt) -> None:
        match stmt:
            case Block(body=body):
                for s in body:
                    run(s)
            case Let(name=name, value=v):
                env[name] = value(v)
            case Update(output=o, reduce=reduce, value=v, factor=factor, when=when):
                if not all(value(c) for c in when):
                    return  # an unstored sparse factor: the term contributes nothing
                count = 1 if factor is None else value(factor)
                if count == 0:
                    return  # a zero factor: the update does not happen (0 * inf is not 0)
                where = tuple(env[i] for i in o.indices)
                info = algebra.operator(reduce)
                contribution = value(v) if info.idempotent else count * value(v)
                out[where] = info.numpy(out[where], contribution)
            case SparseLoop(indices=idx, format=fmt, body=body):
                driver = args.driver
                for coordinates, p in fmt.visit(driver):  # the walk of the driver's format
                    for index, coordinate in zip(idx, coordinates, strict=False):
                        env[index] = coordinate
                    env["<driver>"] = driver.values[p]
                    run(body)
            case DenseLoop(index=i, extent=extent, lower=lo, upper=hi, body=body):
                start = env[lo] if lo is not None else 0
                stop = env[hi] if hi is not None else args.extent(extent) - 1
                for v in range(start, stop + 1):
                    env[i] = v
                    run(body)
            case Guard(lhs=a, rhs=b, body=body):
                if env[a] <= env[b]:
                    run(body)
            case _:
                raise TypeError(f"not a loop statement: {stmt!r}")

    run(program.body)
    return out
