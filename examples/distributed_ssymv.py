"""SSYMV with the matrix's canonical nonzeros split over the ranks of a torch.distributed group.

    torchrun --standalone --nproc-per-node 2 examples/distributed_ssymv.py

gloo on CPUs, NCCL when every rank has a GPU. Each rank holds one shard (a contiguous run of the
canonical nonzeros, balanced by count), runs the kernel on it and the partial results are
all-reduced (`+=` -> SUM): every rank gets the full y. With output="rows" each rank gets only its
block of rows (reduce_scatter). The result is checked against the single-process call.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

import systec_gpu as sg
from systec_gpu import distributed


def main() -> None:
    cuda = torch.cuda.is_available()
    dist.init_process_group("nccl" if cuda else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)

    # bcsstk01, a symmetric stiffness matrix shipped with the package. Every rank reads it whole
    # here; a large tensor is read share by share with distributed.load_shard(path, group=...).
    A = sg.load(sg.example_path("bcsstk01.mtx.gz"))
    x = torch.linspace(-1.0, 1.0, A.shape[0], dtype=torch.float64, device=device)
    k = sg.compile("y[i] += A[i,j]*x[j]", symmetric={"A": "full"})

    mine = distributed.shard(A, rank, world)
    y = k(A=mine, x=x, group=dist.group.WORLD)  # the full y on every rank
    rows = k(A=mine, x=x, group=dist.group.WORLD, output="rows")  # this rank's rows only
    start, stop = distributed.row_block(A.shape[0], rank, world)

    single = k(A=A, x=x)
    torch.testing.assert_close(y, single, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(rows, single[start:stop], rtol=1e-12, atol=1e-12)
    print(f"rank {rank}/{world}: {mine.nnz} of {A.nnz} canonical nonzeros, rows {start}..{stop}; "
          f"|y| = {float(y.norm()):.6g}, equal to the single-process result", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
