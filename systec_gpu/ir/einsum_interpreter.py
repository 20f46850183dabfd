"""Numpy interpreter of the einsum level: the oracle every kernel is tested against.

Evaluates the right-hand side over the full dense iteration space by broadcasting, then
reduces over the indices absent from the output. Meant for small tensors.
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
    must already hold the reduction's identity).

    `stored` (access -> boolean array of its tensor's stored entries): the points where such an
    access reads an entry that is not stored contribute nothing, whatever the other factors hold
    (a kernel that iterates the stored entries of that access never visits them: with an inf or
    a nan elsewhere, 0 * inf would otherwise make a nan)."""
    order = indices_of(einsum)
    sizes = _sizes(einsum, arrays)
    reduce = einsum.semiring.reduce

    def evaluate(expr):
        match expr:
            case Access():
                return _broadcast(expr, np.asarray(arrays[expr.tensor], dtype=dtype), order)
            case Literal(value=v):
                return np.asarray(v, dtype=dtype)
            case Call(op=op, args=args):
                return algebra.apply(op, [evaluate(a) for a in args])
        raise TypeError(f"not an einsum expression: {expr!r}")

    full_shape = tuple(sizes[i] for i in order)
    values = np.broadcast_to(evaluate(einsum.rhs), full_shape)
    for access, mask in (stored or {}).items():
        visited = np.broadcast_to(_broadcast(access, np.asarray(mask, dtype=bool), order), full_shape)
        values = np.where(visited, values, reduce.identity)
    out_axes = [order.index(i) for i in einsum.output.indices]
    reduced_axes = tuple(a for a in range(len(order)) if a not in out_axes)
    result = reduce.numpy.reduce(values, axis=reduced_axes, initial=reduce.identity) if reduced_axes \
        else np.array(values)
    kept = [a for a in range(len(order)) if a not in reduced_axes]
    return np.array(np.transpose(result, [kept.index(a) for a in out_axes]), order="C")  # keeps 0-d as 0-d
