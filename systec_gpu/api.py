"""The public entry point: `compile(expr, ...) -> Kernel`."""

from __future__ import annotations

import hashlib
import re
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .backends import registry
from .backends.plans import describe_plan
from .formats.choice import describe as describe_formats
from .inputs import check_values
from .ir.einsum import Program, format_program
from .ir.loop import LoopProgram, format_loop_program
from .ir.symmetrized import Symmetrized
from .pipeline import front, lower_and_optimize, symmetrize
from .program import ProgramKernel, compile_program, is_program
from .runtime import KernelArgs, Launch
from .spgemm import SparseOutputKernel

BACKENDS = (registry.AUTO, *registry.BACKENDS)
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _kernel_name(text: str, program: Program, exploit: bool, backend: str, accumulate: str | None = None) -> str:
    # The backend is part of the op: torch.ops.systec.<name> runs this kernel's backend.
    stem = re.sub(r"\W+", "_", program.einsum.output.tensor).strip("_") or "k"
    key = f"{format_program(program)}|{exploit}" + ("" if backend == registry.AUTO else f"|{backend}")
    key += f"|{accumulate}" if accumulate else ""
    # formats that print alike but differ (a default COO that CPUs may read as CSF, a declared COO)
    key += "".join(f"|{tensor}:{fmt.key}" for tensor, fmt in program.formats if fmt.key != fmt.name)
    digest = hashlib.sha256(key.encode()).hexdigest()[:10]
    return f"{stem}_{'sym' if exploit else 'nosym'}_{digest}"


_TORCH_OPS = []  # the torch_ops module, once imported (it imports torch: not at `import systec_gpu`)


def _torch_ops():
    if not _TORCH_OPS:
        from . import torch_ops

        _TORCH_OPS.append(torch_ops)
    return _TORCH_OPS[0]


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
        self._last_loops: LoopProgram | None = None
        self._stats: dict | None = None
        self._launches: dict[str, Launch] = {}  # backend name -> prepared launch
        self.accumulate: str | None = None  # compute dtype override (compile's accumulate=)
        self._kernel_op = None  # its torch op (torch_ops.kernel_op), once registered

    def __repr__(self) -> str:
        return f"Kernel({self.expression!r}, symmetry={self.symmetrized.exploit}, backend={self.backend!r})"

    def _backend_for(self, tensors: dict[str, Any]) -> str:
        if self.backend != registry.AUTO:
            return self.backend
        on_gpu = any(
            type(t) is not np.ndarray  # host arrays, the common case: nothing to ask
            and (getattr(getattr(t, "device", None), "type", None) == "cuda"
                 or getattr(getattr(getattr(t, "values", None), "device", None), "type", None) == "cuda"
                 or type(t).__module__.split(".")[0] == "cupy")
            for t in tensors.values()
        )
        return registry.DEFAULT_FOR_DEVICE["cuda" if on_gpu else "cpu"]

    def launch(self, backend: str) -> Launch:
        """The prepared launch of this kernel on `backend` (made on first use, then reused)."""
        found = self._launches.get(backend)
        if found is None:
            found = self._launches[backend] = Launch(self.loops, self.program, registry.backend(backend),
                                                     accumulate=self.accumulate)
        return found

    def __call__(self, *, check: bool = True, canonical_output: bool = False, out=None, group=None,
                 output: str = "full", stream_chunk: int | None = None, **tensors: Any):
        """Run the kernel. `check` verifies declared symmetry of the inputs; with
        `canonical_output` a symmetric output holds only its canonical part (the rest is the
        reduction's identity); `out` is a preallocated result tensor (shape, dtype, device
        checked) that is written and returned.

        `group` (a torch.distributed process group: the sparse operand is this rank's shard),
        `output="rows"` (this rank's row block only) and `stream_chunk` (the sparse operand in
        chunks of that many nonzeros, out of core): see `systec_gpu.distributed`.

        Calls that autograd records (an input requiring grad), calls traced by torch.compile and
        calls under torch.func transforms go through the kernel's custom op (`kernel.op`), whose
        implementation is the same launch as every other call's."""
        if group is not None or output != "full" or stream_chunk is not None:
            from . import distributed  # imports torch: only calls that ask for it pay for it

            return distributed.call(self, tensors, group=group, output=output, stream_chunk=stream_chunk, check=check,
                                    canonical_output=canonical_output, out=out)
        # only torch inputs can need the op, and they import torch
        needs_op = _TORCH_OPS[0].needs_op if _TORCH_OPS else _torch_ops().needs_op if "torch" in sys.modules else None
        if needs_op is not None and needs_op(tensors):
            if canonical_output:
                raise NotImplementedError("canonical_output=True has no gradient and cannot be traced: call "
                                          "the kernel outside autograd (torch.no_grad()) for canonical storage")
            return _TORCH_OPS[0].apply(self, tensors, check=check, out=out)
        backend = self.backend if self.backend != registry.AUTO else self._backend_for(tensors)
        return self.call_direct(tensors, backend=backend, check=check, canonical=canonical_output, out=out)

    def call_direct(self, tensors: dict[str, Any], *, backend: str, check: bool = True, canonical: bool = False,
                    out=None):
        """The kernel's launch on `backend`, without the torch op (no autograd): what every call runs."""
        if check and self.program.einsum.values != "real":
            check_values(self.program, tensors)
        launch = self._launches.get(backend) or self.launch(backend)
        args, result = launch(tensors, check=check, canonical=canonical, out=out)
        self._last, self._last_loops, self._stats = args, launch.loops, None  # the loops that ran (a CPU plan's)
        return result

    def related(self, expression: str, *, symmetric=None, formats=None) -> Kernel:
        """Another expression compiled with this kernel's backend (e.g. a derivative)."""
        return _compile(expression, symmetric=symmetric, formats=formats, backend=self.backend, register=False,
                        accumulate=self.accumulate)

    @property
    def stats(self) -> dict:
        """Work of the last call: `work_ratio` = points visited / points of the non-symmetric kernel."""
        if self._last is None:
            raise RuntimeError("stats are measured on the kernel's last inputs: call the kernel first")
        if self._stats is None:
            from .stats import baseline_points, visited_points

            visited = visited_points(self._last_loops, self._last)
            baseline = baseline_points(self._last_loops, self._last)
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
        """The kernel as a PyTorch custom op (torch.ops.systec.<name>): torch.compile and autograd.
        Arguments: one tensor per dense operand, (indices, values, shape) per sparse one, in the
        order of first use in the expression, then `check`; `op_arguments` builds them."""
        from .torch_ops import kernel_op

        return kernel_op(self).op

    def op_arguments(self, *, check: bool = True, **tensors: Any) -> list:
        """The arguments of `kernel.op` for a call's tensors by name (e.g. for torch.library.opcheck)."""
        from .torch_ops import flatten

        return flatten(self, tensors, check=check)

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
        lines += describe_formats(self.loops)
        lines.append(describe_plan(self.program, self.loops))
        return "\n".join(lines) + "\n"

    def source(self, backend: str = "numba") -> str:
        """The generated source of `backend` ("numba", "triton" or "reference")."""
        return registry.backend(backend).source(self.loops)


