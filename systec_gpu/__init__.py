"""systec_gpu: a compiler for einsums over sparse and symmetric tensors.

    import systec_gpu as sg
    k = sg.compile("y[i] += A[i,j]*x[j]", symmetric={"A": "full"})
    y = k(A=A, x=x)
"""

__version__ = "0.1.0"

from .api import Kernel, compile  # noqa: E402
from .storage import SparseTensor, SymmetricTensor  # noqa: E402


def example_path(name: str = "bcsstk01.mtx.gz"):
    """Path of a small real data file shipped in the package: "bcsstk01.mtx.gz" (a 48x48
    symmetric stiffness matrix, SuiteSparse) or "contact-high-school_sym3_canonical.tns.gz"
    (canonical entries of a symmetric order-3 hypergraph tensor, ScHoLP)."""
    from importlib import resources
    from pathlib import Path

    path = resources.files(__name__) / "data" / name
    if not path.is_file():
        shipped = sorted(p.name for p in (resources.files(__name__) / "data").iterdir())
        raise FileNotFoundError(f"no example file {name!r}; shipped: {', '.join(shipped)}")
    return Path(str(path))


def __getattr__(name: str):
    # I/O pulls in optional readers: import it on first use.
    if name == "distributed":  # torch.distributed comes with it: on first use
        import importlib

        return importlib.import_module(f"{__name__}.distributed")
    if name in ("load", "save", "io"):
        import importlib

        # import_module, not `from . import io`: the latter asks this __getattr__ for "io" again.
        io = importlib.import_module(f"{__name__}.io")
        return io if name == "io" else getattr(io, name)
    raise AttributeError(f"module 'systec_gpu' has no attribute {name!r}")


__all__ = ["Kernel", "SparseTensor", "SymmetricTensor", "compile", "example_path", "load", "save"]
