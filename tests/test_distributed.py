"""Sharded kernels on torch.distributed and out-of-core streaming (issue 15), without a GPU.

One gloo group per world size (2 and 4 processes on this machine, `torch.multiprocessing`)
runs every case below in one go; each rank saves what it returned, and the tests compare it
with the single-process result computed here. A group that hangs is killed after TIMEOUT
seconds and fails the tests instead of blocking CI.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.distributed.elastic.utils.distributed import get_free_port

import systec_gpu as sg
from systec_gpu import algebra, distributed
from systec_gpu.catalog import CATALOG, compile_catalog

ROOT = Path(__file__).resolve().parents[1]
WORLDS = (2, 4)
TIMEOUT = 300  # seconds for a whole group (all cases); a hang fails after this

# name -> (expression, symmetric, compile options, order of A, dense operands: name -> trailing shape);
# None: the catalog's kernel
KERNELS = {
    **{name: (None, None, {}, None, None) for name in CATALOG if name != "ssyrk"},
    "mttkrp3_nosym": ("C[i,j] += A[i,k,l]*B[l,j]*B[k,j]", {"A": "full"}, {"symmetry": False}, 3, {"B": (2,)}),
    "maxplus": ("y[i] max= A[i,j] + x[j]", {"A": "full"}, {}, 2, {"x": ()}),
    "minplus_symout": ("C[i,j] min= A[i,j,k] + x[k]", {"A": "full"}, {}, 3, {"x": ()}),
}
# the catalog's ssyrk reads its operand twice: refused (its catalog form has no sparse operand at all)
REFUSED = {"ssyrk_coo": ("C[i,j] += A[i,k]*A[j,k]", {}, {"formats": {"A": "coo"}}, 2, {})}
ORDER = {"ssymv": 2, "syprd": 2, "ssymm": 2, "bellman": 2, "ttm": 3, "mttkrp3": 3, "mttkrp4": 4, "mttkrp5": 5}
DENSE = {"ssymv": {"x": ()}, "syprd": {"x": ()}, "bellman": {"x": ()}, "ssymm": {"X": (3,)}, "ttm": {"B": (3,)},
         "mttkrp3": {"B": (2,)}, "mttkrp4": {"B": (2,)}, "mttkrp5": {"B": (2,)}}
SIZE = {2: 11, 3: 9, 4: 7, 5: 6}  # mode sizes: 11 rows do not divide into 2 or 4 row blocks

_KERNELS: dict = {}


def kernel(name: str):
    if name not in _KERNELS:
        expr, symmetric, options, _, _ = {**KERNELS, **REFUSED}[name]
        _KERNELS[name] = compile_catalog(name) if expr is None else sg.compile(expr, symmetric=symmetric, **options)
    return _KERNELS[name]


def order_of(name: str) -> int:
    return ORDER.get(name) or {**KERNELS, **REFUSED}[name][3]


def minmax(name: str) -> bool:
    return kernel(name).program.einsum.reduce != "+="


def symmetric_tensor(order: int, n: int, nnz: int, seed: int, integers: bool = False) -> sg.SymmetricTensor:
    """Random canonical entries (sorted coordinates within the group), unique; float64 values
    (small integers for min=/max=, so that there are ties)."""
    rng = np.random.default_rng(seed)
    idx = np.unique(np.sort(rng.integers(0, n, (order, nnz)), axis=0), axis=1)
    values = rng.integers(0, 4, idx.shape[1]).astype(np.float64) if integers else rng.random(idx.shape[1]) + 0.5
    return sg.SymmetricTensor(idx, values, (n,) * order, "full")


def inputs(name: str, seed: int = 0, nnz: int | None = None) -> tuple[sg.SymmetricTensor, dict]:
    order = order_of(name)
    n = SIZE[order]
    A = symmetric_tensor(order, n, 5 * n if nnz is None else nnz, seed, integers=minmax(name))
    g = torch.Generator().manual_seed(seed + 1)
    dense = {}
    for t, rest in (DENSE[name] if name in DENSE else {**KERNELS, **REFUSED}[name][4]).items():
        x = torch.randn((n, *rest), dtype=torch.float64, generator=g)
        dense[t] = x.round() if minmax(name) else x
    return A, dense


def weights(shape, rank: int) -> torch.Tensor:
    return torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(100 + rank))


# ---------------------------------------------------------------------------------------------
# Cases: case(world, rank, group, files) is what rank `rank` returns; with group=None, the same
# function computes the single-process result that rank must return.


def full_case(name: str, **options):
    def case(world, rank, group, files):
        A, dense = inputs(name)
        k = kernel(name)
        if group is None:
            return k(A=A, **dense)
        return k(A=distributed.shard(A, rank, world), **dense, group=group, **options)
    return case


def rows_case(name: str, nnz: int | None = None):
    def case(world, rank, group, files):
        A, dense = inputs(name, nnz=nnz)
        k = kernel(name)
        if group is None:
            full = k(A=A, **dense)
            start, stop = distributed.row_block(full.shape[0], rank, world)
            return full[start:stop]
        return k(A=distributed.shard(A, rank, world), **dense, group=group, output="rows")
    return case


def grad_case(name: str, output: str = "full"):
    """Gradients w.r.t. A's values and the dense operands of each rank's loss: its result
    weighted by its own weights (output="full"), or its row block weighted by its rows of one
    weight tensor (output="rows"). The gradient of the sum of the ranks' losses is the sum over
    the ranks of what they return (a replicated operand gets per-rank partial gradients, as in
    DDP; A's values get each shard's share); single-process, each "rank" returns the gradient
    of its own loss computed from the whole result."""
    def case(world, rank, group, files):
        A, dense = inputs(name, seed=3)
        values = torch.tensor(A.values, requires_grad=True)
        dense = {t: x.clone().requires_grad_(True) for t, x in dense.items()}
        whole = A.with_values(values)
        k = kernel(name)
        if group is None:
            y = k(A=whole, **dense)
            if output == "rows":
                start, stop = distributed.row_block(y.shape[0], rank, world)
                loss = (y[start:stop] * weights(y.shape, 0)[start:stop]).sum()
            else:
                loss = (y * weights(y.shape, rank)).sum()
        else:
            y = k(A=distributed.shard(whole, rank, world), **dense, group=group, output=output)
            if output == "rows":
                n = A.shape[0]
                start, stop = distributed.row_block(n, rank, world)
                loss = (y * weights((n, *y.shape[1:]), 0)[start:stop]).sum()
            else:
                loss = (y * weights(y.shape, rank)).sum()
        loss.backward()
        return {"A": values.grad, **{t: x.grad for t, x in dense.items()}}
    return case


def error_case(make):
    def case(world, rank, group, files):
        if group is None:
            return None
        make(world, rank, group)
        return "no error"
    return case


def _whole_tensor(world, rank, group):
    A, dense = inputs("ssymv")
    kernel("ssymv")(A=A, **dense, group=group)


def _wrong_world(world, rank, group):
    A, dense = inputs("ssymv")
    kernel("ssymv")(A=distributed.shard(A, rank, world + 1), **dense, group=group)


def _shape_on_one_rank(world, rank, group):
    A, dense = inputs("ssymv")
    x = dense["x"] if rank else torch.cat([dense["x"], dense["x"]])
    kernel("ssymv")(A=distributed.shard(A, rank, world), x=x, group=group)


def _different_x(world, rank, group):
    A, dense = inputs("ssymv")
    kernel("ssymv")(A=distributed.shard(A, rank, world), x=dense["x"] + rank, group=group)


def _read_twice(world, rank, group):
    A, dense = inputs("ssyrk_coo")
    kernel("ssyrk_coo")(A=distributed.shard(A, rank, world), group=group)


def loader_case(fmt: str, how: str):
    def case(world, rank, group, files):
        A, dense = inputs("mttkrp3", seed=5)
        k = kernel("mttkrp3")
        if group is None:
            part, C = distributed.shard(A, rank, world), k(A=A, **dense)
        else:
            if how == "group":  # rank, world size and (for .tns) the shape from the group
                part = distributed.load_shard(files[fmt], group=group)
            else:
                part = distributed.load_shard(files[fmt], rank, world, shape=A.shape if fmt == "tns" else None)
            C = k(A=part, **dense, group=group)
        # binsparse shares are exactly the shards; .tns shares are cut by bytes
        return {"C": C} if fmt == "tns" else {"C": C, "indices": part.indices}
    return case


def stream_case(name: str, chunk: int):
    def case(world, rank, group, files):
        A, dense = inputs(name)
        k = kernel(name)
        if group is None:
            return k(A=A, **dense)
        return k(A=distributed.shard(A, rank, world), **dense, group=group, stream_chunk=chunk)
    return case


def _canonical(world, rank, group):
    """A symmetric output in canonical storage (the identity off its canonical part)."""
    A, dense = inputs("minplus_symout")
    k = kernel("minplus_symout")
    if group is None:
        return k(A=A, **dense, canonical_output=True)
    return k(A=distributed.shard(A, rank, world), **dense, group=group, canonical_output=True)


def _empty_shards(world, rank, group):
    """Fewer nonzeros than ranks (some shards hold none), then a tensor with no nonzeros."""
    results = []
    for nnz in (1, 0):
        A, dense = inputs("mttkrp3", seed=7)
        A = distributed._slice(A, 0, nnz)
        k = kernel("mttkrp3")
        results.append(k(A=A, **dense) if group is None else
                       k(A=distributed.shard(A, rank, world), **dense, group=group))
    return results


CASES = {
    **{f"full/{name}": full_case(name) for name in KERNELS},
    "full/ttm/unchecked": full_case("ttm", check=False),
    "full/minplus_symout/canonical": lambda world, rank, group, files: _canonical(world, rank, group),
    **{f"rows/{name}": rows_case(name) for name in ("ssymv", "ssymm", "ttm", "mttkrp3", "bellman", "maxplus",
                                                     "minplus_symout")},
    "rows/ssymv/fewer-nonzeros-than-ranks": rows_case("ssymv", nnz=1),
    "empty-shards/mttkrp3": lambda world, rank, group, files: _empty_shards(world, rank, group),
    **{f"grad/{name}": grad_case(name) for name in ("mttkrp3", "ttm", "bellman", "minplus_symout", "ssymv")},
    **{f"grad-rows/{name}": grad_case(name, "rows") for name in ("mttkrp3", "bellman")},
    "stream/ttm": stream_case("ttm", 4),
    "stream/bellman": stream_case("bellman", 3),
    **{f"load/{fmt}/{how}": loader_case(fmt, how) for fmt in ("tns", "npz", "h5") for how in ("rank", "group")},
    "error/whole-tensor": error_case(_whole_tensor),
    "error/wrong-world": error_case(_wrong_world),
    "error/shape-on-one-rank": error_case(_shape_on_one_rank),
    "error/read-twice": error_case(_read_twice),
    "error/different-replicated-operand": error_case(_different_x),
}


ERRORS = {  # case -> (exception type on every rank, words of its message)
    "error/whole-tensor": ("ShardError", "is not a shard"),
    "error/wrong-world": ("ShardError", "but this process is rank"),
    "error/shape-on-one-rank": ("ShardError", "rank 0 failed: ValueError: size mismatch"),
    "error/read-twice": ("ValueError", "is read 2 times"),
    "error/different-replicated-operand": ("ShardError", "different values of x"),
}


# ---------------------------------------------------------------------------------------------
# The group


def _run_cases(world: int, rank: int, group, files: dict) -> dict:
    results = {}
    for case_id, case in CASES.items():
        try:
            results[case_id] = ("ok", case(world, rank, group, files))
        except Exception as e:  # recorded, compared by the test
            results[case_id] = ("error", type(e).__name__, str(e))
    return results


def _worker(rank: int, port: int, out: str, files: dict) -> None:
    """Every case on all MAX_WORLD ranks, then again on a group of the first two ranks (one
    spawn for both world sizes: starting processes is most of the time on 2 cores)."""
    torch.set_num_threads(1)
    os.environ["NUMBA_NUM_THREADS"] = "1"  # before numba is imported: the ranks share 2 cores
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=max(WORLDS),
                            timeout=timedelta(seconds=TIMEOUT // 2))
    smaller = {w: dist.new_group(list(range(w))) for w in WORLDS if w < max(WORLDS)}  # called by every rank
    results = {max(WORLDS): _run_cases(max(WORLDS), rank, dist.group.WORLD, files)}
    for w, group in smaller.items():
        if rank < w:
            results[w] = _run_cases(w, dist.get_rank(group), group, files)
    torch.save(results, Path(out) / f"rank{rank}.pt")
    dist.barrier()
    dist.destroy_process_group()


def _run_group(out: Path, files: dict) -> list[dict]:
    world = max(WORLDS)
    context = mp.start_processes(_worker, args=(get_free_port(), str(out), files), nprocs=world, join=False,
                                 start_method="spawn")
    deadline = time.monotonic() + TIMEOUT
    while not context.join(timeout=2):
        if time.monotonic() > deadline:
            for p in context.processes:
                p.kill()
            pytest.fail(f"the gloo group of {world} processes did not finish in {TIMEOUT} s")
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(world)]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict:
    A, _ = inputs("mttkrp3", seed=5)
    folder = tmp_path_factory.mktemp("shards")
    paths = {fmt: str(folder / f"A.{fmt}") for fmt in ("tns", "npz", "h5")}
    for path in paths.values():
        sg.save(path, A)
    return paths


@pytest.fixture(scope="module")
def all_groups(files, tmp_path_factory) -> dict:
    """world size -> (single-process results per rank, each rank's results) per case."""
    # the kernels are compiled here first: the ranks load them from numba's disk cache
    expected = {w: {case_id: [case(w, r, None, files) for r in range(w)] for case_id, case in CASES.items()
                    if not case_id.startswith("error/")} for w in WORLDS}
    got = _run_group(tmp_path_factory.mktemp("group"), files)
    return {w: (w, expected[w], [got[r][w] for r in range(w)]) for w in WORLDS}


@pytest.fixture(params=WORLDS, ids=lambda w: f"{w}ranks")
def group_results(request, all_groups):
    return all_groups[request.param]


def _close(got, want, exact: bool) -> None:
    if isinstance(want, dict):
        assert got.keys() == want.keys()
        for key in want:
            _close(got[key], want[key], exact)
    elif isinstance(want, list):
        assert len(got) == len(want)
        for g, w in zip(got, want, strict=True):
            _close(g, w, exact)
    elif isinstance(want, np.ndarray):
        np.testing.assert_array_equal(got, want)
    elif exact:
        assert got.shape == want.shape and torch.equal(got, want), (got, want)
    else:
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case_id", [c for c in CASES if not c.startswith(("error/", "grad"))])
def test_equal_to_single_process(group_results, case_id):
    world, expected, got = group_results
    name = case_id.split("/")[1]
    exact = name in KERNELS and minmax(name)
    for rank in range(world):
        status, *value = got[rank][case_id]
        assert status == "ok", f"rank {rank}: {value}"
        _close(value[0], expected[case_id][rank], exact)


@pytest.mark.parametrize("case_id", [c for c in CASES if c.startswith("grad")])
def test_gradient_through_the_collective(group_results, case_id):
    world, expected, got = group_results
    name = case_id.split("/")[1]
    per_rank = []
    for rank in range(world):
        status, *value = got[rank][case_id]
        assert status == "ok", f"rank {rank}: {value}"
        per_rank.append(value[0])
    want = {key: sum(e[key] for e in expected[case_id]) for key in expected[case_id][0]}
    A, _ = inputs(name, seed=3)
    for rank, grads in enumerate(per_rank):  # A's gradient lives on each rank's shard only
        start, stop = distributed.shard_bounds(A.nnz, rank, world)
        outside = torch.cat([grads["A"][:start], grads["A"][stop:]])
        assert torch.count_nonzero(outside) == 0
    for key in want:
        total = sum(g[key] for g in per_rank)
        torch.testing.assert_close(total, want[key], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case_id", list(ERRORS))
def test_every_rank_raises_the_same_error(group_results, case_id):
    world, _, got = group_results
    kind, words = ERRORS[case_id]
    messages = set()
    for rank in range(world):
        status, *value = got[rank][case_id]
        assert status == "error", f"rank {rank} returned {value}"
        assert value[0] == kind and words in value[1], value
        messages.add(value[1])
    assert len(messages) == 1


# ---------------------------------------------------------------------------------------------
# One process: shards, the algebra column, streaming, loaders


def test_collective_column_names_a_reduce_op():
    for symbol in algebra.REDUCTIONS:
        reduce, _ = algebra.reduction_for(symbol)
        assert isinstance(getattr(dist.ReduceOp, reduce.collective), dist.ReduceOp)
    assert {algebra.reduction_for(s)[0].collective for s in ("+=", "min=", "max=")} == {"SUM", "MIN", "MAX"}


@pytest.mark.parametrize("world", [1, 2, 3, 4, 7])
def test_shards_tile_the_canonical_nonzeros(world):
    A, _ = inputs("mttkrp3")
    parts = [distributed.shard(A, r, world) for r in range(world)]
    assert [p.shape for p in parts] == [A.shape] * world
    assert all(isinstance(p, sg.SymmetricTensor) and p.groups == A.groups for p in parts)
    assert max(p.nnz for p in parts) - min(p.nnz for p in parts) <= 1
    np.testing.assert_array_equal(np.concatenate([p.indices for p in parts], axis=1), A.indices)
    np.testing.assert_array_equal(np.concatenate([p.values for p in parts]), A.values)
    infos = [distributed.shard_info(p) for p in parts]
    assert [(i.rank, i.world_size) for i in infos] == [(r, world) for r in range(world)]
    assert distributed.shard_info(parts[0].with_values(parts[0].values * 2)) == infos[0]
    for p in parts:
        p.validate("A")  # still canonical, sorted, unique


def test_shard_refuses_bad_arguments():
    A, _ = inputs("ssymv")
    with pytest.raises(ValueError, match="outside 0..1"):
        distributed.shard(A, 2, 2)
    with pytest.raises(TypeError, match="SymmetricTensor or SparseTensor"):
        distributed.shard(A.to_dense(), 0, 2)
    with pytest.raises(ValueError, match="already a shard"):
        distributed.shard(distributed.shard(A, 0, 2), 0, 2)


@pytest.mark.parametrize("name,shape", [("ttm", (5, 5, 5)), ("minplus_symout", (6, 6)), ("mttkrp3", (7, 2))])
def test_symmetric_outputs_travel_as_their_canonical_half(name, shape):
    k = kernel(name)
    positions, mirror = distributed._symmetric_maps(shape, k.loops.output_groups, "cpu")
    assert distributed.payload_elements(k, shape) == (positions.numel() if k.loops.output_groups else np.prod(shape))
    if k.loops.output_groups:
        full = torch.arange(float(np.prod(shape))).reshape(shape)
        mirrored = full.reshape(-1)[positions][mirror].reshape(shape)  # pack, then unpack into both halves
        for a, b in k.loops.output_groups:
            assert torch.equal(mirrored, mirrored.transpose(a, b))
        assert torch.equal(mirrored.reshape(-1)[positions], full.reshape(-1)[positions])


@pytest.mark.parametrize("n,world", [(11, 4), (3, 4), (8, 4), (0, 2)])
def test_row_blocks_tile_the_rows(n, world):
    blocks = [distributed.row_block(n, r, world) for r in range(world)]
    assert blocks[0][0] == 0 and blocks[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(blocks, blocks[1:], strict=False))
    sizes = [b - a for a, b in blocks]
    assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)


@pytest.mark.parametrize("name", ["ssymv", "syprd", "ssymm", "ttm", "mttkrp4", "mttkrp3_nosym", "bellman", "maxplus",
                                  "minplus_symout"])
@pytest.mark.parametrize("chunk", [1, 5, 10_000])
def test_streamed_equals_in_memory(name, chunk):
    A, dense = inputs(name)
    k = kernel(name)
    _close(k(A=A, **dense, stream_chunk=chunk), k(A=A, **dense), exact=minmax(name))
    if k.loops.output_groups:  # canonical storage too
        _close(k(A=A, **dense, stream_chunk=chunk, canonical_output=True), k(A=A, **dense, canonical_output=True),
               exact=minmax(name))


def test_streamed_edge_cases():
    A, dense = inputs("mttkrp3")
    k = kernel("mttkrp3")
    empty = distributed._slice(A, 0, 0)
    assert torch.equal(k(A=empty, **dense, stream_chunk=4), k(A=empty, **dense))
    out = torch.empty(A.shape[0], 2, dtype=torch.float64)
    assert k(A=A, **dense, stream_chunk=4, out=out) is out
    torch.testing.assert_close(out, k(A=A, **dense), rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="positive number"):
        k(A=A, **dense, stream_chunk=0)
    with pytest.raises(TypeError, match="must be a SymmetricTensor"):
        k(A=A.to_dense(), **dense, stream_chunk=4)
    with pytest.raises(NotImplementedError, match="no gradient"):
        k(A=A, B=dense["B"].requires_grad_(True), stream_chunk=4)
    with pytest.raises(ValueError, match="needs group="):
        k(A=A, **dense, output="rows")
    with pytest.raises(ValueError, match="every operand is dense"):
        compile_catalog("ssyrk")(A=torch.ones(3, 2), stream_chunk=2)


@pytest.mark.parametrize("fmt", ["tns", "npz", "h5"])
@pytest.mark.parametrize("world", [1, 3, 4])
def test_loaded_shares_tile_the_file(files, fmt, world):
    A, _ = inputs("mttkrp3", seed=5)
    parts = [distributed.load_shard(files[fmt], r, world, shape=A.shape if fmt == "tns" else None)
             for r in range(world)]
    assert all(p.shape == A.shape and p.groups == A.groups for p in parts)
    np.testing.assert_array_equal(np.concatenate([p.indices for p in parts], axis=1), A.indices)
    np.testing.assert_array_equal(np.concatenate([p.values for p in parts]), A.values)
    if fmt != "tns":  # binsparse shares are exactly the shards
        for r, p in enumerate(parts):
            np.testing.assert_array_equal(p.indices, distributed.shard(A, r, world).indices)
    infos = [distributed.shard_info(p) for p in parts]
    assert infos[0].start == infos[0].begin and infos[-1].stop == infos[-1].end
    assert all(a.stop == b.start for a, b in zip(infos, infos[1:], strict=False))


@pytest.mark.parametrize("suffix", ["npz", "h5"])
def test_binsparse_matrix_shares_are_the_shards(tmp_path, suffix):
    """A symmetric matrix is a binsparse COOR file with structure symmetric_upper."""
    A, _ = inputs("ssymv")
    path = tmp_path / f"A.{suffix}"
    sg.save(path, A)
    for r in range(3):
        part = distributed.load_shard(path, r, 3)
        want = distributed.shard(A, r, 3)
        assert part.groups == A.groups
        np.testing.assert_array_equal(part.indices, want.indices)
        np.testing.assert_array_equal(part.values, want.values)


def test_tns_shares_name_the_bad_line(tmp_path):
    path = tmp_path / "bad.tns"
    path.write_text("3 3 3\n1 1 2 1.0\n1 2 3 2.0\n2 2 1 3.0\n3 3 3 4.0\n")  # line 4: not canonical
    parts = []
    with pytest.raises(sg.io.FormatError, match=r"line 4: .*not canonical"):
        for r in range(2):
            parts.append(distributed.load_shard(path, r, 2, symmetric=True))
    with pytest.raises(sg.io.FormatError, match="no dimensions header"):
        distributed.load_shard(files_without_header(tmp_path), 0, 2)
    gz = tmp_path / "a.tns.gz"
    gz.write_bytes(b"")
    with pytest.raises(sg.io.FormatError, match="uncompressed"):
        distributed.load_shard(gz, 0, 2)


def files_without_header(tmp_path) -> Path:
    path = tmp_path / "plain.tns"
    path.write_text("1 1 1.0\n1 2 2.0\n")
    return path


def test_torchrun_example():
    """The README's example, as a user runs it: torchrun with 2 gloo processes."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                          str(ROOT / "examples" / "distributed_ssymv.py")], env=env, capture_output=True, text=True,
                         timeout=TIMEOUT)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.count("equal to the single-process result") == 2
