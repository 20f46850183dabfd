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


@dataclass(frozen=True)
class CatalogProgram:
    """A program of several statements (or one with a sparse output): symmetric intermediates."""

    name: str
    text: str
    symmetric: dict = field(default_factory=dict)
    formats: dict = field(default_factory=dict)
    outputs: tuple[str, ...] | None = None
    description: str = ""


PROGRAMS: dict[str, CatalogProgram] = {
    p.name: p
    for p in (
        CatalogProgram("gram_spmv", "T[i,j] += A[i,k]*A[j,k]\ny[i] += T[i,j]*x[j]",
                       description="(A Aᵀ) x: half of the Gram matrix computed, stored and read"),
        CatalogProgram("gram_spmv_sparse", "T[i,j] += A[i,k]*A[j,k]\ny[i] += T[i,j]*x[j]", formats={"A": "csr"},
                       description="(A Aᵀ) x with sparse A: the Gram matrix stored as canonical nonzeros"),
        CatalogProgram("ssyrk_sparse", "C[i,j] += A[i,k]*A[j,k]", formats={"A": "csr", "C": "coo"},
                       description="sparse A Aᵀ returned as its canonical nonzeros (SpGEMM, half the products)"),
        CatalogProgram("quartic_hvp", "T[i,j] += A[i,j,k,l]*x[k]*x[l]\nh[i] += 12*T[i,j]*v[j]", {"A": "full"},
                       description="Hessian-vector product of the quartic form A x x x x"),
        CatalogProgram("ttv3_form", "T[i,j] += A[i,j,k]*x[k]\ns[] += x[i]*T[i,j]*x[j]", {"A": "full"},
                       description="A x x x through the symmetric matrix A x (order-3 TTV chain)"),
        CatalogProgram("ttv4_chain", "T[i,j,k] += A[i,j,k,l]*x[l]\nU[i,j] += T[i,j,k]*x[k]\n"
                       "s[] += x[i]*U[i,j]*x[j]", {"A": "full"},
                       description="A x x x x through symmetric order-3 and order-2 intermediates"),
        CatalogProgram("cp_als3", "M[i,r] += A[i,k,l]*B[k,r]*B[l,r]\nG[r,s] += B[k,r]*B[k,s]\n"
                       "H[r,s] += G[r,s]*G[r,s]", {"A": "full"}, outputs=("M", "H"),
                       description="one symmetric CP-ALS step: MTTKRP and the Hadamard Gram (B ← M H⁻¹)"),
    )
}


def compile_program_catalog(name: str, **options):
    """Compile catalog program `name` (options as for systec_gpu.compile)."""
    from .api import compile as compile_kernel

    if name not in PROGRAMS:
        raise KeyError(f"unknown catalog program {name!r}; known: {', '.join(PROGRAMS)}")
    entry = PROGRAMS[name]
    options.setdefault("formats", entry.formats or None)
    return compile_kernel(entry.text, symmetric=entry.symmetric or None, outputs=entry.outputs, **options)


def compile_catalog(name: str, **options):
    """Compile catalog kernel `name` (options as for systec_gpu.compile)."""
    from .api import compile as compile_kernel

    if name not in CATALOG:
        raise KeyError(f"unknown catalog kernel {name!r}; known: {', '.join(CATALOG)}")
    entry = CATALOG[name]
    options.setdefault("formats", entry.formats or None)
    return compile_kernel(entry.expression, symmetric=entry.symmetric, **options)
