"""Strong and weak scaling of sharded kernels on torch.distributed (CPU, gloo, 1 and 2 processes), and a
model's prediction for 8 GPUs over NVLink.

    PYTHONPATH=$PWD python perf/dist_scaling.py [--rounds 7]

What is measured here (a 2-core VM shared with other sessions: noisy; medians over rounds): two
processes, one Numba thread each, joined by gloo. Each round runs, interleaved, the one-process
call (rank 0 alone on the whole tensor while rank 1 waits) and the two-process calls:
- `local`: each rank's kernel on its shard (no communication), per rank;
- `collective`: the all-reduce of that rank's partial output alone (after a barrier, so it
  excludes waiting for the other rank) and the reduce-scatter of `output="rows"`;
- `call`: the whole sharded call `k(A=shard, ..., group=pg)` (check=False, and check=True, which
  adds the agreement all_gather_object), and `output="rows"`.
Strong scaling: the same tensor on 1 and 2 processes. Weak scaling: nonzeros per process fixed
(the 2-process tensor has twice the nonzeros, same shape). Bytes: the payload of the collective
(the output, or the canonical half of a symmetric output) and the ring algorithm's bytes sent
per rank (2 (w-1)/w x payload for all_reduce, (w-1)/w for reduce_scatter).

What is predicted (never measured: no GPU was used), for 8 H100 SXM GPUs in one NVSwitch node:
    T8 = T1_sparse / 8 + T_output + T_comm,   speedup = (T1_sparse + T_output) / T8
    T1_sparse = bytes the kernel moves / HBM bandwidth: per canonical nonzero its uint32
                coordinates and fp32 value, the `order` dense rows it reads and the `order` output
                rows it scatters (R x 4 B each, no cache reuse)
    T_output  = 2 x output bytes / HBM bandwidth (each rank fills and writes a whole output)
    T_comm    = alpha + ring bytes per rank / NVLink bandwidth
with HBM = 3.0e12 B/s (the device copy measured on an H100 in DESIGN section 6), NVLink 4 =
450e9 B/s per direction per GPU, alpha = 20e-6 s per collective (the order of NCCL's
small-message latency on one NVLink node; an assumption). T1 from the byte model is a lower
bound on the kernel time (DESIGN section 6 measured symmetric SSYMV at 0.73-0.92x of cuSPARSE,
i.e. below copy bandwidth), so the communication share predicted is an upper bound.

Writes perf/results/dist-scaling-<host>-<date>.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.distributed.elastic.utils.distributed import get_free_port

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import systec_gpu as sg  # noqa: E402
from systec_gpu import distributed  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
WORLD = 2
MODEL = {
    "gpus": 8,
    "hbm_bytes_per_s": 3.0e12,
    "nvlink_bytes_per_s_per_direction": 450e9,
    "collective_latency_s": 20e-6,
    "formula": "T8 = T1_sparse/8 + T_output + T_comm; speedup = (T1_sparse + T_output)/T8; "
               "T_comm = alpha + ring bytes per rank / NVLink bandwidth",
    "note": "a prediction from a byte model, never a measurement: no GPU was used",
}

# Predicted only (no tensor is built): sizes the issue names, where one GPU's memory no longer suffices.
SCENARIOS = {
    "mttkrp5, 1e9 canonical nonzeros, n=1e6, R=16": {"order": 5, "nnz": 10**9, "n": 10**6, "width": 16,
                                                      "symmetric_output": False},
    "mttkrp3, 1e9 canonical nonzeros, n=1e7, R=32": {"order": 3, "nnz": 10**9, "n": 10**7, "width": 32,
                                                      "symmetric_output": False},
    "ssymv, 1e9 canonical nonzeros, n=1e8": {"order": 2, "nnz": 10**9, "n": 10**8, "width": 1,
                                             "symmetric_output": False},
}

# name -> (expression, symmetric, dense operand -> trailing shape, how A is made)
WORKLOADS = {
    "ssymv/G3_circuit": ("y[i] += A[i,j]*x[j]", {"A": "full"}, {"x": ()}, ("file", "G3_circuit.mtx.gz")),
    "mttkrp3/random": ("C[i,j] += A[i,k,l]*B[l,j]*B[k,j]", {"A": "full"}, {"B": (16,)},
                       ("random", 3, 100_000, 600_000)),
}


def _tensor(how, scale: int = 1) -> sg.SymmetricTensor:
    """The workload's tensor; `scale` multiplies its nonzeros (weak scaling)."""
    if how[0] == "file":
        A = sg.load(DATA / how[1])
        if scale == 1:
            return A
        # same shape, ~`scale` times the nonzeros: the matrix plus copies of its entries with rows and
        # columns shifted by different amounts (a shift of both by one amount would mostly land on the
        # grid's own entries)
        n = A.shape[0]
        rows, cols = [A.indices[0]], [A.indices[1]]
        for s in range(1, scale):
            lo, hi = (A.indices[0] + s * 7919) % n, (A.indices[1] + s * 104_729) % n
            rows.append(np.minimum(lo, hi))
            cols.append(np.maximum(lo, hi))
        idx = np.stack([np.concatenate(rows), np.concatenate(cols)])
        values = np.tile(np.asarray(A.values), scale)
        return sg.SymmetricTensor.from_canonical(*_unique(idx, values), A.shape, "full")
    _, order, n, nnz = how
    rng = np.random.default_rng(1)
    idx = np.sort(rng.integers(0, n, (order, nnz * scale)), axis=0)
    return sg.SymmetricTensor.from_canonical(*_unique(idx, rng.random(idx.shape[1])), (n,) * order, "full")


