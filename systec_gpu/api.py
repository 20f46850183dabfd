"""The public entry point: `compile(expr, ...) -> Kernel`."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from typing import Any

from .backends.plans import cpu_plan, describe_plan, run_cpu_plan
from .ir.einsum import Program, format_program
from .ir.loop import LoopProgram, format_loop_program
from .ir.symmetrized import Symmetrized
from .pipeline import front, lower_and_optimize, symmetrize
from .runtime import KernelArgs, bind, finish

BACKENDS = ("auto", "numba", "reference", "triton")


def _kernel_name(text: str, program: Program, exploit: bool) -> str:
    stem = re.sub(r"\W+", "_", program.einsum.output.tensor).strip("_") or "k"
    digest = hashlib.sha256(f"{format_program(program)}|{exploit}".encode()).hexdigest()[:10]
    return f"{stem}_{'sym' if exploit else 'nosym'}_{digest}"


class Kernel:
    """A compiled einsum. Call it with the tensors by name; it returns a dense torch.Tensor on the
    inputs' device (on the Triton backend, a CuPy array for CuPy inputs: DLPack, no copies)."""

    def __init__(self, text: str, program: Program, symmetrized: Symmetrized, loops: LoopProgram,
                 backend: str, name: str):
        self.expression = text
        self.program = program
        self.symmetrized = symmetrized
        self.loops = loops
        self.backend = backend
        self.name = name
        self._last: KernelArgs | None = None
        self._stats: dict | None = None

    def __repr__(self) -> str:
        return f"Kernel({self.expression!r}, symmetry={self.symmetrized.exploit}, backend={self.backend!r})"

    def _backend_for(self, tensors: dict[str, Any]) -> str:
        if self.backend != "auto":
            return self.backend
        on_gpu = any(
            getattr(getattr(t, "device", None), "type", None) == "cuda"
            or type(t).__module__.split(".")[0] == "cupy"
            for t in tensors.values()
        )
        return "triton" if on_gpu else "numba"

    def __call__(self, *, check: bool = True, canonical_output: bool = False, **tensors: Any):
        """Run the kernel. `check` verifies declared symmetry of the inputs; with
        `canonical_output` a symmetric output holds only its canonical part (the rest is the
        reduction's identity)."""
        backend = self._backend_for(tensors)
        loops = self.loops
        if backend == "numba":  # the CPU plan: generated kernel, expanded kernel or BLAS (backends/plans.py)
            plan = cpu_plan(self.program, self.loops)
            if (ran := run_cpu_plan(plan, self.program, tensors, check=check, canonical=canonical_output)) is not None:
                (self._last, result), self._stats = ran, None
                return result
            loops = plan.loops
        # Triton: dense torch/CuPy operands stay on their device, and so does the result.
        args = bind(loops, self.program, tensors, check=check, device_tensors=backend == "triton")
        if backend == "reference":
            from .backends.reference import run_reference

            run_reference(loops, args)
        elif backend == "numba":
            from .backends.numba_backend import run_numba

            run_numba(loops, args)
        elif backend == "triton":
            from .backends.triton_backend import run_triton

            run_triton(loops, args)
        else:
            raise ValueError(f"unknown backend {backend!r}; known: {', '.join(BACKENDS)}")
        self._last, self._stats = args, None
        return finish(args, loops, self.program, canonical=canonical_output)

    @property
    def stats(self) -> dict:
        """Work of the last call: `work_ratio` = points visited / points of the non-symmetric kernel."""
        if self._last is None:
            raise RuntimeError("stats are measured on the kernel's last inputs: call the kernel first")
        if self._stats is None:
            from .stats import baseline_points, visited_points

            visited = visited_points(self.loops, self._last)
            baseline = baseline_points(self.loops, self._last)
            self._stats = {
                "visited_points": visited,
                "baseline_points": baseline,
                "work_ratio": visited / baseline if baseline else 1.0,
                "stored_nonzeros": self._last.driver.nnz if self._last.driver else None,
                "expanded_nonzeros": self._last.driver.n_expanded if self._last.driver else None,
            }
        return dict(self._stats)

    @property
    def op(self):
        """The kernel as a PyTorch custom op (torch.ops.systec.<name>): torch.compile and autograd."""
        from .torch_ops import kernel_op

        return kernel_op(self).op

    def explain(self) -> str:
        """The symmetrized program: what symmetry was found, the loops, the factor table."""
        lines = ["einsum:", *(f"  {line}" for line in format_program(self.program).splitlines())]
        if not self.symmetrized.exploit:
            lines.append("symmetry: not exploited (symmetry=False)")
        for permutable in self.symmetrized.sets:
            order = " <= ".join(i.name for i in permutable.indices)
            names = ", ".join(i.name for i in permutable.indices)
            lines.append(f"permutable ({names}): {permutable.origin}; visit {order}")
        lines.append(format_loop_program(self.loops))
        lines.append(describe_plan(self.program, self.loops))
        return "\n".join(lines) + "\n"

    def source(self, backend: str = "numba") -> str:
        """The generated source of `backend` ("numba", "triton" or "reference")."""
        if backend == "numba":
            from .backends.numba_backend import numba_source

            return numba_source(self.loops)
        if backend == "triton":
            from .backends.triton_backend import triton_source

            return triton_source(self.loops)
        if backend == "reference":
            return format_loop_program(self.loops)
        raise ValueError(f"unknown backend {backend!r}; known: numba, triton, reference")


def compile(  # noqa: A001 (the library's verb, like re.compile)
    expr: str,
    *,
    symmetric: Mapping[str, str | Sequence[Sequence[int]]] | None = None,
    formats: Mapping[str, str] | None = None,
    symmetry: bool = True,
    backend: str = "auto",
    loop_order: Sequence[str] | None = None,
    name: str | None = None,
) -> Kernel:
    """Compile `expr` (e.g. "y[i] += A[i,j]*x[j]") into a kernel.

    symmetric: tensor -> "full" or mode groups (naming the output declares output symmetry).
    formats: tensor -> "dense" | "coo" | "csr" (symmetric inputs default to "coo").
    symmetry: False compiles the same expression without exploiting symmetry (the baseline).
    backend: "auto" (Triton on CUDA tensors, Numba otherwise), "numba", "triton", "reference".
    loop_order: index names, outermost first (a sparse operand's indices come first).
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; known: {', '.join(BACKENDS)}")
    program = front(expr, symmetric, formats)
    symmetrized = symmetrize(program, exploit=symmetry)
    loops = lower_and_optimize(symmetrized, loop_order)
    return Kernel(expr, program, symmetrized, loops, backend, name or _kernel_name(expr, program, symmetry))
