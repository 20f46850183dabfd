"""Numpy interpreter of the einsum level: the oracle every kernel is tested against.

Evaluates the right-hand side over the full dense iteration space by broadcasting, then
reduces over the indices absent from the output. Meant for small tensors. With `stored=` it
gives sparse semantics (an absent entry annihilates the calls the semiring's zero annihilates).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .. import algebra
from .einsum import Access, Call, Einsum, Index, Literal, accesses, indices_of


def _sizes(einsum: Einsum, arrays: dict[str, np.ndarray]) -> dict[Index, int]:
    sizes: dict[Index, int] = {}
    for access in accesses(einsum.rhs):
        shape = np.shape(arrays[access.tensor])
        if len(shape) != len(access.indices):
            raise ValueError(f"{access.tensor} has {len(shape)} modes, {access} uses {len(access.indices)}")
        for index, size in zip(access.indices, shape, strict=True):
            if sizes.setdefault(index, size) != size:
                raise ValueError(f"index {index}: sizes {sizes[index]} and {size} disagree")
    return sizes


def _broadcast(access: Access, array: np.ndarray, order: tuple[Index, ...]) -> np.ndarray:
    # Take repeated indices as diagonals, then place each mode on its axis of `order`.
    letters = {index: chr(ord("a") + n) for n, index in enumerate(order)}
    source = "".join(letters[i] for i in access.indices)
    present = [i for i in order if i in access.indices]
    view = np.einsum(f"{source}->{''.join(letters[i] for i in present)}", array)
    shape = [array.shape[access.indices.index(i)] if i in access.indices else 1 for i in order]
    return view.reshape(shape)


def interpret_einsum(einsum: Einsum, arrays: dict[str, np.ndarray], dtype=np.float64,
                     stored: Mapping[Access, np.ndarray] | None = None) -> np.ndarray:
    """Dense result of `einsum` on dense `arrays` (entries a sparse operand does not store
    must already hold the reduction's identity, the semiring's zero).

    `stored` (access -> boolean array of its tensor's stored entries): sparse semantics, as a
    kernel that iterates or guards the stored entries of that access computes them. A call whose
    operator the zero annihilates (a product under `+=`) is the zero wherever one of its
    arguments is absent, whatever the others hold (an inf or a nan elsewhere would otherwise make
    `0 * inf` a nan); a call whose operator has the zero as identity (a sum under `+=`) is absent
    where all its arguments are; under any other operator the value is dense. Points where the
    whole right-hand side is absent contribute nothing."""
    order = indices_of(einsum)
    sizes = _sizes(einsum, arrays)
    ring = einsum.semiring
    reduce = ring.reduce
    full_shape = tuple(sizes[i] for i in order)
    everywhere = np.ones((1,) * len(order), dtype=bool)

    def evaluate(expr) -> tuple[np.ndarray, np.ndarray]:
        """(values, where present) of `expr` over the iteration space (broadcastable)."""
        match expr:
            case Access():
                values = _broadcast(expr, np.asarray(arrays[expr.tensor], dtype=dtype), order)
                if stored is None or expr not in stored:
                    return values, everywhere
                return values, _broadcast(expr, np.asarray(stored[expr], dtype=bool), order)
            case Literal(value=v):
                return np.asarray(v, dtype=dtype), everywhere
            case Call(op=op, args=args):
                parts = [evaluate(a) for a in args]
                values = algebra.apply(op, [v for v, _ in parts])
                info = algebra.operator(op)
                if ring.annihilates(info):
                    present = np.logical_and.reduce(np.broadcast_arrays(*(p for _, p in parts)))
                    return np.where(present, values, ring.zero), present
                if ring.neutral_in(info):
                    return values, np.logical_or.reduce(np.broadcast_arrays(*(p for _, p in parts)))
                return values, everywhere
        raise TypeError(f"not an einsum expression: {expr!r}")

    values, present = evaluate(einsum.rhs)
    values = np.where(np.broadcast_to(present, full_shape), np.broadcast_to(values, full_shape), reduce.identity)
    out_axes = [order.index(i) for i in einsum.output.indices]
    reduced_axes = tuple(a for a in range(len(order)) if a not in out_axes)
    result = reduce.numpy.reduce(values, axis=reduced_axes, initial=reduce.identity) if reduced_axes \
        else np.array(values)
    kept = [a for a in range(len(order)) if a not in reduced_axes]
    return np.array(np.transpose(result, [kept.index(a) for a in out_axes]), order="C")  # keeps 0-d as 0-d