def _unique(idx: np.ndarray, values: np.ndarray):
    idx, first = np.unique(idx, axis=1, return_index=True)
    return idx, values[first]


def _dense(trailing: dict, n: int) -> dict:
    g = torch.Generator().manual_seed(2)
    return {t: torch.randn((n, *rest), generator=g, dtype=torch.float32) for t, rest in trailing.items()}


def _best_time(fn, *args, **kwargs) -> float:
    """The fastest of 3 calls of fn(*args, **kwargs), in seconds (preemption by other sessions on
    this shared machine only ever adds time)."""
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        fn(*args, **kwargs)
        times.append(time.perf_counter() - t0)
    return min(times)


def _round(k, whole1, mine, dense: dict, rank: int, solo, times: dict) -> None:
    """One round of every measurement (the module doc), appended to `times`."""
    dist.barrier()
    if rank == 0:
        times["one_process"].append(_best_time(k, A=whole1, **dense, group=solo, check=False))  # shard 0 of 1
    for turn in range(WORLD):  # each rank's kernel alone, the other waiting: no contention between the ranks
        dist.barrier()
        if rank == turn:
            times["local_alone"].append(_best_time(k, A=mine, **dense))
    dist.barrier()
    times["local"].append(_best_time(k, A=mine, **dense))
    partial = k(A=mine, **dense).contiguous()
    dist.barrier()
    times["all_reduce"].append(_best_time(dist.all_reduce, partial))
    padded, block = distributed._padded(partial, WORLD, 0.0)
    target = padded.new_empty((block, *padded.shape[1:]))
    dist.barrier()
    times["reduce_scatter"].append(_best_time(distributed._reduce_scatter_single, target, padded))
    for key, options in (("call", {"check": False}), ("call_checked", {}),
                         ("call_rows", {"check": False, "output": "rows"})):
        dist.barrier()
        times[key].append(_best_time(k, A=mine, **dense, group=dist.group.WORLD, **options))


