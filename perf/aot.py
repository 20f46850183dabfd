"""Ahead-of-time sm_90 compilation of every catalog kernel, without a GPU (DESIGN.md section 8).

    python perf/aot.py [--arch sm_90] [--kernels ssymv,mttkrp3] [--out DIR | --json PATH]

Each catalog kernel, symmetric and `symmetry=False`, is bound to a stated realistic input
(STATED_INPUTS: shapes and nonzero counts only, as torch "meta" tensors, no data), scheduled as
the runtime would schedule it (`choose_schedule`), emitted, specialized as Triton's own launcher
would (its binder: ints equal to 1 become constants, 16-divisible ones and 16-aligned pointers
are marked), compiled by `triton.compile` for the target, and read back:

- registers, spill bytes (stores + loads) and shared memory from `ptxas -v` on the kernel's PTX;
- atomics from the SASS (`cuobjdump -sass`): every ATOM/RED; *fenced* ones have a MEMBAR or
  ERRBAR just before or an L1 invalidate (CCTL.IVALL) just after (Triton's default acq_rel);
  *vector* ones move several elements (e.g. `RED.E.ADD.F32x4...`).

Writes JSON (default perf/results/aot-<arch>-<date>.json) and prints a table. Needs triton (its
wheel ships ptxas and cuobjdump) and torch; no CUDA device, no TRITON_INTERPRET.
Triton APIs relied on (present in 3.6 and 3.9): triton.compile, triton.compiler.ASTSource,
triton.compiler.make_backend, triton.backends.compiler.GPUTarget,
triton.runtime.jit.create_function_from_signature and JITFunction._pack_args.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from systec_gpu.catalog import CATALOG, compile_catalog  # noqa: E402


@dataclass(frozen=True)
class StatedInput:
    """A realistic input, by its sizes: index name -> extent, the canonical nonzeros of the
    sparse operand (the expanded count for symmetry=False), nonzeros per row of CSR drivers."""

    description: str
    sizes: dict
    nnz: int = 0
    expanded_nnz: int = 0
    dtype: str = "float32"


_MATRIX = dict(nnz=31_000_000, expanded_nnz=60_000_000)  # 2M rows, 30 nonzeros per row (both halves)
STATED_INPUTS: dict[str, StatedInput] = {
    "ssymv": StatedInput("2M rows, 30 nonzeros per row (31M canonical)", {"i": 2_000_000, "j": 2_000_000}, **_MATRIX),
    "syprd": StatedInput("2M rows, 30 nonzeros per row (31M canonical)", {"i": 2_000_000, "j": 2_000_000}, **_MATRIX),
    "bellman": StatedInput("2M rows, 30 nonzeros per row (31M canonical)", {"i": 2_000_000, "j": 2_000_000}, **_MATRIX),
    "ssymm": StatedInput("2M rows, 30 nonzeros per row, R=32", {"i": 2_000_000, "j": 2_000_000, "r": 32}, **_MATRIX),
    "ssyrk": StatedInput("dense A 8192 x 8192", {"i": 8192, "j": 8192, "k": 8192}),
    # TTM's output is dense (size x size x R): size 3000 keeps it at 1.2 GB
    "ttm": StatedInput("3-D, size 3000, 2M canonical nonzeros, R=32", {"i": 32, "j": 3000, "k": 3000, "l": 3000},
                       2_000_000, 12_000_000),
    "mttkrp3": StatedInput("3-D, size 100k, 2M canonical nonzeros, R=32",
                           {"i": 100_000, "j": 32, "k": 100_000, "l": 100_000}, 2_000_000, 12_000_000),
    "mttkrp4": StatedInput("4-D, size 50k, 1M canonical nonzeros, R=32",
                           {"i": 50_000, "j": 32, "k": 50_000, "l": 50_000, "m": 50_000}, 1_000_000, 24_000_000),
    "mttkrp5": StatedInput("5-D, size 20k, 300k canonical nonzeros, R=32",
                           {"i": 20_000, "j": 32, "k": 20_000, "l": 20_000, "m": 20_000, "n": 20_000},
                           300_000, 36_000_000),
}


# ---------------------------------------------------------------------------------------------
# Arguments without data


def meta_args(kernel, stated: StatedInput):
    """runtime.KernelArgs of `kernel` for `stated`: dense operands, driver arrays and output as
    torch meta tensors (shapes and dtypes, no storage); CSR pointers describe rows of equal length."""
    import torch

    from systec_gpu.backends.arguments import DriverArrays, DriverStructure, KernelArgs
    from systec_gpu.backends.parameters import sparse_loop
    from systec_gpu.ir.einsum import accesses

    program, loops = kernel.program, kernel.loops
    dtype = np.dtype(stated.dtype)
    tdtype = {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}[dtype]
    einsum = program.einsum
    shapes = {a.tensor: tuple(stated.sizes[i.name] for i in a.indices) for a in accesses(einsum.rhs)}
    out_shape = tuple(stated.sizes[i.name] for i in einsum.output.indices)
    shapes[einsum.output.tensor] = out_shape

    def laid_out(name, shape):
        perm = loops.layout_of(name)
        return tuple(shape[m] for m in perm) if perm else shape

    dense = {n: torch.empty(laid_out(n, shapes[n]) or (1,), dtype=tdtype, device="meta") for n in loops.dense_inputs}
    # masks of the stored entries of sparse operands read densely (membership guards), as uint8
    stored = {n: torch.empty(laid_out(n, shapes[n]) or (1,), dtype=torch.uint8, device="meta")
              for n in loops.stored_inputs}
    driver = None
    loop = sparse_loop(loops)
    if loop is not None:
        nnz = stated.expanded_nnz if loop.expanded else stated.nnz
        order = len(shapes[loops.driver])
        index = torch.int32 if max(shapes[loops.driver]) < 2**31 else torch.int64
        coords = tuple(torch.empty(nnz, dtype=index, device="meta") for _ in range(order))
        values = torch.empty(nnz, dtype=tdtype, device="meta")
        pointers = None
        if loop.format.row_pointers:
            rows = shapes[loops.driver][0]
            pointers = (np.arange(rows + 1, dtype=np.int64) * nnz) // rows
        driver = DriverArrays(DriverStructure(coords, pointers, nnz, stated.expanded_nnz, None), values)
    tables = {t.name: np.array(t.rows, dtype=dtype) for t in loops.tables}
    sizes = dict(stated.sizes)
    return KernelArgs(dense, driver, shapes, sizes, tables, laid_out(einsum.output.tensor, out_shape) or (1,), dtype,
                      stored=stored)


# ---------------------------------------------------------------------------------------------
# Compile and read back


def _tool(name: str, capability: int = 90) -> Path:
    """The ptxas (Triton's own choice for `capability`) or cuobjdump that the triton wheel ships."""
    import triton

    if name == "ptxas":
        from triton.backends.nvidia.compiler import get_ptxas

        return Path(get_ptxas(capability).path)
    return Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / name


def toolchain_available() -> bool:
    """ptxas and cuobjdump of the installed triton wheel can run here."""
    try:
        return all(subprocess.run([str(_tool(t)), "--version"], capture_output=True).returncode == 0
                   for t in ("ptxas", "cuobjdump"))
    except (OSError, ImportError):
        return False


@contextlib.contextmanager
def _jit_mode():
    """Kernels decorated inside get a real JITFunction even when TRITON_INTERPRET is set."""
    saved = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "0"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("TRITON_INTERPRET", None)
        else:
            os.environ["TRITON_INTERPRET"] = saved


def _jit_kernel(source: str):
    """The `kernel` of generated `source` as a JITFunction (compiled, not interpreted)."""
    import importlib.util

    from systec_gpu.backends.cache import source_path

    path = source_path(source, "triton")
    if not path.exists():
        path.write_text(source)
    spec = importlib.util.spec_from_file_location(f"systec_aot.{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    with _jit_mode():
        spec.loader.exec_module(module)
    return module.kernel


def _target(arch: str):
    from triton.backends.compiler import GPUTarget

    match = re.fullmatch(r"sm_(\d+)a?", arch)
    if not match:
        raise ValueError(f"--arch must look like sm_90, got {arch!r}")
    return GPUTarget("cuda", int(match.group(1)), 32)


def compile_launch(launch, arch: str = "sm_90"):
    """triton.compile of a prepared launch, specialized as Triton's launcher would."""
    import triton
    from triton.compiler import ASTSource, make_backend
    from triton.runtime.jit import create_function_from_signature

    fn = _jit_kernel(launch.source)
    target = _target(arch)
    backend = make_backend(target)
    binder = create_function_from_signature(fn.signature, fn.params, backend)
    kwargs = {"num_warps": launch.num_warps}
    bound, specialization, options = binder(**launch.values, **kwargs)
    options, signature, constexprs, attrs = fn._pack_args(backend, kwargs, bound, specialization, options)
    return triton.compile(ASTSource(fn, signature, constexprs, attrs), target=target, options=options.__dict__)


def ptxas_report(ptx: str, arch: str) -> dict:
    """Registers, spill bytes and shared memory of `ptx`, from `ptxas -v`."""
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "kernel.ptx"
        source.write_text(ptx)
        gpu = re.search(r"^\.target\s+(\S+)", ptx, re.M)
        gpu_name = gpu.group(1).split(",")[0] if gpu else arch
        command = [str(_tool("ptxas", _target(arch).arch)), "-v", f"--gpu-name={gpu_name}", str(source),
                   "-o", str(Path(tmp) / "kernel.cubin")]
        done = subprocess.run(command, capture_output=True, text=True)
    log = done.stdout + done.stderr
    if done.returncode != 0:
        raise RuntimeError(f"ptxas failed:\n{log}")

    def number(pattern: str) -> int:
        found = re.search(pattern, log)
        return int(found.group(1)) if found else 0

    return {
        "registers": number(r"Used (\d+) registers"),
        "spill_store_bytes": number(r"(\d+) bytes spill stores"),
        "spill_load_bytes": number(r"(\d+) bytes spill loads"),
        "stack_bytes": number(r"(\d+) bytes stack frame"),
        "static_shared_bytes": number(r"(\d+) bytes smem"),
    }


_ATOMIC = re.compile(r"^(ATOMG?|REDG?)(\.|$)")  # global ATOM/RED (not ATOMS, not the warp-wide REDUX)
_FENCE_BEFORE = re.compile(r"^(MEMBAR|ERRBAR|CGAERRBAR)")
_FENCE_AFTER = re.compile(r"^CCTL\.IVALL")
_VECTOR = re.compile(r"\.(F16|BF16|F32|F64)x\d|\.V\d|\.64x\d|x[248]\b")


def sass_opcodes(cubin: bytes) -> list[str]:
    """The SASS instructions of `cubin`, opcode with modifiers first (predicates dropped)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "kernel.cubin"
        path.write_bytes(cubin)
        done = subprocess.run([str(_tool("cuobjdump")), "-sass", str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"cuobjdump failed:\n{done.stderr}")
    instructions = []
    for line in done.stdout.splitlines():
        found = re.match(r"\s*/\*[0-9a-f]{4,}\*/\s+(.*?);", line)
        if found:
            text = re.sub(r"^@!?U?P[T0-9]+\s+", "", found.group(1).strip())
            instructions.append(text)
    return instructions


def atomic_report(instructions: list[str]) -> dict:
    """Global atomics (ATOM*/RED*; shared-memory ATOMS excluded), the fenced ones and the vector ones."""
    atomics = fenced = vector = 0
    kinds: dict[str, int] = {}
    for k, text in enumerate(instructions):
        opcode = text.split()[0]
        if not _ATOMIC.match(opcode):
            continue
        atomics += 1
        kinds[opcode] = kinds.get(opcode, 0) + 1
        # acq_rel: MEMBAR.ALL.GPU; ERRBAR; CGAERRBAR; ATOMG; CCTL.IVALL (fences adjacent to it)
        before = []
        for t in reversed(instructions[:k]):
            o = t.split()[0]
            if not (_FENCE_BEFORE.match(o) or o.startswith("NOP")):
                break
            before.append(o)
        after = next((t.split()[0] for t in instructions[k + 1:] if not t.startswith("NOP")), "")
        if any(o.startswith("MEMBAR") for o in before) or _FENCE_AFTER.match(after):
            fenced += 1
        if _VECTOR.search(opcode):
            vector += 1
    return {"atomics": atomics, "fenced_atomics": fenced, "vector_atomics": vector, "atomic_opcodes": kinds}


def _schedule_row(schedule) -> dict:
    return {"kind": type(schedule).__name__, **asdict(schedule)}


def aot_kernel(kernel, stated: StatedInput, arch: str = "sm_90", schedule=None) -> dict:
    """Compile `kernel` (a systec_gpu Kernel) for `arch` at the schedule the runtime chooses for
    `stated` (or at `schedule`); the row of measurements (see the module docstring)."""
    from systec_gpu.backends.triton_launch import choose_schedule, prepare_launch

    row = {"input": stated.description, "dtype": stated.dtype}
    started = time.perf_counter()
    try:
        args = meta_args(kernel, stated)
        schedule = schedule or choose_schedule(kernel.loops, args, arch)
        row["schedule"] = _schedule_row(schedule)
        launch = prepare_launch(kernel.loops, args, schedule, device="meta", arch=arch)
        row["programs"] = int(np.prod(launch.grid))
        row["buffers"] = launch.tiles.buffers
        compiled = compile_launch(launch, arch)
        row.update(ptxas_report(compiled.asm["ptx"], arch))
        row["spill_bytes"] = row["spill_store_bytes"] + row["spill_load_bytes"]
        row["shared_bytes"] = int(compiled.metadata.shared)
        row["num_warps"] = int(compiled.metadata.num_warps)
        instructions = sass_opcodes(compiled.asm["cubin"])
        row["sass_instructions"] = len(instructions)
        row.update(atomic_report(instructions))
        row["mma_instructions"] = sum(1 for t in instructions if re.match(r"^(HMMA|DMMA|HGMMA|IMMA)", t))
        row["compiled"] = True
    except Exception as error:  # a row per kernel: one failure must not hide the others
        row["compiled"] = False
        row["error"] = f"{type(error).__name__}: {error}"
    row["seconds"] = round(time.perf_counter() - started, 2)
    return row


def aot_row(name: str, symmetry: bool, arch: str = "sm_90", stated: StatedInput | None = None,
            schedule=None) -> dict:
    """aot_kernel of catalog kernel `name` at its stated input (default STATED_INPUTS[name])."""
    kernel = compile_catalog(name, backend="triton", symmetry=symmetry)
    return {"kernel": name, "symmetry": symmetry, **aot_kernel(kernel, stated or STATED_INPUTS[name], arch, schedule)}


def run(names: list[str], arch: str, dtypes=("float32",)) -> dict:
    import torch
    import triton

    rows = []
    for name in names:
        for dtype in dtypes:
            stated = STATED_INPUTS[name]
            if dtype != stated.dtype:
                stated = StatedInput(stated.description, stated.sizes, stated.nnz, stated.expanded_nnz, dtype)
            for symmetry in (True, False):
                rows.append(aot_row(name, symmetry, arch, stated))
                print(_format_row(rows[-1]), flush=True)
    return {"arch": arch, "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "triton": triton.__version__, "torch": torch.__version__,
            "ptxas": subprocess.run([str(_tool("ptxas", _target(arch).arch)), "--version"], capture_output=True,
                                    text=True).stdout.strip().splitlines()[-1],
            "rows": rows}


def _format_row(r: dict) -> str:
    label = f"{r['kernel']}{'' if r['symmetry'] else '.nosym'} {r['dtype']}"
    if not r["compiled"]:
        return f"{label:<22} FAILED {r.get('error', '')[:200]}"
    sched = {k: v for k, v in r["schedule"].items() if k != "kind"}
    return (f"{label:<22} regs {r['registers']:>3}  spill {r['spill_bytes']:>5}  smem {r['shared_bytes']:>6}  "
            f"warps {r['num_warps']}  atomics {r['atomics']:>3} fenced {r['fenced_atomics']:>3} "
            f"vector {r['vector_atomics']:>3}  programs {r['programs']:>9}  {r['schedule']['kind']} {sched}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="sm_90")
    parser.add_argument("--kernels", help="comma-separated catalog names (default: all)")
    parser.add_argument("--dtypes", default="float32", help="comma-separated: float32,float64")
    parser.add_argument("--out", help="folder for aot-<arch>-<date>.json (default perf/results/)")
    parser.add_argument("--json", help="exact path of the JSON to write")
    options = parser.parse_args(argv)
    os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # triton 3.9 warns when unset; 1 is its default
    if not toolchain_available():
        print("aot: ptxas/cuobjdump of the triton wheel are not runnable here", file=sys.stderr)
        return 2
    names = options.kernels.split(",") if options.kernels else list(CATALOG)
    unknown = [n for n in names if n not in CATALOG]
    if unknown:
        print(f"aot: unknown catalog kernel(s) {', '.join(unknown)}; known: {', '.join(CATALOG)}", file=sys.stderr)
        return 2
    report = run(names, options.arch, tuple(options.dtypes.split(",")))
    if options.json:
        path = Path(options.json)
    else:
        folder = Path(options.out) if options.out else Path(__file__).parent / "results"
        path = folder / f"aot-{options.arch}-{datetime.date.today().isoformat()}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {path}")
    return 0 if all(r["compiled"] for r in report["rows"]) else 1


if __name__ == "__main__":
    sys.exit(main())
