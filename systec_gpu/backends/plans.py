"""Plans: which code runs a compiled einsum on each backend, decided in one place.

`choose_plan(program, loops, backend)` is a pure function of the einsum program, its symmetrized
loop program and the backend; the runtime's Launch runs the plan. Plans:

- "generated": the generated kernel of the symmetrized loops (the default; always on the
  reference backend, the oracle of the symmetry passes);
- "expanded": the generated kernel of the same expression without exploiting symmetry, when the
  symmetric schedule cannot do less dense work than it. A symmetric sparse operand times a dense
  operand along a rank axis (SSYMM, `Y[i,r] += A[i,j]*X[j,r]`): each canonical nonzero updates
  two rows of R lanes where the expanded kernel's two nonzeros update one each, so the rank loop
  does the same work and the symmetric schedule saves only the reads of the sparse coordinates
  and values, while its mirrored rows are scattered read-modify-writes on the CPU (measured on a
  2-core Xeon, R = 16: 0.9-1.07x of the expanded kernel; perf/cpu.py) and atomic adds of R lanes
  on the GPU (measured on an H200, R = 16-128: 0.8-1.0x on a 3-D stencil, 0.16-0.19x on mdual and
  G3_circuit; GPU_EVIDENCE). The symmetric operand is still stored once: the expanded structure
  is derived from it and cached with it, the values gathered on every call;
- "blas_syrk" (CPU): a dense symmetric-output contraction BLAS computes, `C[i,j] +=
  A[i,k]*A[j,k]` (or `A[k,i]*A[k,j]`) with A dense: ?syrk from scipy.linalg.blas computes the
  upper triangle (half the multiply-adds of a GEMM, at BLAS speed) into an uninitialized buffer,
  and a serial Numba pass mirrors it (`_fill_lower`). numpy's `A @ A.T` does the same (it detects the
  transposed pair and calls ?syrk, then mirrors with a plain loop), so the two are within a few
  percent of each other on the kernel; see perf/README.md;
- "cublas_syrk" (GPU): the same contraction; float32 at full precision calls cuBLAS through
  torch (a GEMM: torch has no SYRK, and cuBLAS's fp32 GEMM still beat the generated triangle
  kernel, which does half its multiply-adds, 3.3x on an H200), other dtypes run the generated
  kernel (float64: tl.dot on the fp64 tensor cores, 1.5x faster than cuBLAS's GEMM).
The generated kernel stays for sparse operands.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from math import factorial

import numpy as np

from ..ir.einsum import Access, Call, Program
from ..ir.loop import DenseLoop, LoopProgram, Update
from ..ir.traverse import walk
from ..passes.loop_nest import unnest
from ..pipeline import lower_and_optimize, symmetrize
from .parameters import sparse_loop

# The symmetric schedule must cut the dense (rank-axis) work by at least this factor to be
# chosen over the expanded one (it also pays scattered mirrored updates and a combine).
MIN_DENSE_WORK_SAVING = 1.5


@dataclass(frozen=True)
class Plan:
    name: str  # "generated" | "expanded" | "blas_syrk" | "cublas_syrk"
    loops: LoopProgram  # the loop program a generated kernel runs (and binds the call's tensors)
    reason: str
    syrk: tuple[str, bool] | None = None  # *_syrk: (tensor, True for A*A^T / False for A^T*A)


def syrk_form(program: Program) -> tuple[str, bool] | None:
    """(tensor, A*A^T?) when the program is `C[i,j] += A[i,k]*A[j,k]` (or `A[k,i]*A[k,j]`) over
    (+, *) with A dense and no declared symmetry of A: what BLAS ?syrk computes."""
    einsum = program.einsum
    reduce = einsum.semiring.reduce
    out = einsum.output.indices
    rhs = einsum.rhs
    if reduce.name != "add" or len(out) != 2 or out[0] == out[1]:
        return None
    if not (isinstance(rhs, Call) and rhs.op == "mul" and len(rhs.args) == 2):
        return None
    a, b = rhs.args
    if not (isinstance(a, Access) and isinstance(b, Access) and a.tensor == b.tensor):
        return None
    if len(a.indices) != 2 or program.format_of(a.tensor).sparse or program.groups_of(a.tensor):
        return None
    i, j = out
    for first, second in ((a, b), (b, a)):
        (p, k), (q, k2) = first.indices, second.indices
        if (p, q) == (i, j) and k == k2 and k not in out:
            return a.tensor, True  # C = A A^T
        (k, p), (k2, q) = first.indices, second.indices
        if (p, q) == (i, j) and k == k2 and k not in out:
            return a.tensor, False  # C = A^T A
    return None


def _innermost_dense_loop(loops: LoopProgram) -> DenseLoop | None:
    headers = [level.header for level in unnest(loops.body) if level.header is not None]
    return headers[-1] if headers and isinstance(headers[-1], DenseLoop) else None


def dense_work_saving(program: Program, symmetric: LoopProgram, expanded: LoopProgram) -> float | None:
    """How many times less rank-axis work the symmetric loops do than the expanded ones, per
    strictly off-diagonal nonzero: (g! expanded nonzeros x their updates) / (the canonical
    nonzero's updates). None when the comparison does not apply: no sparse driver, no innermost
    rank loop, or dense loops with canonical bounds (those save work of their own)."""
    loop = sparse_loop(symmetric)
    inner = _innermost_dense_loop(symmetric)
    if loop is None or loop.expanded or inner is None or _innermost_dense_loop(expanded) is None:
        return None
    if any(isinstance(n, DenseLoop) and (n.lower or n.upper) for n in walk(symmetric.body)):
        return None
    copies = 1
    for group in program.groups_of(loop.tensor):
        copies *= factorial(len(group))
    base = [u for u in walk(inner.body) if isinstance(u, Update)]
    if symmetric.tables:  # updates with a zero factor off the diagonal do no work there
        base = [u for u, f in zip(base, symmetric.tables[0].rows[0], strict=False) if f != 0]
    expanded_updates = sum(isinstance(n, Update) for n in walk(expanded.body))
    return copies * expanded_updates / max(len(base), 1)


# Where each backend's plans were measured (the reasons `explain()` gives cite them).
GPU_EVIDENCE = "perf/results/gpu-nvidia-h200-2026-11-27.json"

_PLANS: dict[tuple[LoopProgram, str], tuple[Program, Plan]] = {}


def choose_plan(program: Program, loops: LoopProgram, backend: str) -> Plan:
    """The plan that runs `program` (symmetrized into `loops`) on `backend` ("numba", "triton",
    "reference"), with the reason. Memoized on the loop program and backend (the loop program's
    hash is cached; hashing the einsum program costs ~5 us, a tenth of a small SSYMV), the
    program checked on a hit."""
    hit = _PLANS.get((loops, backend))
    if hit is not None and (hit[0] is program or hit[0] == program):
        return hit[1]
    if len(_PLANS) >= 256:
        _PLANS.clear()
    plan = _choose_plan(program, loops, backend)
    _PLANS[(loops, backend)] = (program, plan)
    return plan


def cpu_plan(program: Program, loops: LoopProgram) -> Plan:
    """The Numba backend's plan (`choose_plan(program, loops, "numba")`)."""
    return choose_plan(program, loops, "numba")


def _choose_plan(program: Program, loops: LoopProgram, backend: str) -> Plan:
    if backend == "reference":  # the oracle of the symmetry passes runs what they produced
        return Plan("generated", loops, "the loop-IR interpreter runs the symmetrized loops")
    gpu = backend != "numba"
    syrk = syrk_form(program)
    if syrk is not None:
        tensor, aat = syrk
        product = f"{tensor}*{tensor}^T" if aat else f"{tensor}^T*{tensor}"
        if gpu:
            return Plan("cublas_syrk", loops, f"{tensor} is dense: float32 calls cuBLAS through torch ({product} "
                        "as a GEMM, full fp32 precision unless torch's float32 matmul precision is lowered: then "
                        "the generated kernel), 3.3x faster than the generated triangle kernel at 8192 x 2048; "
                        f"other dtypes run the generated kernel (float64 1.5x faster than cuBLAS; {GPU_EVIDENCE})",
                        syrk)
        return Plan("blas_syrk", loops, f"{tensor} is dense: BLAS ?syrk computes the upper triangle of "
                    f"{product} (half a GEMM's multiply-adds), mirrored serially", syrk)
    loop = sparse_loop(loops)
    if loop is not None and not loop.expanded:
        expanded = lower_and_optimize(symmetrize(program, exploit=False))
        saving = dense_work_saving(program, loops, expanded)
        if saving is not None and saving < MIN_DENSE_WORK_SAVING:
            cost = ("atomic adds of R lanes, which cost more than the reads they save (SSYMM on an H200: the "
                    f"symmetric kernel ran 0.8-1.0x as fast as the expanded one on a 3-D stencil, 5-6x slower on "
                    f"mdual and G3_circuit; {GPU_EVIDENCE})") if gpu else "scattered read-modify-writes"
            return Plan("expanded", expanded,
                        f"the symmetric schedule cuts the rank-loop work only {saving:.2g}x (each canonical "
                        f"nonzero of {loop.tensor} updates as many rows as its expanded copies do), so it saves "
                        f"only the reads of {loop.tensor}'s coordinates and values and pays mirrored row "
                        f"updates as {cost}: the expanded kernel runs")
    return Plan("generated", loops, "the generated kernel of the symmetrized loops")


def describe_plan(program: Program, loops: LoopProgram) -> str:
    """The plan of each device's backend, a line each, for `Kernel.explain()`."""
    return "\n".join(f"{device} plan: {plan.name}: {plan.reason}"
                     for device, plan in (("cpu", choose_plan(program, loops, "numba")),
                                          ("gpu", choose_plan(program, loops, "triton"))))


# ---------------------------------------------------------------------------------------------
# Running a plan


@functools.cache
def _fill_lower():
    """The mirror kernel (numba is imported on first use: `import systec_gpu` stays light)."""
    import numba

    @numba.njit(cache=True, nogil=True)
    def fill_lower(t):
        """t[j, i] = t[i, j] for j > i (t C-contiguous, its upper triangle computed). Up to 1024
        rows, row by row: row j is written contiguously from column j, whose cache lines serve
        the next columns too while the n lines stay in L2 (n = 400: 36 us vs 58 us tiled, fp64;
        1000: 0.52 vs 0.58 ms, fp32 0.35 vs 0.50 ms, on the 2-core VM). Larger, in 16 x 16
        tiles: each tile's rows are written contiguously while the strided column reads stay in
        L1 (n = 2000-4000: 1.5-2.6x faster than row by row). Serial on purpose: right after
        ?syrk, BLAS's worker threads spin-wait on the other cores, and a parallel pass waits for
        them to yield (on a 2-core VM, a scheduler time slice of 4-8 ms for a pass of 0.03-1 ms)."""
        n = t.shape[0]
        if n <= 1024:
            for j in range(1, n):
                for i in range(j):
                    t[j, i] = t[i, j]
            return
        for i0 in range(0, n, 16):
            i1 = min(i0 + 16, n)
            for j0 in range(i0, n, 16):
                for j in range(j0, min(j0 + 16, n)):
                    for i in range(i0, min(i1, j)):
                        t[j, i] = t[i, j]

    return fill_lower


@functools.cache
def _syrk_routines() -> dict:
    """scipy's ?syrk wrappers by dtype, looked up once (scipy loads on first use; an import
    statement in the call costs 2 us a call)."""
    from scipy.linalg import blas

    return {np.dtype(np.float32): blas.ssyrk, np.dtype(np.float64): blas.dsyrk}


def _syrk(a: np.ndarray, aat: bool) -> np.ndarray:
    """The lower triangle of a a^T (aat) or a^T a in Fortran order (the upper one of its C-ordered
    transpose); a is C-contiguous, so a.T is the Fortran-ordered operand BLAS reads without a
    copy. The output is an uninitialized Fortran array BLAS writes in place (beta = 0: C is not
    read), not the zero-filled one scipy would allocate: 10-25% of ?syrk's time at 400 x 32 and
    1500 x 64 on the 2-core VM."""
    n = a.shape[0] if aat else a.shape[1]
    if a.size == 0:
        return np.zeros((n, n), dtype=a.dtype, order="F")
    routines = _syrk_routines()
    routine = routines.get(a.dtype) or routines[np.dtype(np.float64)]
    c = np.empty((n, n), dtype=a.dtype, order="F")
    return routine(1.0, a.T, beta=0.0, c=c, trans=1 if aat else 0, lower=1, overwrite_c=1)


def syrk_full(a: np.ndarray, aat: bool) -> np.ndarray:
    """a a^T (aat) or a^T a, both triangles, C-contiguous: ?syrk, then the mirror."""
    c = _syrk(a, aat).T  # the same matrix (symmetric), C-contiguous, its upper triangle computed
    _fill_lower()(c)
    return c


@functools.lru_cache(maxsize=256)
def syrk_runner(plan: Plan):
    """The "blas_syrk" plan's run on bound arguments (backends.arguments.KernelArgs of
    `plan.loops`), what it reads of the plan looked up once: fills them with the plan's result,
    both halves, written by BLAS and the mirror (the runtime clears the lower half for callers
    that asked for the canonical part only)."""
    tensor, aat = bound_product(plan)

    def run(args) -> None:
        args.partial = syrk_full(np.ascontiguousarray(args.dense[tensor]), aat)[None]
        args.chunks = 1
        args.output_mirrored = True

    return run


def bound_product(plan: Plan) -> tuple[str, bool]:
    """A *_syrk plan's (tensor, A*A^T?) as its operand is bound: an operand bound transposed
    (layout (1, 0)) swaps the product's sides."""
    tensor, aat = plan.syrk
    return tensor, (not aat) if plan.loops.layout_of(tensor) == (1, 0) else aat


def full_precision_float32_matmul() -> bool:
    """Whether torch's CUDA float32 matmuls run at full fp32 precision (its default): TF32 would
    change a result the generated kernel computes with exact fp32 products."""
    import torch

    return not torch.backends.cuda.matmul.allow_tf32 and torch.get_float32_matmul_precision() == "highest"


def cublas_applies(a, dtype) -> bool:
    """Whether the "cublas_syrk" plan hands operand `a` (bound for a kernel computing in `dtype`)
    to cuBLAS: a float32 CUDA tensor computed in float32 at full precision."""
    import torch

    return (isinstance(a, torch.Tensor) and a.is_cuda and a.dtype == torch.float32
            and np.dtype(dtype) == np.float32 and full_precision_float32_matmul())


def run_cublas_syrk(plan: Plan, generated, loops: LoopProgram, args) -> None:
    """The "cublas_syrk" plan: float32 CUDA operands at full precision through torch's GEMM
    (both halves), anything else through `generated(loops, args)`, the generated kernel."""

    tensor, aat = bound_product(plan)
    a = args.dense[tensor]
    if not cublas_applies(a, args.dtype):
        generated(loops, args)
        return
    args.partial = (a @ a.T if aat else a.T @ a)[None]
    args.chunks = 1
    args.output_mirrored = True
