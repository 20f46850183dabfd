"""Beyond one device: shards of canonical nonzeros on `torch.distributed`, and streaming out of core.

torch.distributed is the engine (NCCL on GPUs, gloo on CPUs); this module only decides what each
rank computes and which collective combines it.

Shards. `shard(A, rank, world_size)` is rank `rank`'s share of A's canonical nonzeros: positions
[rank * nnz // world_size, (rank + 1) * nnz // world_size) of the sorted coordinates, so shares
differ by at most one nonzero and each is a contiguous run of the canonical order (a run of equal
leading coordinates is cut at most at the two ends of a share). It is a slice: a
`SymmetricTensor`/`SparseTensor` of the full shape whose coordinates are still canonical, sorted
and unique, built without a re-sort or re-check. `load_shard` reads only a rank's share of a file.
Every shard is registered here (`shard_info`), so that a call can tell a shard from a whole
tensor given on every rank (which would be counted `world_size` times).

The call. `kernel(A=shard, B=B, group=pg)` runs the kernel on the rank's shard (the sparse
driver, which must be read once by the expression: then every term of the reduction reads one
of its entries, and the partial results of disjoint shards combine exactly) with the other
operands whole, then combines the partial outputs with the reduction's collective (the algebra
table's `collective` column: `+=` -> SUM, `min=` -> MIN, `max=` -> MAX):

- `output="full"`: `all_reduce`, so every rank returns the full result. A symmetric output
  travels as its canonical half only (each rank computes its canonical part, the canonical
  entries are packed into one vector, all-reduced, and unpacked into both halves after).
- `output="rows"`: `reduce_scatter`, so each rank returns only its block of the output's first
  mode: rows `row_block(n, rank, world_size)`, balanced like shards (the first n % world_size
  ranks get one row more). reduce_scatter needs equal blocks, so when the rows do not divide
  evenly the short blocks are padded with the reduction's identity (at most one row each).
  A row block of a symmetric output needs both halves, so rows are sent whole.

With `check=True` (the default) the ranks agree before any data moves (one `all_gather_object`
after the local kernel): every rank's operand is a shard of this group, the shards tile the
whole in rank order and ascend in canonical order, all operands and results have the same
shapes and dtypes on every rank, the replicated operands (B) have the same checksums (sum and
sum of magnitudes of their values: a cheap test, not a proof) and no rank failed; otherwise
every rank raises the same error instead of leaving the others waiting in a collective.
`check=False` skips that step.

Gradients. The local kernel goes through the kernel's custom op when an input requires grad;
the collectives here are autograd functions. The gradient is that of the sum of the ranks'
losses (as with `torch.distributed.nn.functional.all_reduce`): the backward of a SUM all-reduce
all-reduces the output gradients; MIN/MAX send each output entry's gradient to the first rank
holding the winning value (the lowest rank, i.e. the first winner in canonical order, as the
single-process subgradient chooses); reduce_scatter's backward is an all-gather. If every rank
computes the same loss from the replicated result, its gradient is world_size times that loss's.

Streaming. `kernel(A=A_on_host, B=B, stream_chunk=N)` runs the kernel on consecutive slices of
N canonical nonzeros of A (shard-like slices: no copy of the structure) and combines the partial
outputs with the reduction, so the kernel's working memory (coordinate copies, the expanded
structure of a `symmetry=False` kernel, per-chunk buffers) is bounded by the chunk. With dense
operands on a CUDA device, the chunks go through two pinned host buffers and two device slots:
a copy stream uploads chunk k+1 while the compute stream runs chunk k (see `_stream_cuda`).
Streamed calls have no gradient (backward would keep every chunk alive).

Caches (owned here, no data): the shard registry (`_SHARDS`, keyed weakly by a shard's
coordinate array, which `with_values` shares), the per-kernel plan (`_plan`, by loop program and
program), and the index maps of a symmetric output's canonical half (`_symmetric_maps`, by shape,
groups and device).
"""

from __future__ import annotations

import functools
import math
import os
import struct
import zipfile
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.weak import WeakIdKeyDictionary

from . import algebra
from .inputs import shape_of
from .ir.einsum import accesses, format_einsum
from .runtime import mirror_tensor
from .storage import EntryError, SparseTensor, SymmetricTensor, check_coordinates, normalize_groups
from .torch_ops import needs_op

__all__ = [
    "ShardError",
    "ShardInfo",
    "call",
    "load_shard",
    "payload_elements",
    "row_block",
    "shard",
    "shard_bounds",
    "shard_info",
]

OUTPUTS = ("full", "rows")


class ShardError(ValueError):
    """The ranks of a call disagree (shards, shapes, dtypes) or one of them failed; every rank
    raises the same message."""


# ---------------------------------------------------------------------------------------------
# Shards


@dataclass(frozen=True)
class ShardInfo:
    """Where a shard lies in its whole: units [start, stop) of [begin, end), in rank order.
    `unit` is "nonzeros" (positions in the sorted canonical nonzeros) or "bytes" (a share of a
    .tns file, cut at line starts)."""

    rank: int
    world_size: int
    start: int
    stop: int
    begin: int
    end: int
    unit: str
    source: str  # what it was cut from, for messages


_SHARDS: WeakIdKeyDictionary = WeakIdKeyDictionary()  # a shard's coordinate array -> ShardInfo


def shard_info(tensor: Any) -> ShardInfo | None:
    """The ShardInfo of a shard made by `shard` or `load_shard` (also after `with_values`), else None."""
    if not isinstance(tensor, SparseTensor):
        return None
    return _SHARDS.get(tensor.indices)


