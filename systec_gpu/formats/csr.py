"""CSR: a matrix's rows as positions, row pointers, the column coordinate per nonzero."""

from __future__ import annotations

from .base import StorageFormat


class Csr(StorageFormat):
    key = name = "csr"
    row_pointers = True
    sparse_output = True
    tile_note = "CSR driver walked as nonzeros: its row index is expanded per nonzero at the launch"

    def modes_error(self, tensor: str, ndim: int) -> str | None:
        if ndim != 2:
            return f"formats[{tensor!r}] = 'csr' needs a matrix, {tensor} has {ndim} modes"
        return None

    def arrays(self, ndim: int) -> tuple[tuple[str, int | None], ...]:
        return (("pointers", None), *(("coords", mode) for mode in range(1, ndim)))

    def lead_array(self, ndim: int) -> tuple[str, int | None] | None:
        return None

    def loop_levels(self, tensor: str, indices: tuple) -> tuple[tuple[tuple, frozenset], ...]:
        return ((("rows", tensor), frozenset(indices[:1])), (("nonzeros", tensor), frozenset(indices[1:])))


CSR = Csr()