def _worker(rank: int, port: int, rounds: int, out: str) -> None:
    torch.set_num_threads(1)
    os.environ["NUMBA_NUM_THREADS"] = "1"  # before numba is imported: one thread per process
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    solo = dist.new_group([0])  # the one-process calls (called by every rank)
    world_group = dist.group.WORLD
    report = {}
    for name, (expr, symmetric, trailing, how) in WORKLOADS.items():
        k = sg.compile(expr, symmetric=symmetric)
        for scaling in ("strong", "weak"):
            whole1 = _tensor(how)
            whole2 = whole1 if scaling == "strong" else _tensor(how, WORLD)
            dense = _dense(trailing, whole1.shape[0])
            whole1 = whole1.with_values(np.asarray(whole1.values, dtype=np.float32))
            whole2 = whole2.with_values(np.asarray(whole2.values, dtype=np.float32))
            mine = distributed.shard(whole2, rank, WORLD)
            whole1 = distributed.shard(whole1, 0, 1)  # the one-process call: group of one
            k(A=whole1, **dense)  # warm-up: compile, structure caches
            k(A=mine, **dense)
            times: dict[str, list[float]] = {key: [] for key in ("one_process", "local_alone", "local", "all_reduce",
                                                                 "reduce_scatter", "call", "call_checked", "call_rows")}
            for _ in range(rounds):
                _round(k, whole1, mine, dense, rank, solo, times)
            result = k(A=mine, **dense, group=world_group)
            torch.testing.assert_close(result, k(A=whole2, **dense), rtol=2e-4, atol=1e-3)  # a check, not timed
            report[f"{name}/{scaling}"] = {
                "times": times,
                "nnz_one_process": whole1.nnz,
                "nnz_per_rank_two_processes": mine.nnz,
                "shape": list(whole2.shape),
                "output_shape": list(result.shape),
                "payload_bytes": distributed.payload_elements(k, result.shape) * result.element_size(),
                "dense_bytes": {t: x.numel() * x.element_size() for t, x in dense.items()},
                "order": whole2.ndim,
            }
    everyone = [None] * WORLD
    dist.all_gather_object(everyone, report)
    if rank == 0:
        Path(out).write_text(json.dumps(everyone))
    dist.barrier()
    dist.destroy_process_group()


def _stats(values: list[float]) -> dict:
    return {"median_s": statistics.median(values), "min_s": min(values), "max_s": max(values), "rounds": values}


def _ratios(one: dict, slowest: dict, best: dict) -> dict:
    """one-process time / two-process time (the slower rank), by medians and by minima over rounds;
    `ideal` = the slower rank's kernel alone plus the all-reduce alone (no contention between ranks)."""
    out = {}
    for stat, table in (("median", slowest), ("min", best)):
        t1 = one[f"{stat}_s"]
        out[stat] = {"call": t1 / table["call"], "call_rows": t1 / table["call_rows"],
                     "ideal": t1 / (table["local_alone"] + table["all_reduce"])}
    return out


