"""systec_gpu: a compiler for einsums over sparse and symmetric tensors.

    import systec_gpu as sg
    k = sg.compile("y[i] += A[i,j]*x[j]", symmetric={"A": "full"})
    y = k(A=A, x=x)
"""

__version__ = "0.1.0"

from .api import Kernel, compile  # noqa: E402
from .storage import SparseTensor, SymmetricTensor  # noqa: E402


def __getattr__(name: str):
    # I/O pulls in optional readers: import it on first use.
    if name in ("load", "save", "io"):
        import importlib

        # import_module, not `from . import io`: the latter asks this __getattr__ for "io" again.
        io = importlib.import_module(f"{__name__}.io")
        return io if name == "io" else getattr(io, name)
    raise AttributeError(f"module 'systec_gpu' has no attribute {name!r}")


__all__ = ["Kernel", "SparseTensor", "SymmetricTensor", "compile", "load", "save"]
