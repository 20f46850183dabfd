"""Test data: random sparse symmetric tensors that contain every diagonal class."""

from __future__ import annotations

import itertools

import numpy as np

from systec_gpu import algebra
from systec_gpu.dense_symmetry import mirror_canonical
from systec_gpu.storage import SparseTensor, SymmetricTensor


def class_points(order: int, size: int, rng: np.random.Generator, per_class: int = 2) -> np.ndarray:
    """Canonical coordinates [order, m] with `per_class` points of every equality pattern."""
    points = []
    for equal in itertools.product((False, True), repeat=order - 1):
        ranks = np.concatenate([[0], np.cumsum([0 if e else 1 for e in equal])])
        distinct = int(ranks[-1]) + 1
        if distinct > size:
            continue
        for _ in range(per_class):
            values = np.sort(rng.choice(size, distinct, replace=False))
            points.append(values[ranks])
    return np.array(points, dtype=np.int64).T.reshape(order, -1)


def symmetric_sparse(order: int, size: int, rng: np.random.Generator, per_class: int = 2,
                     dtype=np.float64) -> SymmetricTensor:
    coords = class_points(order, size, rng, per_class)
    coords = np.unique(coords, axis=1)
    values = rng.uniform(0.5, 2.0, coords.shape[1]).astype(dtype)
    return SymmetricTensor.from_canonical(coords, values, (size,) * order, "full")


def random_symmetric_dense(shape, groups, rng: np.random.Generator, density: float = 0.5) -> np.ndarray:
    array = rng.uniform(0.5, 2.0, shape)
    array[rng.random(shape) > density] = 0.0
    return mirror_canonical(array, groups)


def dense_for_oracle(value, reduce_symbol: str) -> np.ndarray:
    """Dense array of an input; entries a sparse input does not store hold the reduction identity."""
    reduce, _ = algebra.reduction_for(reduce_symbol)
    if isinstance(value, SparseTensor):
        dense = np.full(value.shape, algebra.fill_value(reduce))
        stored = value.expanded() if isinstance(value, SymmetricTensor) else value
        dense[tuple(np.asarray(stored.indices))] = np.asarray(stored.values)
        return dense
    return np.asarray(value, dtype=np.float64)