def _register(tensor: SparseTensor, info: ShardInfo) -> SparseTensor:
    _SHARDS[tensor.indices] = info
    return tensor


def _check_rank(rank: int, world_size: int) -> None:
    for what, value in (("rank", rank), ("world_size", world_size)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise TypeError(f"{what} must be an integer, got {type(value).__name__} {value!r}")
    if world_size < 1:
        raise ValueError(f"world_size must be at least 1, got {world_size}")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside 0..{world_size - 1} (world_size {world_size})")


def shard_bounds(nnz: int, rank: int, world_size: int) -> tuple[int, int]:
    """[start, stop) of rank `rank`'s share of `nnz` sorted nonzeros: sizes differ by at most one."""
    _check_rank(rank, world_size)
    return nnz * rank // world_size, nnz * (rank + 1) // world_size


def row_block(n: int, rank: int, world_size: int) -> tuple[int, int]:
    """[start, stop) of the rows that `output="rows"` gives rank `rank` of an output with `n`
    rows: the first n % world_size ranks get one row more than the others."""
    _check_rank(rank, world_size)
    base, extra = divmod(n, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (rank < extra)


def _slice(tensor: SparseTensor, start: int, stop: int) -> SparseTensor:
    """Entries [start, stop) of a sorted storage, as a storage of the same shape (and groups): a
    slice of valid coordinates is valid, so nothing is sorted or checked again."""
    indices, values = tensor.indices[:, start:stop], tensor.values[start:stop]
    if isinstance(tensor, SymmetricTensor):
        return SymmetricTensor(indices, values, tensor.shape, tensor.groups, check=False)
    return SparseTensor(indices, values, tensor.shape, check=False)


def shard(tensor: SparseTensor, rank: int, world_size: int) -> SparseTensor:
    """Rank `rank`'s share of `tensor`'s canonical nonzeros (see the module doc): a
    SymmetricTensor (SparseTensor) of the full shape holding sorted positions
    `shard_bounds(tensor.nnz, rank, world_size)`. Values are a slice (a view: torch values keep
    their autograd history, so gradients reach the whole tensor's values)."""
    if not isinstance(tensor, SparseTensor):
        raise TypeError(f"shard: expected a SymmetricTensor or SparseTensor, got {type(tensor).__name__} (build one "
                        "with sg.SymmetricTensor.from_coo / from_dense or sg.io.as_sparse_tensor)")
    if shard_info(tensor) is not None:
        raise ValueError(f"shard: this tensor is already a shard ({shard_info(tensor)}); shard the whole tensor")
    start, stop = shard_bounds(tensor.nnz, rank, world_size)
    part = _slice(tensor, start, stop)
    return _register(part, ShardInfo(rank, world_size, start, stop, 0, tensor.nnz, "nonzeros", repr(tensor)))


# ---------------------------------------------------------------------------------------------
# What a kernel's call combines


@dataclass(frozen=True)
class _Plan:
    driver: str  # the sparse operand that is sharded or streamed
    reduce: algebra.Operator
    out_groups: tuple  # symmetric mode groups of the output, in the user's mode order


@functools.lru_cache(maxsize=256)
def _plan(loops, program) -> _Plan:
    einsum = program.einsum
    text = format_einsum(einsum)
    if loops.driver is None:
        raise ValueError(f"{text}: no sparse operand to shard or stream: every operand is dense (declare the one "
                         "to split sparse, e.g. formats={'A': 'coo'})")
    reads = [str(a) for a in accesses(einsum.rhs) if a.tensor == loops.driver]
    if len(reads) != 1:
        raise ValueError(f"{text}: {loops.driver} is read {len(reads)} times ({', '.join(reads)}); partial results "
                         f"of shards combine only when every term reads one entry of the split operand (a sum over "
                         f"shards of A_r*A_r misses the products across shards): pass {loops.driver} whole")
    return _Plan(loops.driver, algebra.operator(loops.reduce), tuple(loops.output_groups))


def _op(collective: str):
    return getattr(dist.ReduceOp, collective)


# torch 2.13 renamed the single-tensor collectives (the old names warn); torch >= 2.4 is supported.
_reduce_scatter_single = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor
_all_gather_single = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor


@functools.lru_cache(maxsize=8)  # int64 maps as large as the output: few
def _symmetric_maps(shape: tuple[int, ...], groups: tuple, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(positions, mirror) of an output symmetric in `groups`: the flat positions of its
    canonical entries (coordinates nondecreasing within each group), in order; and for every
    entry, the index in that packed list of its canonical entry."""
    coords = np.indices(shape, dtype=np.int64).reshape(len(shape), -1)
    canonical = coords.copy()
    for group in groups:
        canonical[list(group)] = np.sort(coords[list(group)], axis=0)
    positions = np.flatnonzero((canonical == coords).all(axis=0))
    slot = np.full(coords.shape[1], -1, dtype=np.int64)
    slot[positions] = np.arange(positions.size)
    mirror = slot[np.ravel_multi_index(tuple(canonical), shape)] if coords.shape[1] else slot
    return torch.from_numpy(positions).to(device), torch.from_numpy(mirror).to(device)


def payload_elements(kernel, out_shape, output: str = "full") -> int:
    """Elements of the output that one rank's collective carries (before the collective's own
    algorithm multiplies them, e.g. 2 (w-1)/w for a ring all-reduce): the canonical half of a
    symmetric output, the whole output otherwise."""
    plan = _plan(kernel.loops, kernel.program)
    shape = tuple(int(s) for s in out_shape)
    if output == "full" and plan.out_groups:
        n = 1
        rest = [s for m, s in enumerate(shape) if not any(m in g for g in plan.out_groups)]
        for group in plan.out_groups:
            n *= math.comb(shape[group[0]] + len(group) - 1, len(group))  # multisets of size g
        return n * math.prod(rest)
    return math.prod(shape)


# ---------------------------------------------------------------------------------------------
# Collectives as autograd functions


def _owned(local: torch.Tensor, reduced: torch.Tensor, group) -> torch.Tensor:
    """Where `reduced` (a MIN/MAX of every rank's `local`) came from this rank: the lowest rank
    holding the winning value, as a 0/1 mask."""
    rank, world = dist.get_rank(group), dist.get_world_size(group)
    claim = torch.where(local == reduced, rank, world).to(torch.int32)
    dist.all_reduce(claim, op=dist.ReduceOp.MIN, group=group)
    return claim == rank


class _AllReduce(torch.autograd.Function):
    @staticmethod
    def forward(ctx, local, collective, group):
        result = local.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(result, op=_op(collective), group=group)
        ctx.collective, ctx.group = collective, group
        if collective != "SUM":
            ctx.save_for_backward(local, result)
        return result

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM, group=ctx.group)
        if ctx.collective != "SUM":
            local, result = ctx.saved_tensors
            grad = torch.where(_owned(local, result, ctx.group), grad, torch.zeros_like(grad))
        return grad, None, None


def _all_reduce(tensor: torch.Tensor, collective: str, group) -> torch.Tensor:
    if tensor.requires_grad:
        return _AllReduce.apply(tensor, collective, group)
    tensor = tensor.contiguous()  # ours: a fresh kernel output or packed copy
    dist.all_reduce(tensor, op=_op(collective), group=group)
    return tensor


def _padded(local: torch.Tensor, world: int, identity: float) -> tuple[torch.Tensor, int]:
    """`local`'s rows laid out as `world` equal blocks of ceil(n / world) rows (row_block's
    blocks, short ones padded with the identity), as reduce_scatter needs."""
    n = local.shape[0]
    if n % world == 0:
        return local.contiguous(), n // world
    block = -(-n // world)
    pieces = []
    for s in range(world):
        start, stop = row_block(n, s, world)
        pieces.append(local[start:stop])
        if stop - start < block:
            pieces.append(local.new_full((block - (stop - start), *local.shape[1:]), identity))
    return torch.cat(pieces), block


def _reduce_scatter(local: torch.Tensor, collective: str, identity: float, group):
    """(this rank's row block, the padded input, the padded block): reduce_scatter's forward."""
    world = dist.get_world_size(group)
    padded, block = _padded(local, world, identity)
    out = padded.new_empty((block, *padded.shape[1:]))
    _reduce_scatter_single(out, padded, op=_op(collective), group=group)
    start, stop = row_block(local.shape[0], dist.get_rank(group), world)
    return out[:stop - start], padded, out


class _ReduceScatter(torch.autograd.Function):
    @staticmethod
    def forward(ctx, local, collective, identity, group):
        rows, padded, out = _reduce_scatter(local, collective, identity, group)
        ctx.collective, ctx.group, ctx.n = collective, group, local.shape[0]
        if collective != "SUM":
            ctx.save_for_backward(padded, out)
        return rows.clone()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        group, n = ctx.group, ctx.n
        world = dist.get_world_size(group)
        block = -(-n // world)
        mine = grad.new_zeros((block, *grad.shape[1:]))
        mine[:grad.shape[0]] = grad
        gathered = grad.new_empty((world * block, *grad.shape[1:]))
        _all_gather_single(gathered, mine.contiguous(), group=group)
        if ctx.collective != "SUM":
            padded, out = ctx.saved_tensors
            reduced = out.new_empty(padded.shape)
            _all_gather_single(reduced, out.contiguous(), group=group)
            gathered = torch.where(_owned(padded, reduced, group), gathered, torch.zeros_like(gathered))
        rows = []
        for s in range(world):
            start, stop = row_block(n, s, world)
            rows.append(gathered[s * block: s * block + (stop - start)])
        return torch.cat(rows), None, None, None


def _rows(local: torch.Tensor, plan: _Plan, group) -> torch.Tensor:
    collective, identity = plan.reduce.collective, plan.reduce.identity
    if local.shape[0] == 0:
        return local  # nothing to send (every rank agrees on the shape)
    if local.requires_grad:
        return _ReduceScatter.apply(local, collective, identity, group)
    return _reduce_scatter(local, collective, identity, group)[0]


def _symmetric_full(local: torch.Tensor, plan: _Plan, group, canonical: bool) -> torch.Tensor:
    """All-reduce of a symmetric output's canonical half, unpacked into both halves (or, with
    `canonical`, into the canonical part with the identity elsewhere)."""
    shape = tuple(local.shape)
    positions, mirror = _symmetric_maps(shape, plan.out_groups, str(local.device))
    packed = _all_reduce(local.reshape(-1).index_select(0, positions), plan.reduce.collective, group)
    if canonical:
        flat = torch.full((math.prod(shape),), plan.reduce.identity, dtype=local.dtype, device=local.device)
        return flat.index_put((positions,), packed).reshape(shape)
    return packed.index_select(0, mirror).reshape(shape)


# ---------------------------------------------------------------------------------------------
# The call


def _as_torch_result(result) -> torch.Tensor:
    return result if isinstance(result, torch.Tensor) else torch.from_dlpack(result)  # CuPy: no copy


def _write(out, result: torch.Tensor) -> torch.Tensor:
    """`result`, or `out` written with it (shape, dtype and device checked)."""
    if out is None:
        return result
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"out= must be a torch.Tensor, got {type(out).__name__}")
    for what, have, want in (("shape", tuple(out.shape), tuple(result.shape)), ("dtype", out.dtype, result.dtype),
                             ("device", out.device, result.device)):
        if have != want:
            raise ValueError(f"out= has {what} {have} but this call's result has {what} {want}")
    if out.requires_grad:
        raise ValueError("out= must not require grad (write into a tensor outside autograd)")
    with torch.no_grad():
        return out.copy_(result)


def call(kernel, tensors: dict[str, Any], *, group=None, output: str = "full", stream_chunk: int | None = None,
         check: bool = True, canonical_output: bool = False, out=None) -> torch.Tensor:
    """`kernel(**tensors, group=..., output=..., stream_chunk=...)`: see the module doc."""
    if output not in OUTPUTS:
        raise ValueError(f"output must be one of {', '.join(map(repr, OUTPUTS))}, got {output!r}")
    if output == "rows" and group is None:
        raise ValueError("output='rows' returns this rank's row block of a combined result: it needs group=")
    if stream_chunk is not None and (isinstance(stream_chunk, bool) or not isinstance(stream_chunk, int | np.integer)
                                     or stream_chunk < 1):
        raise ValueError(f"stream_chunk must be a positive number of nonzeros, got {stream_chunk!r}")
    plan = _plan(kernel.loops, kernel.program)
    differentiable = needs_op(tensors)
    if canonical_output and (differentiable or output == "rows"):
        raise NotImplementedError("canonical_output=True has no gradient and no row blocks: call outside autograd "
                                  "(torch.no_grad()) with output='full'")
    if group is None:
        return _write(out, _local(kernel, plan, tensors, stream_chunk, check, canonical_output, differentiable))
    rank, world = dist.get_rank(group), dist.get_world_size(group)
    if rank < 0:
        raise ValueError("this process is not a member of group=")
    problems = _local_problems(plan, tensors, rank, world)
    symmetric = bool(plan.out_groups) and output == "full"
    local, failure = None, None
    if not problems:
        try:
            local = _as_torch_result(_local(kernel, plan, tensors, stream_chunk, check,
                                            symmetric and not differentiable, differentiable))
        except Exception as e:
            if not check:
                raise
            failure = e
    if check:
        _agree(group, plan, tensors, local, problems, failure, output)
    elif problems:
        raise ShardError(problems[0])
    if output == "rows":
        if local.dim() == 0:
            raise ValueError("output='rows' splits the output's first mode, but this output is a scalar")
        result = _rows(local, plan, group)
    elif symmetric:
        result = _symmetric_full(local, plan, group, canonical_output)
    else:
        result = _all_reduce(local, plan.reduce.collective, group)
    return _write(out, result)


def _local(kernel, plan: _Plan, tensors, stream_chunk, check, canonical, differentiable):
    if stream_chunk is None:
        return kernel(check=check, canonical_output=canonical, **tensors)
    if differentiable:
        raise NotImplementedError("stream_chunk has no gradient (backward would keep every chunk alive): call it "
                                  "under torch.no_grad(), or without stream_chunk")
    return _streamed(kernel, plan, tensors, int(stream_chunk), check, canonical)


def _local_problems(plan: _Plan, tensors, rank: int, world: int) -> list[str]:
    """What is wrong with this rank's operands for a sharded call (messages, not raised: every
    rank must reach the agreement step first)."""
    problems = []
    driver = tensors.get(plan.driver)
    info = shard_info(driver)
    if info is None:
        problems.append(f"rank {rank}: {plan.driver} is not a shard (got {type(driver).__name__}): cut it with "
                        f"sg.distributed.shard({plan.driver}, rank, world_size) or read it with "
                        "sg.distributed.load_shard; a whole tensor on every rank would be counted once per rank")
    elif (info.rank, info.world_size) != (rank, world):
        problems.append(f"rank {rank}: {plan.driver} is the shard of rank {info.rank} of {info.world_size}, but this "
                        f"process is rank {rank} of {world} in group=")
    for name, obj in tensors.items():
        if name != plan.driver and shard_info(obj) is not None:
            problems.append(f"rank {rank}: {name} is a shard, but only the sparse driver {plan.driver} is split: "
                            f"pass {name} whole on every rank")
    return problems


def _ends(tensor) -> tuple[tuple[int, ...] | None, tuple[int, ...] | None]:
    if not isinstance(tensor, SparseTensor) or tensor.nnz == 0:
        return None, None
    return tuple(int(c) for c in tensor.indices[:, 0]), tuple(int(c) for c in tensor.indices[:, -1])


def _agree(group, plan: _Plan, tensors, local, problems, failure, output) -> None:
    """One all_gather_object; then every rank raises the same ShardError if anything disagrees
    (a rank that failed raises its own exception)."""
    world = dist.get_world_size(group)
    driver = tensors.get(plan.driver)
    mine = {
        "problems": problems,
        "failure": None if failure is None else f"{type(failure).__name__}: {failure}",
        "info": shard_info(driver),
        "ends": _ends(driver),
        "shapes": {n: tuple(shape_of(t)) for n, t in sorted(tensors.items()) if hasattr(t, "shape")},
        "checksums": {n: _checksum(t) for n, t in sorted(tensors.items()) if n != plan.driver},
        "result": None if local is None else (tuple(local.shape), str(local.dtype), local.device.type),
    }
    everyone: list[Any] = [None] * world
    dist.all_gather_object(everyone, mine, group=group)
    message = _disagreement(everyone, plan)
    if message is not None:
        raise ShardError(message) from failure  # the rank that failed keeps its own exception as the cause


def _checksum(obj) -> tuple[str, str] | None:
    """(sum, sum of magnitudes) of an operand's values in float64, as text (NaN compares equal):
    replicated operands must hold the same values on every rank."""
    values = obj.values if isinstance(obj, SparseTensor) else obj
    try:
        t = torch.as_tensor(values).detach().to(torch.float64)
    except (TypeError, ValueError, RuntimeError):
        return None
    return repr(float(t.sum())), repr(float(t.abs().sum()))


def _disagreement(everyone: list[dict], plan: _Plan) -> str | None:
    found = [p for e in everyone for p in e["problems"]]
    if found:
        return "; ".join(found)
    failed = [f"rank {r} failed: {e['failure']}" for r, e in enumerate(everyone) if e["failure"]]
    if failed:
        return "; ".join(failed)
    for key, what in (("shapes", "operand shapes"), ("result", "local results (shape, dtype, device)")):
        if any(e[key] != everyone[0][key] for e in everyone):
            return f"the ranks disagree on the {what}: " + "; ".join(f"rank {r}: {e[key]}" for r, e in
                                                                      enumerate(everyone))
    for name, checksum in everyone[0]["checksums"].items():
        if any(e["checksums"][name] != checksum for e in everyone):
            return (f"the ranks hold different values of {name}, which must be the same on every rank (only "
                    f"{plan.driver} is split): checksums (sum, sum of magnitudes) "
                    + "; ".join(f"rank {r}: {e['checksums'][name]}" for r, e in enumerate(everyone)))
    infos = [e["info"] for e in everyone]
    first = infos[0]
    if any((i.begin, i.end, i.unit, i.source) != (first.begin, first.end, first.unit, first.source) for i in infos):
        return (f"the shards of {plan.driver} come from different wholes: "
                + "; ".join(f"rank {r}: {i.unit} {i.begin}..{i.end} of {i.source}" for r, i in enumerate(infos)))
    edges = [first.begin] + [i.stop for i in infos]
    if any(i.start != edges[r] for r, i in enumerate(infos)) or edges[-1] != first.end:
        return (f"the shards of {plan.driver} do not tile its {first.unit} {first.begin}..{first.end} in rank order: "
                + "; ".join(f"rank {r}: {i.start}..{i.stop}" for r, i in enumerate(infos)))
    previous = None
    for r, e in enumerate(everyone):
        low, high = e["ends"]
        if low is None:
            continue
        if previous is not None and not previous[1] < low:
            return (f"the shards of {plan.driver} overlap or are out of canonical order: rank {previous[0]} ends at "
                    f"{previous[1]} but rank {r} starts at {low}")
        previous = (r, high)
    return None


# ---------------------------------------------------------------------------------------------
# Streaming out of core


def _stream_device(tensors, plan: _Plan):
    """The CUDA device of the dense operands when the driver's values are on the host (the case
    worth pinned chunks), else None."""
    values = getattr(tensors[plan.driver], "values", None)
    if isinstance(values, torch.Tensor) and values.device.type == "cuda":
        return None
    for name, t in tensors.items():
        if name != plan.driver and isinstance(t, torch.Tensor) and t.device.type == "cuda":
            return t.device
    return None


def _streamed(kernel, plan: _Plan, tensors, chunk: int, check: bool, canonical: bool) -> torch.Tensor:
    storage = tensors[plan.driver]
    if not isinstance(storage, SparseTensor):
        raise TypeError(f"stream_chunk: {plan.driver} must be a SymmetricTensor or SparseTensor (its canonical "
                        f"nonzeros are what is streamed), got {type(storage).__name__}")
    device = _stream_device(tensors, plan)
    run = _stream_cuda if device is not None else _stream_host
    # Parts hold the canonical part of a symmetric output; it is mirrored once, at the end.
    result = run(kernel, plan, tensors, storage, chunk, check, device)
    if plan.out_groups and not canonical:
        mirror_tensor(result, plan.out_groups)
    return result


def _run_part(kernel, plan: _Plan, tensors, part: SparseTensor, check: bool) -> torch.Tensor:
    inputs = {**tensors, plan.driver: part}
    return _as_torch_result(kernel(check=check, canonical_output=bool(plan.out_groups), **inputs))


def _stream_host(kernel, plan: _Plan, tensors, storage: SparseTensor, chunk: int, check: bool, device) -> torch.Tensor:
    combine = getattr(torch, plan.reduce.torch_combine)  # the local analogue of the collective
    result = None
    for start in range(0, max(storage.nnz, 1), chunk):  # no nonzeros: one empty part (the identity)
        part = _run_part(kernel, plan, tensors, _slice(storage, start, min(start + chunk, storage.nnz)), check)
        result = part if result is None else combine(result, part, out=result)
    return result


def _stream_cuda(kernel, plan: _Plan, tensors, storage: SparseTensor, chunk: int, check: bool,
                 device) -> torch.Tensor:
    """The streamed loop with dense operands on `device` (untested on hardware: no GPU was at
    hand when it was written; written to the torch docs on pinned memory, streams and events).

    Two pinned host slots and two device slots alternate. For chunk k in slot s = k % 2:
    the host waits until the upload that last read pinned slot s (chunk k-2) is done, then
    copies chunk k's coordinates and values into it (a host memcpy, overlapping the GPU's work
    on chunk k-1); the copy stream waits until the kernel of chunk k-2 no longer reads device
    slot s, uploads (non_blocking, from pinned memory: asynchronous) and records `copied[s]`;
    the compute stream waits for `copied[s]`, runs the kernel on the slot and combines the part
    into the result, and records `consumed[s]`. So the upload of chunk k+1 overlaps the kernel
    of chunk k. The slots are allocated on the caller's stream, which waits for the compute
    stream at the end (and the compute stream waited for every upload), so freeing them is safe;
    the result, made on the compute stream, is marked as used by the caller's stream
    (`record_stream`).

    Overlap needs a runtime that takes a storage whose coordinates and values are already on the
    device (issue 12's storage on the device): today a storage converts device coordinates to
    host numpy, so each part is copied back and uploaded again inside the call. That is correct
    (those copies run on the compute stream, after `copied[s]`) but serializes the pipeline."""
    combine = getattr(torch, plan.reduce.torch_combine)  # the local analogue of the collective
    nnz, ndim = storage.nnz, storage.ndim
    coords = torch.from_numpy(storage.indices)  # host, shared
    values = storage.values
    values = values if isinstance(values, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(values))
    width = min(chunk, max(nnz, 1))
    pinned = [(torch.empty(ndim * width, dtype=torch.int64, pin_memory=True),
               torch.empty(width, dtype=values.dtype, pin_memory=True)) for _ in range(2)]
    slots = [(torch.empty(ndim * width, dtype=torch.int64, device=device),
              torch.empty(width, dtype=values.dtype, device=device)) for _ in range(2)]
    caller = torch.cuda.current_stream(device)
    copy_stream, compute_stream = torch.cuda.Stream(device), torch.cuda.Stream(device)
    copy_stream.wait_stream(caller)  # the slots (and the dense operands) are ready on the caller's stream
    compute_stream.wait_stream(caller)
    copied = [torch.cuda.Event(), torch.cuda.Event()]
    consumed = [torch.cuda.Event(), torch.cuda.Event()]
    used = [False, False]  # whether slot s has been filled before (its events recorded)
    result = None
    for k, start in enumerate(range(0, max(nnz, 1), chunk)):
        stop, s = min(start + chunk, nnz), k % 2
        n = stop - start
        host_coords, host_values = pinned[s]
        device_coords, device_values = slots[s]
        if used[s]:
            copied[s].synchronize()  # the upload of chunk k-2 has read pinned slot s
        host_coords[:ndim * n].view(ndim, n).copy_(coords[:, start:stop])
        host_values[:n].copy_(values[start:stop])
        with torch.cuda.stream(copy_stream):
            if used[s]:
                copy_stream.wait_event(consumed[s])  # the kernel of chunk k-2 is done with device slot s
            device_coords[:ndim * n].copy_(host_coords[:ndim * n], non_blocking=True)
            device_values[:n].copy_(host_values[:n], non_blocking=True)
            copied[s].record(copy_stream)
        with torch.cuda.stream(compute_stream):
            compute_stream.wait_event(copied[s])
            part_storage = (SymmetricTensor(device_coords[:ndim * n].view(ndim, n), device_values[:n], storage.shape,
                                            storage.groups, check=False)
                            if isinstance(storage, SymmetricTensor) else
                            SparseTensor(device_coords[:ndim * n].view(ndim, n), device_values[:n], storage.shape,
                                         check=False))
            part = _run_part(kernel, plan, tensors, part_storage, check)
            result = part if result is None else combine(result, part, out=result)
            consumed[s].record(compute_stream)
        used[s] = True
    caller.wait_stream(compute_stream)
    if result.is_cuda:
        result.record_stream(caller)
    return result


# ---------------------------------------------------------------------------------------------
# Reading a rank's share of a file


def load_shard(path: str | os.PathLike[str], rank: int | None = None, world_size: int | None = None, *,
               group=None, symmetric: Any = None, shape=None) -> SparseTensor:
    """Rank `rank`'s share of a tensor file, reading only that share (plus the file's header).

    `.tns` (plain text, not .gz): the entry lines are split by bytes, each share starting at the
    first line that starts at or after byte begin + rank * (size - begin) // world_size, so a
    share is whole lines and the shares tile the file. Shares are balanced by bytes, hence by
    count up to the spread of line lengths (lines with more digits are longer). The file must
    hold canonical entries sorted lexicographically (what `sg.save` writes for a
    SymmetricTensor): a share is then a contiguous run of the canonical order, checked locally
    (canonical, sorted, unique) and across ranks at the call (`check=True`). Values load as
    float64 (a rank cannot see whether other shares hold only integers). The shape comes from
    the file's dimensions header, else `shape=`, else the largest index over all ranks of
    `group`. Symmetry comes from the comment line `sg.save` writes, or from `symmetric=`
    (the lines must then be canonical already); without either a share is a SparseTensor.

    binsparse `.h5`/`.hdf5` (h5py slices) and `.npz` (uncompressed, as `sg.save` writes it: the
    share is read at its offset in the archive) in COO form (COOR, a vector, or the custom COO
    level of full rank `sg.save` writes beyond matrices): the share is exactly
    `shard_bounds(nnz, rank, world_size)`, equal to `shard(sg.load(path), rank, world_size)`.
    Pointer formats (CSR, DCSR, ...) would need the pointers read whole and the slice aligned
    to rows; `symmetric_lower` files are sorted in the mirrored order: both are refused.
    `.zarr` is refused (zarr is not installed here to test it), `.gz` text too (no byte
    offsets in a gzip stream): load those whole and use `shard`.
    """
    if group is not None:
        rank = dist.get_rank(group) if rank is None else rank
        world_size = dist.get_world_size(group) if world_size is None else world_size
    if rank is None or world_size is None:
        raise TypeError("load_shard: give rank and world_size, or group=")
    _check_rank(rank, world_size)
    from .io.errors import FormatError

    name = os.fspath(path).lower()
    if name.endswith(".tns"):
        return _tns_share(path, rank, world_size, symmetric, shape, group)
    if name.endswith((".h5", ".hdf5", ".npz")):
        return _binsparse_share(path, rank, world_size, symmetric)
    raise FormatError(path, "load_shard reads .tns (uncompressed) and binsparse .h5/.hdf5/.npz files; load other "
                      "files whole with sg.load and cut them with sg.distributed.shard")


def _line_start(f, position: int, begin: int, size: int) -> int:
    """The first line start at or after `position` (begin and size are line starts)."""
    if position <= begin:
        return begin
    if position >= size:
        return size
    f.seek(position - 1)
    offset = position - 1
    while True:
        block = f.read(1 << 16)
        if not block:
            return size
        found = block.find(b"\n")
        if found >= 0:
            return offset + found + 1
        offset += len(block)


def _tns_head(f, size: int) -> bytes:
    """The file's first lines: whole lines holding at least three entries (or the whole file)."""
    from .io.frostt import _is_entry

    head = b""
    while True:
        more = f.read(1 << 16)
        head += more
        if not more or len(head) >= size:
            return head
        whole = head[:head.rfind(b"\n") + 1]
        if sum(_is_entry(line) for line in whole.split(b"\n")) >= 3:
            return whole


