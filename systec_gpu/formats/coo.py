"""COO: the stored (canonical) nonzeros, one coordinate per mode per nonzero, sorted."""

from __future__ import annotations

from .base import StorageFormat


class Coo(StorageFormat):
    """Coordinates of every mode per nonzero, as declared (`formats={"A": "coo"}`)."""

    key = name = "coo"
    sparse_output = True
    fibers_when_smaller = False


class CooOrCsf(Coo):
    """The default of a symmetric input of order >= 3: stored and tiled (Triton) as COO; the CPU
    backends read it as CSF on a call whose fibers read fewer bytes (formats/choice.py). Spelled
    "coo": kernels print it as the COO they were compiled for."""

    key = "coo_or_csf"
    fibers_when_smaller = True


COO = Coo()
COO_OR_CSF = CooOrCsf()
