"""The catalog: named kernels of the SySTeC paper as expressions plus symmetry declarations.

Golden snapshots of each kernel's explained program and generated source live in
`kernels/golden/` at the repository root (refresh: `python kernels/refresh_golden.py`).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class CatalogKernel:
    name: str
    expression: str
    symmetric: dict = field(default_factory=dict)
    formats: dict = field(default_factory=dict)
    description: str = ""


CATALOG: dict[str, CatalogKernel] = {
    k.name: k
    for k in (
        CatalogKernel("ssymv", "y[i] += A[i,j]*x[j]", {"A": "full"},
                      description="symmetric sparse matrix times vector"),
        CatalogKernel("syprd", "y[] += x[i]*A[i,j]*x[j]", {"A": "full"},
                      description="symmetric quadratic form x^T A x"),
        CatalogKernel("ssymm", "Y[i,r] += A[i,j]*X[j,r]", {"A": "full"},
                      description="symmetric sparse matrix times dense matrix"),
        CatalogKernel("ssyrk", "C[i,j] += A[i,k]*A[j,k]", {},
                      description="A times its transpose: output symmetry found automatically"),
        CatalogKernel("ttm", "C[i,j,l] += A[k,j,l]*B[k,i]", {"A": "full"},
                      description="symmetric 3-D tensor times matrix"),
        CatalogKernel("mttkrp3", "C[i,j] += A[i,k,l]*B[l,j]*B[k,j]", {"A": "full"},
                      description="3-D symmetric MTTKRP"),
        CatalogKernel("mttkrp4", "C[i,j] += A[i,k,l,m]*B[k,j]*B[l,j]*B[m,j]", {"A": "full"},
                      description="4-D symmetric MTTKRP"),
        CatalogKernel("mttkrp5", "C[i,j] += A[i,k,l,m,n]*B[k,j]*B[l,j]*B[m,j]*B[n,j]", {"A": "full"},
                      description="5-D symmetric MTTKRP"),
        CatalogKernel("bellman", "y[i] min= A[i,j] + x[j]", {"A": "full"},
                      description="one Bellman-Ford step over a symmetric (undirected) graph"),
    )
}


def compile_catalog(name: str, **options):
    """Compile catalog kernel `name` (options as for systec_gpu.compile)."""
    from .api import compile as compile_kernel

    if name not in CATALOG:
        raise KeyError(f"unknown catalog kernel {name!r}; known: {', '.join(CATALOG)}")
    entry = CATALOG[name]
    options.setdefault("formats", entry.formats or None)
    return compile_kernel(entry.expression, symmetric=entry.symmetric, **options)