def _predict(order: int, nnz: int, width: int, out_bytes: int, payload: int) -> dict:
    """The 8-GPU prediction of the module doc (fp32): `nnz` canonical nonzeros of an order-`order`
    tensor, dense rows of `width` (R; 1 for a vector), an output of `out_bytes` whose collective
    carries `payload` bytes."""
    w, hbm = MODEL["gpus"], MODEL["hbm_bytes_per_s"]
    link, alpha = MODEL["nvlink_bytes_per_s_per_direction"], MODEL["collective_latency_s"]
    sparse_bytes = nnz * (order * 4 + 4) + nnz * 2 * order * width * 4
    t1_sparse, t_output = sparse_bytes / hbm, 2 * out_bytes / hbm
    comm_full = alpha + 2 * (w - 1) / w * payload / link
    comm_rows = alpha + (w - 1) / w * payload / link
    single = t1_sparse + t_output
    t8_full, t8_rows = t1_sparse / w + t_output + comm_full, t1_sparse / w + t_output + comm_rows
    return {
        "nnz": nnz, "t1_sparse_s": t1_sparse, "t_output_s": t_output, "t1_s": single,
        "comm_all_reduce_s": comm_full, "comm_reduce_scatter_s": comm_rows,
        "t8_full_s": t8_full, "t8_rows_s": t8_rows,
        "speedup_full": single / t8_full, "speedup_rows": single / t8_rows,
        "bytes_model": "per canonical nonzero: order x 4 B uint32 coordinates + 4 B value + the order dense rows "
                       "it reads and the order output rows it scatters, R x 4 B each (no cache reuse)",
    }


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    started = time.time()
    out = ROOT / "perf" / "results" / ".dist-scaling-raw.json"
    mp.start_processes(_worker, args=(get_free_port(), args.rounds, str(out)), nprocs=WORLD, start_method="spawn")
    ranks = json.loads(out.read_text())
    out.unlink()
    results = {}
    for key in ranks[0]:
        entries = [r[key] for r in ranks]
        e0 = entries[0]
        one = _stats(e0["times"]["one_process"])
        per_rank = {what: [_stats(e["times"][what]) for e in entries]
                    for what in ("local_alone", "local", "all_reduce", "reduce_scatter", "call", "call_checked",
                                 "call_rows")}
        slowest = {what: max(s["median_s"] for s in stats) for what, stats in per_rank.items()}
        best = {what: max(s["min_s"] for s in stats) for what, stats in per_rank.items()}
        ring_all_reduce = 2 * (WORLD - 1) / WORLD * e0["payload_bytes"]
        measured = {
            "one_process": one,
            "two_processes": per_rank,
            "slowest_rank_median_s": slowest,
            "slowest_rank_min_s": best,
            "payload_bytes": e0["payload_bytes"],
            "ring_bytes_per_rank_all_reduce": ring_all_reduce,
            "ring_bytes_per_rank_reduce_scatter": (WORLD - 1) / WORLD * e0["payload_bytes"],
        }
        measured["speedup" if key.endswith("/strong") else "efficiency"] = _ratios(one, slowest, best)
        results[key] = {
            "shape": e0["shape"], "output_shape": e0["output_shape"], "dtype": "float32",
            "nnz_one_process": e0["nnz_one_process"],
            "nnz_per_rank_two_processes": [e["nnz_per_rank_two_processes"] for e in entries],
            "measured_cpu_gloo": measured,
            "predicted_8_h100_nvlink": _predict(
                e0["order"], sum(e["nnz_per_rank_two_processes"] for e in entries),
                max((b // 4) // e0["shape"][0] for b in e0["dense_bytes"].values()),
                int(np.prod(e0["output_shape"])) * 4, e0["payload_bytes"]),  # fp32 throughout
        }
        m = measured
        ratio = measured["speedup" if key.endswith("/strong") else "efficiency"]
        print(f"{key:24s} 1 process {one['median_s'] * 1e3:7.2f} ms (min {one['min_s'] * 1e3:7.2f}) | 2 processes: "
              f"alone {slowest['local_alone'] * 1e3:7.2f}, together {slowest['local'] * 1e3:7.2f}, all_reduce "
              f"{slowest['all_reduce'] * 1e3:6.2f}, call {slowest['call'] * 1e3:7.2f} (checked "
              f"{slowest['call_checked'] * 1e3:7.2f}), rows {slowest['call_rows'] * 1e3:7.2f} ms | ratio call "
              f"{ratio['median']['call']:.2f} (min {ratio['min']['call']:.2f}), ideal {ratio['median']['ideal']:.2f} | "
              f"payload {m['payload_bytes'] / 1e6:5.2f} MB | "
              f"predicted 8xH100 speedup {results[key]['predicted_8_h100_nvlink']['speedup_full']:.2f} "
              f"(rows {results[key]['predicted_8_h100_nvlink']['speedup_rows']:.2f})")
    from perf.timing import cpu_model

    meta = {
        "host": platform.node(), "cpu": cpu_model(), "cores": os.cpu_count(),
        "date": datetime.date.today().isoformat(), "python": platform.python_version(),
        "versions": {"torch": torch.__version__, "numpy": np.__version__},
        "git_commit": _git_commit(), "rounds": args.rounds, "elapsed_s": time.time() - started,
        "method": "2 processes x 1 Numba thread, gloo over loopback TCP; per round: the one-process call (rank 0 "
                  "alone, group of one, rank 1 waiting at a barrier), each rank's kernel alone (the other "
                  "waiting), both kernels at once, the collectives alone (after a barrier) and the whole calls; "
                  "each figure the fastest of 3 calls; reported: the median and minimum over rounds and every "
                  "round; ratios use the slower rank. The machine is a 2-core VM shared with other sessions "
                  "(load average ~5-6 during the run): two processes at once contend for the cores with them.",
        "model": MODEL,
    }
    scenarios = {}
    for name, sc in SCENARIOS.items():
        out_bytes = sc["n"] * sc["width"] * 4
        scenarios[name] = {**sc, "predicted_8_h100_nvlink": _predict(sc["order"], sc["nnz"], sc["width"], out_bytes,
                                                                     out_bytes)}
        p = scenarios[name]["predicted_8_h100_nvlink"]
        print(f"predicted only: {name}: T1 {p['t1_s'] * 1e3:.1f} ms, 8 GPUs {p['t8_full_s'] * 1e3:.2f} ms, speedup "
              f"{p['speedup_full']:.2f} (rows {p['speedup_rows']:.2f})")
    path = ROOT / "perf" / "results" / f"dist-scaling-{meta['host']}-{meta['date']}.json"
    path.write_text(json.dumps({"meta": meta, "results": results, "predicted_only": scenarios}, indent=1) + "\n")
    print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
