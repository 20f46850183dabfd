"""The table of backends: what each is called, where it runs, how it emits and runs a kernel.

Read by the API (`backend=` names, "auto", `Kernel.source`), the torch op (its CPU and CUDA
implementations), the CLI and the golden files. A new backend is one module plus one row here.
Backend modules are imported on first use: numba and triton are heavy, and `import systec_gpu`
stays fast.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Backend:
    name: str
    module: str  # the module that emits and runs its kernels
    run_function: str  # run(loops, args): fills args.partial (see backends/arguments.py)
    prepare_function: str | None  # prepare(loops) -> run, with per-program lookups done once
    source_function: str  # source(loops) -> str: the generated code, readable
    devices: frozenset[str]  # torch device types whose tensors it computes on
    device_tensors: bool  # dense operands bound as torch tensors on their device (else host numpy)
    description: str
    # specialize(loops, args) -> run(args) | None: a run for the calls bound like `args` (one input
    # signature), everything that does not change between them decided once (runtime.Launch)
    specialize_function: str | None = None

    def _get(self, attribute: str) -> Callable:
        return getattr(importlib.import_module(self.module), attribute)

    @property
    def run(self) -> Callable:
        return self._get(self.run_function)

    def prepare(self, loops) -> Callable:
        """A `run(loops, args)` for this program, its per-program lookups done once."""
        return self._get(self.prepare_function)(loops) if self.prepare_function else self.run

    def specializer(self) -> Callable | None:
        return self._get(self.specialize_function) if self.specialize_function else None

    def source(self, loops) -> str:
        return self._get(self.source_function)(loops)


BACKENDS: dict[str, Backend] = {
    b.name: b
    for b in (
        Backend("numba", "systec_gpu.backends.numba_backend", "run_numba", "prepare_numba", "numba_source",
                frozenset({"cpu"}), False,
                "generated Numba code, parallel over chunks of the outer loop (CPU)", "specialize_numba"),
        Backend("triton", "systec_gpu.backends.triton_backend", "run_triton", None, "triton_source",
                frozenset({"cuda"}), True,
                "generated Triton kernels over sparse coordinate or dense triangle tiles (GPU; TRITON_INTERPRET=1 "
                "runs them on the CPU)", "specialize_triton"),
        Backend("reference", "systec_gpu.backends.reference", "run_reference", None, "reference_source",
                frozenset({"cpu"}), False, "the loop-IR interpreter in Python: the oracle of the symmetry passes"),
    )
}

AUTO = "auto"  # the backend of the inputs' device: triton for CUDA (and CuPy), numba otherwise
DEFAULT_FOR_DEVICE = {"cuda": "triton", "cpu": "numba"}


def backend(name: str) -> Backend:
    try:
        return BACKENDS[name]
    except KeyError:
        known = ", ".join((AUTO, *BACKENDS))
        raise ValueError(f"unknown backend {name!r}; known: {known}") from None


def check_name(name: str) -> str:
    """`name` if it is a backend or "auto", else ValueError listing them."""
    if name != AUTO:
        backend(name)
    return name