def compile(  # noqa: A001 (the library's verb, like re.compile)
    expr: str,
    *,
    symmetric: Mapping[str, str | Sequence[Sequence[int]]] | None = None,
    formats: Mapping[str, str] | None = None,
    symmetry: bool = True,
    backend: str = "auto",
    loop_order: Sequence[str] | None = None,
    name: str | None = None,
    outputs: Sequence[str] | str | None = None,
    accumulate: str | None = None,
    values: str | None = None,
) -> Kernel | ProgramKernel | SparseOutputKernel:
    """Compile `expr` (e.g. "y[i] += A[i,j]*x[j]") into a kernel.

    symmetric: tensor -> "full" or mode groups (naming the output declares output symmetry).
    formats: tensor -> "dense" | "coo" | "csr" | "csf" (symmetric inputs default to "csr" for matrices,
        for higher orders to COO, read as CSF on the CPU where that reads fewer bytes); "coo"/"csr" for
        the output of a Gram product (C[i,j] += A[i,k]*A[j,k]) gives a sparse symmetric output.
    symmetry: False compiles the same expression without exploiting symmetry (the baseline).
    backend: "auto" (Triton on CUDA tensors, Numba otherwise), "numba", "triton", "reference".
    loop_order: index names, outermost first (a sparse operand's indices come first).
    outputs: for a program (statements separated by ';' or line breaks), the tensors to return
        (default: the last statement's output).
    accumulate: "float32" or "float64", the dtype a kernel computes and returns in (default: the
        widest float given, float16/bfloat16 inputs in float32). On the Triton path float16 and
        bfloat16 operands are read as they are and widened where they are loaded.
    values: the domain of every operand's values, "real" (default) or "nonnegative" (checked at
        each call); it picks the semiring: `y[i] max= A[i,j]*x[j]` with a sparse A is (max, *),
        whose unstored entries are 0, only over non-negative values (algebra.SEMIRING_ROWS).

    One statement with a dense output gives a Kernel; a program a ProgramKernel (systec_gpu/program.py);
    one statement with a sparse output a SparseOutputKernel (systec_gpu/spgemm.py).
    """
    if accumulate is not None and accumulate not in ("float32", "float64"):
        raise ValueError(f"accumulate must be 'float32' or 'float64', got {accumulate!r}")
    if is_program(expr, formats, outputs):
        if accumulate is not None:
            raise NotImplementedError("accumulate= applies to single statements; programs compute in their "
                                      "inputs' dtype")
        if values is not None:
            raise NotImplementedError("values= applies to single statements")
        registry.check_name(backend)
        return compile_program(expr, compile_statement=_compile, symmetric=symmetric, formats=formats,
                               symmetry=symmetry, backend=backend, loop_order=loop_order, name=name, outputs=outputs)
    return _compile(expr, symmetric=symmetric, formats=formats, symmetry=symmetry, backend=backend,
                    loop_order=loop_order, name=name, accumulate=accumulate, values=values)


def _compile(expr: str, *, symmetric=None, formats=None, symmetry: bool = True, backend: str = "auto",
             loop_order=None, name: str | None = None, register: bool = True, accumulate: str | None = None,
             values: str | None = None) -> Kernel:
    """`compile`; `register=False` leaves the torch op to be registered by the caller (derivative
    kernels: their ops are registered without derivatives of their own)."""
    registry.check_name(backend)
    if name is not None and not _NAME.fullmatch(name):
        raise ValueError(f"kernel name {name!r} must be an identifier (letters, digits, _; not starting with a "
                         "digit): it names the torch op torch.ops.systec.<name>")
    program = front(expr, symmetric, formats, values)
    symmetrized = symmetrize(program, exploit=symmetry)
    loops = lower_and_optimize(symmetrized, loop_order)
    kernel = Kernel(expr, program, symmetrized, loops, backend,
                    name or _kernel_name(expr, program, symmetry, backend, accumulate))
    kernel.accumulate = accumulate
    if register:
        # torch.ops.systec.<name> exists from now on (torch is imported here, not by `import systec_gpu`)
        from .torch_ops import kernel_op

        kernel_op(kernel)
    return kernel
