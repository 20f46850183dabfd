"""The kernel parameter list shared by the code generators and the runtime that fills it."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from ..formats import CSF
from ..ir.loop import DenseLoop, Extent, LoopProgram, SparseLoop
from ..ir.traverse import walk


@dataclass(frozen=True)
class Param:
    """One kernel argument: `kind` in partial, coords, values, pointers, fiber_coords,
    fiber_pointers, dense, stored (the mask of a dense read's stored entries), table, extent,
    bounds, chunks; `key` names which one (a mode, a CSF level, a tensor, a table, an extent).
    The driver's structure arrays are its format's `arrays`."""

    kind: str
    key: object = None


@functools.lru_cache(maxsize=256)  # called per kernel launch: walk the program once
def sparse_loop(program: LoopProgram) -> SparseLoop | None:
    return next((n for n in walk(program.body) if isinstance(n, SparseLoop)), None)


@functools.lru_cache(maxsize=256)
def dense_extents(program: LoopProgram) -> tuple[Extent, ...]:
    found: dict[Extent, None] = {}
    for node in walk(program.body):
        if isinstance(node, DenseLoop):
            found.setdefault(node.extent, None)
    return tuple(found)


@functools.lru_cache(maxsize=256)
def kernel_parameters(program: LoopProgram) -> tuple[Param, ...]:
    params = [Param("partial")]
    loop = sparse_loop(program)
    if loop is not None:
        params += [Param(kind, key) for kind, key in loop.format.arrays(len(loop.indices))]
        params.append(Param("values"))
    params += [Param("dense", t) for t in program.dense_inputs]
    params += [Param("stored", t) for t in program.stored_inputs]
    params += [Param("table", t.name) for t in program.tables]
    params += [Param("extent", e) for e in dense_extents(program)]
    params += [Param("bounds"), Param("chunks")]
    return tuple(params)


def argument_values(params: tuple[Param, ...], args) -> list:
    """The runtime values of `params`, from a runtime.KernelArgs."""
    values = []
    for param in params:
        match param.kind:
            case "partial":
                values.append(args.partial)
            case "pointers":
                values.append(args.driver.pointers)
            case "coords":
                values.append(args.driver.coords[param.key])
            case "values":
                values.append(args.driver.values)
            case "dense":
                values.append(args.dense[param.key])
            case "stored":
                values.append(args.stored[param.key])
            case "table":
                values.append(args.tables[param.key])
            case "extent":
                values.append(args.extent(param.key))
            case "bounds":
                values.append(args.bounds)
            case "chunks":
                values.append(args.chunks)
            case "fiber_coords" | "fiber_pointers":
                values.append(CSF.array(args.driver, param.kind, param.key))
            case _:
                raise ValueError(f"unknown kernel parameter {param}")
    return values