def _tns_share(path, rank: int, world: int, symmetric, shape, group) -> SparseTensor:
    from .io._common import wanted_groups
    from .io.errors import FormatError
    from .io.frostt import _BLOCK, _canonical_groups, _header, _parse_block

    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = _tns_head(f, size)
        marked = _canonical_groups(head, path)
        begin, dims, k, origin = _header(head, path)
        start = _line_start(f, begin + (size - begin) * rank // world, begin, size)
        stop = _line_start(f, begin + (size - begin) * (rank + 1) // world, begin, size)
        f.seek(start)
        coords, vals, pending, offset = [], [], b"", start
        try:
            while offset < stop:  # blocks of whole lines: small temporaries
                data = pending + f.read(min(_BLOCK, stop - offset))
                offset += len(data) - len(pending)
                cut = data.rfind(b"\n") + 1 if offset < stop else len(data)
                block, pending = data[:cut], data[cut:]
                if block:
                    c, v = _parse_block(block, k, origin, False, 0, path)
                    coords.append(c)
                    vals.append(v)
        except FormatError as e:  # its line counts from this share's first line: name the file's
            raise _file_line_error(f, path, e, start, offset - len(data)) from None
    ndim = k - 1
    idx = np.ascontiguousarray(np.concatenate(coords).T if coords else np.zeros((ndim, 0), np.int64))
    values = np.concatenate(vals) if vals else np.zeros(0)
    if idx.size and idx.min() < 1:
        raise _entry_line_error(path, start, int(np.argmax((idx < 1).any(axis=0))),
                                "coordinates are 1-based: found an index below 1")
    idx -= 1
    declared = wanted_groups(symmetric, ndim)
    spec = marked if marked is not None else declared
    full_shape = _share_shape(path, idx, dims, shape, spec, group)
    try:
        groups = normalize_groups(spec or (), full_shape, os.fspath(path))
        other = marked is not None and declared is not None and normalize_groups(declared or (), full_shape) != groups
    except ValueError as e:
        raise FormatError(path, str(e)) from None
    if other:
        raise FormatError(path, f"the file holds canonical entries symmetric in {groups}, not in {symmetric}: load "
                          "it whole with sg.load to declare other groups")
    try:
        check_coordinates(idx, full_shape, groups, name=os.fspath(path))
    except EntryError as e:
        message = str(e) + " (load_shard reads files of canonical entries sorted lexicographically)"
        raise _entry_line_error(path, start, e.positions[0] if e.positions else None, message) from None
    storage = (SymmetricTensor(idx, values, full_shape, groups, check=False) if groups
               else SparseTensor(idx, values, full_shape, check=False))
    return _register(storage, ShardInfo(rank, world, start, stop, begin, size, "bytes", os.fspath(path)))


def _share_shape(path, idx: np.ndarray, dims, shape, groups, group) -> tuple[int, ...]:
    from .io.errors import FormatError

    ndim = idx.shape[0]
    if dims is not None:
        if shape is not None and tuple(shape) != tuple(dims):
            raise FormatError(path, f"shape={tuple(shape)} disagrees with the dimensions {tuple(dims)} in the header")
        return tuple(dims)
    if shape is not None:
        if len(shape) != ndim:
            raise FormatError(path, f"shape={tuple(shape)} has {len(shape)} modes but entries have {ndim} coordinates")
        over = idx >= np.array(shape, dtype=np.int64)[:, None]
        if over.any():
            raise FormatError(path, f"an index of this share lies past shape={tuple(shape)}")
        return tuple(int(s) for s in shape)
    if group is None:
        raise FormatError(path, "the file has no dimensions header and each rank sees only its share: pass shape= "
                          "or group= (the shape is then the largest index over all ranks)")
    local = [int(row.max()) + 1 if row.size else 0 for row in idx]
    everyone: list[Any] = [None] * dist.get_world_size(group)
    dist.all_gather_object(everyone, local, group=group)
    sizes = [max(e[m] for e in everyone) for m in range(ndim)]
    for g in normalize_groups(groups or (), (max(sizes, default=0),) * ndim):
        for m in g:
            sizes[m] = max(sizes[p] for p in g)
    return tuple(sizes)


def _file_line_error(f, path, error, start: int, block_start: int):
    """A FormatError of _parse_block (whose line counts from the block) renamed to the file's line."""
    from .io.errors import FormatError

    if error.line is None:
        return error
    f.seek(0)
    before = f.read(block_start).count(b"\n")  # error path only: counts the lines before the block
    message = str(error).removeprefix(f"{error.path}: line {error.line}: ")
    return FormatError(path, message, before + error.line)


def _entry_line_error(path, start: int, entry: int | None, message: str):
    """A FormatError at the line of this share's `entry`-th entry (error path only: rescans)."""
    from .io.errors import FormatError
    from .io.frostt import _is_entry

    if entry is None:
        return FormatError(path, message)
    with open(path, "rb") as f:
        before = f.read(start).count(b"\n")
        seen, line = -1, before
        for raw in f:
            line += 1
            seen += _is_entry(raw.rstrip(b"\n"))
            if seen == entry:
                return FormatError(path, message, line)
    return FormatError(path, message)


def _npz_slice(path, key: str, start: int, stop: int) -> np.ndarray:
    """Entries [start, stop) of the 1-D array `key` of an .npz archive, read at their offset when
    the member is stored uncompressed (np.savez), else decompressed whole and sliced."""
    with zipfile.ZipFile(path) as archive:
        member = archive.getinfo(f"{key}.npy")
        if member.compress_type != zipfile.ZIP_STORED:
            with archive.open(member) as f:
                return np.lib.format.read_array(f)[start:stop]
    with open(path, "rb") as f:
        f.seek(member.header_offset)
        local = f.read(30)  # the local file header; its name and extra field lengths are at 26..30
        name_length, extra_length = struct.unpack("<HH", local[26:30])
        f.seek(member.header_offset + 30 + name_length + extra_length)
        version = np.lib.format.read_magic(f)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read_header(f)
        if len(shape) != 1:
            raise ValueError(f"{key} has shape {shape}, expected a vector")
        f.seek(start * dtype.itemsize, os.SEEK_CUR)
        return np.frombuffer(f.read((stop - start) * dtype.itemsize), dtype=dtype).copy()


_COO_LEVEL = {"level_desc": "sparse", "level": {"level_desc": "element"}}


def _binsparse_share(path, rank: int, world: int, symmetric) -> SparseTensor:
    from .io._common import wanted_groups
    from .io.binsparse_io import _EXT_KEY, _container
    from .io.errors import FormatError

    try:
        with _container(path, "r") as c:
            header = c.read_header()
    except KeyError as e:
        raise FormatError(path, f"invalid binsparse container: {e}") from None
    shape = tuple(int(s) for s in header.get("shape", ()))
    ndim, fmt = len(shape), header.get("format")
    custom = header.get("custom", {}).get("level") if fmt == "custom" else None
    coo = fmt in ("COO", "COOR") or (fmt == "CVEC" and ndim == 1) or (
        custom is not None and {k: v for k, v in custom.items() if k != "rank"} == _COO_LEVEL
        and custom.get("rank") == ndim and "transpose" not in header["custom"])
    if not coo:
        raise FormatError(path, f"load_shard reads binsparse COO (COOR, a vector, or one sparse level of full rank), "
                          f"not format {fmt!r}: load it whole with sg.load and cut it with sg.distributed.shard")
    if str(header.get("data_types", {}).get("values", "")).startswith("iso"):
        raise FormatError(path, "iso-valued binsparse files are not read by load_shard")
    structure = header.get("structure")
    if structure == "symmetric_upper":
        file_groups = ((0, 1),)
    elif structure is not None:
        raise FormatError(path, f"load_shard cannot split structure {structure!r} (its entries are not sorted in "
                          "canonical order): load it whole with sg.load and cut it with sg.distributed.shard")
    else:
        file_groups = tuple(tuple(g) for g in header.get(_EXT_KEY, {}).get("groups", ()))
    try:
        groups = normalize_groups(file_groups, shape, os.fspath(path))
        other = symmetric is not None and normalize_groups(wanted_groups(symmetric, ndim), shape) != groups
    except ValueError as e:
        raise FormatError(path, str(e)) from None
    if other:
        raise FormatError(path, f"the file holds entries symmetric in {groups}, not in {symmetric}: load it whole "
                          "with sg.load to declare other groups")
    nnz = int(header["number_of_stored_values"])
    start, stop = shard_bounds(nnz, rank, world)
    keys = [f"indices_{m}" for m in range(ndim)] + ["values"]
    if os.fspath(path).lower().endswith(".npz"):
        arrays = [_npz_slice(path, key, start, stop) for key in keys]
    else:
        import h5py

        with h5py.File(path, "r") as f:
            arrays = [np.asarray(f[key][start:stop]) for key in keys]
    idx = np.ascontiguousarray(np.stack([a.astype(np.int64, copy=False) for a in arrays[:-1]])
                               if ndim else np.zeros((0, stop - start), np.int64))
    try:
        check_coordinates(idx, shape, groups, name=os.fspath(path))
    except EntryError as e:
        where = f" (stored entry {start + e.positions[0]})" if e.positions else ""
        raise FormatError(path, f"{e}{where}; load_shard reads canonical entries sorted lexicographically") from None
    storage = (SymmetricTensor(idx, arrays[-1], shape, groups, check=False) if groups
               else SparseTensor(idx, arrays[-1], shape, check=False))
    return _register(storage, ShardInfo(rank, world, start, stop, 0, nnz, "nonzeros", os.fspath(path)))
