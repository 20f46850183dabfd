"""Work statistics: iteration points a kernel visits, against the non-symmetric kernel."""

from __future__ import annotations

import math

import numpy as np

from .backends.arguments import KernelArgs
from .ir.loop import DenseLoop, Guard, LoopProgram, SparseLoop
from .passes.loop_nest import unnest


def visited_points(program: LoopProgram, args: KernelArgs) -> int:
    """Exact number of innermost iteration points (vectorized over the driver's nonzeros)."""
    headers = [level.header for level in unnest(program.body) if level.header is not None]
    env: dict = {}
    weight: np.ndarray | int = 1
    driver = args.driver
    if driver is not None:
        weight = np.ones(driver.nnz, dtype=np.int64)
    rest = []
    for header in headers:
        if isinstance(header, SparseLoop):
            for mode, index in enumerate(header.indices):
                env[index] = driver.coords[mode].astype(np.int64)
        else:
            rest.append(header)
    referenced = {b for h in rest if isinstance(h, DenseLoop) for b in (h.lower, h.upper) if b}
    referenced |= {i for h in rest if isinstance(h, Guard) for i in (h.lhs, h.rhs)}

    def count(k: int, env: dict, weight):
        if k == len(rest):
            return int(np.sum(weight))
        header = rest[k]
        if isinstance(header, Guard):
            return count(k + 1, env, weight * (env[header.lhs] <= env[header.rhs]))
        size = args.extent(header.extent)
        lower = env[header.lower] if header.lower is not None else 0
        upper = env[header.upper] if header.upper is not None else size - 1
        if header.index not in referenced:
            return count(k + 1, env, weight * np.maximum(np.asarray(upper) - lower + 1, 0))
        total = 0
        for value in range(size):
            inside = (np.asarray(lower) <= value) & (value <= np.asarray(upper))
            total += count(k + 1, {**env, header.index: value}, weight * inside)
        return total

    return count(0, env, weight)


def baseline_points(program: LoopProgram, args: KernelArgs) -> int:
    """Points of the non-symmetric kernel: every stored nonzero times every dense index."""
    headers = [level.header for level in unnest(program.body) if level.header is not None]
    driver_indices = {i for h in headers if isinstance(h, SparseLoop) for i in h.indices}
    dense = [name for name in args.sizes if name not in {i.name for i in driver_indices}]
    nnz = args.driver.n_expanded if args.driver is not None else 1
    return nnz * math.prod(args.sizes[name] for name in dense)
