"""Refill the device-tuned schedule table (systec_gpu/data/schedules.json) on a GPU.

    python perf/tune.py [--kernels ssymv,mttkrp3] [--table PATH] [--budget-s 300] [--candidates 16] [--tiny]

For each catalog kernel (symmetric and symmetry=False) on inputs of each shape class it is
benchmarked on (stencil matrices, SSYMM ranks, random tensors, dense SSYRK), candidate schedules
around the heuristic's (sizes, warps, row writes, segmented or not) are
  1. checked against the float64 numpy oracle on small data with every diagonal class,
  2. run on the large input and compared with the heuristic schedule's result,
  3. timed with triton.testing.do_bench (the prepared launch alone), their spills read back from
     the compiled kernel (a spilling candidate is refused),
and the fastest one that passed is written to the table for (arch, program, shape class) when it
beats the heuristic by more than 3% (the heuristic stays the fallback otherwise). Entries carry
the device, date and both timings. The table ships empty until such a run: say so when quoting it.
`--tiny` runs a few candidates on tiny data under the CPU interpreter (TRITON_INTERPRET=1; timings
are meaningless there): a smoke test of the script that writes to --table.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import math
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from triton.runtime.errors import OutOfResources

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import gpu_check  # noqa: E402  (the inputs and the timer of the GPU run)

from systec_gpu import schedule_table  # noqa: E402
from systec_gpu.backends.triton_launch import prepare_launch, problem_shape, run_triton  # noqa: E402
from systec_gpu.budget import default_schedule  # noqa: E402
from systec_gpu.catalog import CATALOG, compile_catalog  # noqa: E402
from systec_gpu.ir.einsum_interpreter import interpret_einsum  # noqa: E402
from systec_gpu.passes.lower_loops import ScheduleError  # noqa: E402
from systec_gpu.runtime import bind, finish  # noqa: E402
from systec_gpu.schedule import DenseTriangleSchedule, RowBlockSchedule, SparseTileSchedule  # noqa: E402

POWERS = [1 << k for k in range(11)]


def candidates(heuristic, count: int) -> list:
    """Legal schedules of the heuristic's kind near it (log distance), the heuristic first."""
    grid = []
    match heuristic:
        case RowBlockSchedule():
            for rows, lanes, block, write, warps in itertools.product(
                    POWERS[:9], (4, 8, 16, 32), {heuristic.dense_block, max(1, heuristic.dense_block // 2),
                                                 min(128, heuristic.dense_block * 2)},
                    ("atomic", "store"), (1, 2, 4, 8)):
                per_thread = rows * lanes * block / (32 * warps)
                if 1 <= per_thread <= 16:
                    grid.append(replace(heuristic, rows_per_block=rows, lanes_per_row=lanes, dense_block=block,
                                        row_write=write, num_warps=warps))
        case SparseTileSchedule():
            for per_tile, block, segmented, warps in itertools.product(
                    POWERS[4:], {heuristic.dense_block, max(1, heuristic.dense_block // 2),
                                 min(128, heuristic.dense_block * 2)}, (True, False), (1, 2, 4, 8)):
                per_thread = per_tile * block / (32 * warps)
                if 1 <= per_thread <= 16:
                    grid.append(replace(heuristic, nnz_per_tile=per_tile, dense_block=block, segmented=segmented,
                                        num_warps=warps))
        case DenseTriangleSchedule():
            for block, k_block, warps in itertools.product((16, 32, 64, 128), (16, 32, 64), (2, 4, 8)):
                grid.append(replace(heuristic, block=block, k_block=k_block, num_warps=warps))

    def distance(s) -> float:
        a, b = schedule_table.schedule_to_json(s), schedule_table.schedule_to_json(heuristic)
        return sum(abs(math.log2(a[k] / b[k])) if isinstance(a[k], int) and not isinstance(a[k], bool)
                   and a[k] > 0 and b[k] > 0 else float(a[k] != b[k]) for k in a if k != "kind")

    ranked = sorted({s for s in grid if s != heuristic}, key=lambda s: (distance(s), repr(s)))
    return [heuristic, *ranked[:max(0, count - 1)]]


def small_check(kernel, name: str, schedule) -> bool:
    """`schedule` (its sizes, 64-bit indices) on small data with every class vs the numpy oracle."""
    rng = np.random.default_rng(0)
    inputs = gpu_check.small_inputs(name, rng, np.float64)
    args = bind(kernel.loops, kernel.program, inputs)
    try:
        run_triton(kernel.loops, args, replace(schedule, index_bits=64))
    except (ScheduleError, OutOfResources) as error:  # too much shared memory: refused, not a crash
        gpu_check.log(f"  {schedule}: {type(error).__name__}: {error}")
        return False
    result = finish(args, kernel.loops, kernel.program).cpu().numpy()
    fill = np.inf if kernel.program.einsum.reduce == "min=" else 0.0
    expected = interpret_einsum(kernel.program.einsum, gpu_check.dense_oracle_inputs(inputs, fill))
    finite = np.isfinite(expected)
    return bool(np.array_equal(np.isfinite(result), finite)
                and np.allclose(result[finite], expected[finite], rtol=1e-10, atol=1e-10))


def tuning_inputs(tiny: bool, device) -> list[tuple[str, str, dict]]:
    """(kernel, label, inputs) per shape class the benchmarks use."""
    import torch

    rng = np.random.default_rng(1)

    def dense(*shape):
        return torch.from_numpy(rng.uniform(-1, 1, shape).astype(np.float32)).to(device)

    if tiny:
        a = gpu_check.stencil((3, 3, 3), 1)
        return [("ssymv", "stencil27 3^3", {"A": a, "x": dense(27)}),
                ("mttkrp3", "random 3-D", {"A": gpu_check.random_tensor(3, 8, 30, 4), "B": dense(8, 4)}),
                ("ssyrk", "dense 20x16", {"A": dense(20, 16)})]
    s27, s5 = gpu_check.stencil((96, 96, 96), 1), gpu_check.stencil((1024, 1024), 0)
    found = []
    for name in ("ssymv", "syprd", "bellman"):
        found += [(name, "stencil27 96^3", {"A": s27, "x": dense(96**3)}),
                  (name, "stencil5 1024^2", {"A": s5, "x": dense(1024**2)})]
    found += [("ssymm", f"stencil27 96^3 R={r}", {"A": s27, "X": dense(96**3, r)}) for r in (16, 32, 64, 128)]
    found += [("ssyrk", "dense 4096x1024", {"A": dense(4096, 1024)})]
    for name, order, size, nnz in (("ttm", 3, 2000, 1_000_000), ("mttkrp3", 3, 100_000, 1_000_000),
                                   ("mttkrp4", 4, 50_000, 300_000), ("mttkrp5", 5, 20_000, 60_000)):
        found.append((name, f"random {order}-D", {"A": gpu_check.random_tensor(order, size, nnz, order),
                                                   "B": dense(size, 32)}))
    return found


def expanded_inputs(inputs: dict) -> dict:
    return {n: (v.expanded() if hasattr(v, "expanded") else v) for n, v in inputs.items()}


def tune_one(kernel, name: str, inputs: dict, count: int, cuda: bool, arch: str | None) -> dict | None:
    """Time the candidates of one (kernel, input); the table entry if one beats the heuristic."""
    args = bind(kernel.loops, kernel.program, inputs, check=False, device_tensors=True)
    shape = problem_shape(kernel.loops, args)
    heuristic = default_schedule(kernel.loops, shape)
    reference = None
    results = []
    for schedule in candidates(heuristic, count):
        if not small_check(kernel, name, schedule):
            gpu_check.log(f"  {schedule}: wrong on the small check, refused")
            continue
        bound = bind(kernel.loops, kernel.program, inputs, check=False, device_tensors=True)
        try:
            launch = prepare_launch(kernel.loops, bound, schedule)
        except ScheduleError as error:
            gpu_check.log(f"  {schedule}: {error}")
            continue
        if launch.empty:
            return None
        try:
            compiled = launch.kernel[launch.grid](**launch.values, num_warps=launch.num_warps)
        except OutOfResources as error:
            gpu_check.log(f"  {schedule}: {error}")
            continue
        spills = getattr(compiled, "n_spills", 0) or 0
        result = finish(bound, kernel.loops, kernel.program).clone()  # timing reuses the buffers
        if reference is None:
            reference = result
        ok, err = gpu_check.close(result, reference)
        if not ok or spills:
            gpu_check.log(f"  {schedule}: refused (error {err:.1e}, spills {spills})")
            continue
        ms = gpu_check.timer(lambda launch=launch: launch.kernel[launch.grid](**launch.values,
                                                                              num_warps=launch.num_warps), cuda)
        results.append((ms, schedule, getattr(compiled, "n_regs", None)))
        gpu_check.log(f"  {ms:8.3f} ms  {schedule}")
    if not results or results[0][1] != heuristic:
        return None  # the heuristic itself failed: nothing to compare against (a bug to report)
    best_ms, best, regs = min(results, key=lambda r: r[0])
    heuristic_ms = results[0][0]
    if best == heuristic or best_ms > 0.97 * heuristic_ms:
        return None
    return {"arch": arch, "program": schedule_table.program_key(kernel.loops),
            "shape_class": schedule_table.shape_class(shape), "kernel": kernel.expression,
            "symmetry": kernel.symmetrized.exploit, "schedule": schedule_table.schedule_to_json(best),
            "ms": best_ms, "heuristic_ms": heuristic_ms, "registers": regs}


def main(argv=None) -> int:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kernels", help="comma-separated catalog names (default: all)")
    parser.add_argument("--table", default=str(schedule_table.TABLE), help="the table to update")
    parser.add_argument("--candidates", type=int, default=16, help="schedules timed per kernel and input")
    parser.add_argument("--budget-s", type=float, default=300.0, help="start no new kernel after this many seconds")
    parser.add_argument("--tiny", action="store_true", help="CPU interpreter smoke test (TRITON_INTERPRET=1)")
    options = parser.parse_args(argv)
    cuda = torch.cuda.is_available() and not options.tiny
    if not cuda and os.environ.get("TRITON_INTERPRET") != "1":
        print("no CUDA device: run with --tiny and TRITON_INTERPRET=1", file=sys.stderr)
        return 2
    device = torch.device("cuda") if cuda else torch.device("cpu")
    arch = "sm_{}{}".format(*torch.cuda.get_device_capability()) if cuda else "interpreter"
    names = options.kernels.split(",") if options.kernels else list(CATALOG)
    path = Path(options.table)
    table = json.loads(path.read_text()) if path.exists() else {"version": 1, "entries": []}
    entries = {(e["arch"], e["program"], e["shape_class"]): e for e in table["entries"]}
    device_name = torch.cuda.get_device_name() if cuda else "cpu-interpreter"
    started = time.perf_counter()
    for name, label, inputs in tuning_inputs(options.tiny, device):
        if name not in names:
            continue
        for symmetry in (True, False):
            if time.perf_counter() - started > options.budget_s:
                gpu_check.log(f"budget spent: {name} {label} not tuned")
                continue
            kernel = compile_catalog(name, backend="triton", symmetry=symmetry)
            gpu_check.log(f"{name} {label} symmetry={symmetry}")
            entry = tune_one(kernel, name, inputs if symmetry else expanded_inputs(inputs),
                             2 if options.tiny else options.candidates, cuda, arch)
            if entry is not None:
                entry.update(device=device_name, date=datetime.date.today().isoformat(), input=label)
                entries[(entry["arch"], entry["program"], entry["shape_class"])] = entry
                gpu_check.log(f"  table: {entry['schedule']} ({entry['heuristic_ms']:.3f} -> {entry['ms']:.3f} ms)")
                write_table(path, table, entries)  # after every entry: a crash or timeout keeps them
    write_table(path, table, entries)
    print(f"wrote {len(table['entries'])} entries to {path}")
    return 0


def write_table(path: Path, table: dict, entries: dict) -> None:
    table["entries"] = sorted(entries.values(), key=lambda e: (e["arch"], e.get("kernel", ""), e["shape_class"]))
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(table, indent=2) + "\n")
    temporary.replace(path)
    schedule_table.load_table.cache_clear()


if __name__ == "__main__":
    sys.exit(main())
