"""Sparse symmetric outputs: `C[i,j] += A[i,k]*A[j,k]` (times weights over k) as canonical nonzeros.

A statement whose output is declared sparse (`formats={"C": "coo"}`, or a sparse intermediate of a
program) returns a `SymmetricTensor` holding only the canonical nonzeros (i <= j) of its output.
The form it accepts is a Gram product C = R·diag(w)·Rᵀ:

    C[i,j] += A[i,k] * A[j,k]            R = A        (A·Aᵀ)
    C[i,j] += A[k,i] * A[k,j]            R = Aᵀ       (Aᵀ·A)
    C[i,j] += A[i,k] * d[k] * A[j,k]     w = d        (any number of vectors over k, and numbers)

with A symmetric or not (a symmetric A is read expanded: C = A·A). Any other statement with a
sparse output is refused with the reason. Its output is symmetric in (i, j) by the same proof as
the dense kernel's (swap i and j, rename k: `identify_symmetry` finds it), so only the canonical
part is computed: a symbolic phase counts the canonical entries of each output row, a numeric
phase fills them (row-wise accumulator on Numba; expand-sort-compress on Triton; a numpy
expand-sort-compress on the reference backend, the oracle of the other two).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .backends import registry
from .formats import sparse_output_spellings
from .frontend.declare import DeclarationError
from .inputs import check_tensor_names, result_dtype, to_numpy, to_storage, value_dtype
from .ir.einsum import Access, Call, Index, Literal, Program, format_program
from .ir.symmetrized import Symmetrized
from .storage import SparseTensor, SymmetricTensor

SPARSE_FORMATS = sparse_output_spellings()  # spellings of a sparse symmetric output


class SparseOutputError(DeclarationError):
    """A sparse output was asked of a statement that has no sparse-output kernel; says why."""


@dataclass(frozen=True)
class GramForm:
    """C[i,j] = scale * sum_k R[i,k] * prod(w[k] for w in weights) * R[j,k], R = A or Aᵀ."""

    tensor: str
    transposed: bool  # R = Aᵀ (A accessed as A[k,i], A[k,j])
    row: Index
    column: Index
    reduction: Index
    weights: tuple[str, ...]
    scale: float
    symmetric_input: bool  # A declared symmetric: read expanded (both triangles)

    def describe(self) -> str:
        r = f"{self.tensor}ᵀ" if self.transposed else self.tensor
        w = "".join(f"·diag({name})" for name in self.weights)
        scale = "" if self.scale == 1.0 else f"{self.scale!r}·"
        return f"{self.row.name}<={self.column.name} part of {scale}R{w}·Rᵀ with R = {r}"


def _factors(expr) -> list:
    if isinstance(expr, Call) and expr.op == "mul":
        return [f for arg in expr.args for f in _factors(arg)]
    return [expr]


def gram_form(program: Program) -> GramForm:
    """The Gram form of `program`'s statement, or SparseOutputError saying why it has none."""
    einsum = program.einsum
    output = einsum.output
    shown = format_program(program).splitlines()[0]

    def refuse(why: str) -> SparseOutputError:
        return SparseOutputError(
            f"{output.tensor} cannot be a sparse output of {shown}: {why}. A sparse output is computed for "
            "Gram products C[i,j] += A[i,k]*A[j,k] (or A[k,i]*A[k,j], times vectors over k); give "
            f"formats={{{output.tensor!r}: 'dense'}} (the default) otherwise")

    if einsum.reduce != "+=":
        raise refuse(f"its reduction is {einsum.reduce}, not +=")
    if len(output.indices) != 2:
        raise refuse(f"{output} has {len(output.indices)} modes, not 2")
    factors = _factors(einsum.rhs)
    scale, matrices, vectors = 1.0, [], []
    for factor in factors:
        if isinstance(factor, Literal):
            scale *= factor.value
        elif isinstance(factor, Access) and len(factor.indices) == 2:
            matrices.append(factor)
        elif isinstance(factor, Access) and len(factor.indices) == 1:
            vectors.append(factor)
        else:
            raise refuse(f"its right-hand side is not a product of one matrix read twice and vectors ({factor})")
    if len(matrices) != 2 or matrices[0].tensor != matrices[1].tensor:
        raise refuse("its right-hand side does not read one matrix exactly twice")
    first, second = matrices
    i, j = output.indices
    shared = set(first.indices) & set(second.indices)
    if len(shared) != 1 or i == j:
        raise refuse("the two reads of the matrix do not share exactly one index")
    (k,) = shared
    if {first.indices[0], first.indices[1]} != {i, k} or {second.indices[0], second.indices[1]} != {j, k}:
        if {first.indices[0], first.indices[1]} == {j, k} and {second.indices[0], second.indices[1]} == {i, k}:
            first, second = second, first
        else:
            raise refuse(f"the reads of {first.tensor} are not {first.tensor}[{i},{k}] and {first.tensor}[{j},{k}]")
    symmetric = bool(program.groups_of(first.tensor))
    k_mode_first, k_mode_second = first.indices.index(k), second.indices.index(k)
    if not symmetric and k_mode_first != k_mode_second:
        raise refuse(f"{first} * {second} is a product of {first.tensor} with its transpose's transpose "
                     "(not symmetric)")
    for vector in vectors:
        if vector.indices != (k,):
            raise refuse(f"{vector} is not a vector over the reduction index {k}")
    return GramForm(first.tensor, (not symmetric) and k_mode_first == 0, i, j, k,
                    tuple(v.tensor for v in vectors), scale, symmetric)


# ---------------------------------------------------------------------------------------------
# Structure: R in CSR and in CSC, and where each CSR entry sits in the CSC (cached per structure)


@dataclass
class GramStructure:
    """R (n x m) in CSR (rows sorted) and in CSC (`csc_perm`: the CSR position of each CSC entry),
    with `tpos`: the CSC position of each CSR entry. Depends on R's structure only."""

    n: int
    m: int
    row: np.ndarray  # row of each CSR entry
    rowptr: np.ndarray
    col: np.ndarray
    tpos: np.ndarray
    colptr: np.ndarray
    csc_row: np.ndarray
    csc_perm: np.ndarray
    value_order: np.ndarray | None  # CSR position -> position in the storage's values (None: same)
    products: int  # canonical products: sum over columns of c (c + 1) / 2
    full_products: int  # products of the non-symmetric SpGEMM R·Rᵀ: sum of c²
    device_copies: dict = field(default_factory=dict, repr=False)
    # derived from the structure only, never from values: the output's structure as a backend found
    # it (backend -> its arrays), row blocks per thread count
    outputs: dict = field(default_factory=dict, repr=False)

    nnz = property(lambda self: int(self.col.shape[0]))

    def row_bounds(self, chunks: int) -> np.ndarray:
        """Boundaries of `chunks` contiguous row blocks with equal shares of the canonical products
        (int64, chunks + 1 entries; cached per chunk count)."""
        key = ("row_bounds", chunks)
        if key not in self.outputs:
            per_nonzero = self.colptr[self.col + 1] - self.tpos
            work = np.zeros(self.n + 1, dtype=np.int64)
            np.cumsum(np.bincount(self.row, weights=per_nonzero, minlength=self.n).astype(np.int64), out=work[1:])
            targets = np.linspace(0, work[-1], chunks + 1)
            bounds = np.searchsorted(work, targets, side="left").astype(np.int64)
            bounds[0], bounds[-1] = 0, self.n
            self.outputs[key] = np.maximum.accumulate(bounds)
        return self.outputs[key]

    def on(self, device) -> dict:
        """The index arrays as torch tensors on `device` (made once per device)."""
        import torch

        key = str(device)
        if key not in self.device_copies:
            names = ("row", "rowptr", "col", "tpos", "colptr", "csc_row", "csc_perm")
            self.device_copies[key] = {n: torch.from_numpy(getattr(self, n)).to(device) for n in names}
        return self.device_copies[key]


def _compressed_by_column(rowptr: np.ndarray, cols: np.ndarray, shape: tuple[int, int]):
    """(colptr, rows, positions) of a CSR pattern regrouped by column, rows ascending within each
    column, `positions` the CSR position of each entry: scipy's counting sort (csr_tocsc)."""
    import scipy.sparse as sp

    positions = np.arange(cols.shape[0], dtype=np.int64)
    csc = sp.csr_matrix((positions, cols, rowptr), shape=shape).tocsc()
    return (csc.indptr.astype(np.int64, copy=False), csc.indices.astype(np.int64, copy=False),
            csc.data.astype(np.int64, copy=False))


def gram_structure(storage: SparseTensor, transposed: bool) -> GramStructure:
    """The GramStructure of R = storage (or its transpose), cached on the storage's structure."""
    key = ("gram_structure", transposed)
    found = storage._cache.get(key)
    if found is not None:
        return found
    coordinates = to_numpy(storage.indices)  # the structure is built on the host (storage may be on a GPU)
    rows_a = np.ascontiguousarray(coordinates[0], dtype=np.int64)
    cols_a = np.ascontiguousarray(coordinates[1], dtype=np.int64)
    rowptr_a = np.zeros(storage.shape[0] + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows_a, minlength=storage.shape[0]), out=rowptr_a[1:])
    value_order = None
    if transposed:  # R's rows are A's columns: R in CSR is A grouped by column
        n, m = storage.shape[1], storage.shape[0]
        rowptr, cols, value_order = _compressed_by_column(rowptr_a, cols_a, storage.shape)
    else:
        n, m = storage.shape
        rowptr, cols = rowptr_a, cols_a
    rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(rowptr))
    colptr, csc_row, csc_perm = _compressed_by_column(rowptr, cols, (n, m))
    tpos = np.empty_like(csc_perm)
    tpos[csc_perm] = np.arange(csc_perm.shape[0], dtype=np.int64)
    per_column = np.diff(colptr)
    structure = GramStructure(
        n, m, rows, rowptr, np.ascontiguousarray(cols), tpos, colptr, csc_row, csc_perm, value_order,
        int((per_column * (per_column + 1) // 2).sum()), int((per_column * per_column).sum()))
    storage._cache[key] = structure
    return structure


def reference_gram(structure: GramStructure, values: np.ndarray, weight: np.ndarray):
    """The canonical part of R·diag(w)·Rᵀ by numpy expand-sort-compress: (indices, values, products
    per row). The oracle of the Numba and Triton kernels (another algorithm, same answer)."""
    s = structure
    counts = s.colptr[s.col + 1] - s.tpos
    total = int(counts.sum())
    owner = np.repeat(np.arange(s.nnz, dtype=np.int64), counts)
    slot = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
    q = s.tpos[owner] + slot
    keys = s.row[owner] * max(s.n, 1) + s.csc_row[q]
    products = values[owner] * weight[s.col[owner]] * values[s.csc_perm[q]]
    order = np.argsort(keys, kind="stable")
    keys, products = keys[order], products[order]
    starts = np.flatnonzero(np.concatenate([[True], keys[1:] != keys[:-1]])) if total else np.zeros(0, np.int64)
    sums = np.add.reduceat(products, starts) if total else np.zeros(0, values.dtype)
    unique = keys[starts]
    indices = np.stack((unique // max(s.n, 1), unique % max(s.n, 1))) if total else np.zeros((2, 0), np.int64)
    per_row = np.bincount(s.row, weights=counts, minlength=s.n).astype(np.int64)
    return indices.astype(np.int64), sums.astype(values.dtype, copy=False), per_row


def _output_tensor(structure: GramStructure, indices: np.ndarray, values) -> SymmetricTensor:
    """The output as a SymmetricTensor; when a backend kept the output's structure (a repeat call
    returns the same indices array), the tensors of all calls share one structure and its caches
    (validity, CSR pointers, diagonal classes) through `with_values`."""
    kept = structure.outputs.get("tensor")
    if kept is None or kept[0] is not indices:
        shape = (structure.n, structure.n)
        kept = structure.outputs["tensor"] = (indices, SymmetricTensor(indices, np.zeros(0), shape, [(0, 1)],
                                                                       check=False))
    return kept[1].with_values(values)


# ---------------------------------------------------------------------------------------------
# The kernel


class SparseOutputKernel:
    """A statement with a sparse symmetric output. Called with its tensors by name, it returns a
    `SymmetricTensor` of the output's canonical nonzeros (values on the inputs' device)."""

    def __init__(self, text: str, program: Program, symmetrized: Symmetrized, form: GramForm, output_format: str,
                 backend: str, name: str):
        self.expression = text
        self.program = program  # the statement with its output declared dense (what the dense kernel would be)
        self.symmetrized = symmetrized
        self.form = form
        self.output_format = output_format
        self.backend = backend
        self.name = name
        self._last: dict | None = None

    def __repr__(self) -> str:
        return f"SparseOutputKernel({self.expression!r}, output={self.output_format}, backend={self.backend!r})"

    @property
    def inputs(self) -> tuple[str, ...]:
        return (self.form.tensor, *dict.fromkeys(self.form.weights))

    def _backend_for(self, tensors: dict) -> str:
        if self.backend != registry.AUTO:
            return self.backend
        for t in tensors.values():
            value = t.values if isinstance(t, SparseTensor) else t
            if getattr(getattr(value, "device", None), "type", None) == "cuda":
                return "triton"
        return "numba"

    def __call__(self, *, check: bool = True, canonical_output: bool = True, out=None, **tensors: Any):
        """Run the statement. The result is always canonical storage (`canonical_output` is
        accepted for symmetry with Kernel); `out=` is refused (the output's size is found by
        the symbolic phase)."""
        import torch

        from .torch_ops import needs_op

        if out is not None:
            raise ValueError(f"out= cannot receive the sparse output {self.program.einsum.output.tensor}: its "
                             "number of nonzeros is found by the call")
        if needs_op(tensors):
            raise NotImplementedError(f"{self.program.einsum.output.tensor} is a sparse output: it has no gradient and "
                                      "cannot be traced (call the statement under torch.no_grad())")
        form = self.form
        check_tensor_names(self.inputs, tensors, self.program.einsum.output.tensor)
        dtype = result_dtype([value_dtype(n, tensors[n]) for n in self.inputs])
        a = tensors[form.tensor]
        groups = self.program.groups_of(form.tensor)
        storage = to_storage(form.tensor, a, groups, check)
        storage.validate(form.tensor)
        if isinstance(storage, SymmetricTensor):
            storage = storage.expanded()
        if storage.ndim != 2:
            raise ValueError(f"{form.tensor} has {storage.ndim} modes (shape {storage.shape}) but is used as a matrix")
        structure = gram_structure(storage, form.transposed)
        weight = np.full(structure.m, form.scale, dtype=dtype)
        for name in form.weights:
            vector = to_numpy(tensors[name]).astype(dtype, copy=False)
            if vector.shape != (structure.m,):
                raise ValueError(f"size mismatch for index {form.reduction}: {form.tensor} has size {structure.m} "
                                 f"there but {name} has shape {tuple(vector.shape)}")
            weight = weight * vector
        values = storage.values
        device = values.device if isinstance(values, torch.Tensor) else None
        backend = self._backend_for(tensors)
        if backend == "triton":
            from .backends.sparse_output_triton import gram_canonical

            tv = torch.as_tensor(to_numpy(values) if device is None else values.detach())
            tv = tv.to(dtype=getattr(torch, dtype.name))
            if structure.value_order is not None:
                tv = tv[torch.from_numpy(structure.value_order).to(tv.device)]
            indices, out_values, per_row = gram_canonical(structure, tv.contiguous(),
                                                          torch.from_numpy(weight).to(tv.device))
            indices = indices.cpu().numpy()
        else:
            host = np.ascontiguousarray(to_numpy(values), dtype=dtype)
            if structure.value_order is not None:
                host = host[structure.value_order]
            if backend == "numba":
                from .backends.sparse_output_numba import gram_canonical

                indices, out_values, per_row = gram_canonical(structure, host, weight)
            else:
                indices, out_values, per_row = reference_gram(structure, host, weight)
            out_values = torch.from_numpy(out_values)
            if device is not None and device.type != "cpu":
                out_values = out_values.to(device)
        self._last = {"structure": structure, "per_row": per_row, "nnz": int(indices.shape[1])}
        return _output_tensor(structure, indices, out_values)

    @property
    def stats(self) -> dict:
        """Work of the last call: canonical products against the non-symmetric SpGEMM's (R·Rᵀ, both
        halves), stored output entries against the full output's."""
        if self._last is None:
            raise RuntimeError("stats are measured on the kernel's last inputs: call the kernel first")
        s = self._last["structure"]
        stored = self._last["nnz"]
        return {
            "visited_points": s.products,
            "baseline_points": s.full_products,
            "work_ratio": s.products / s.full_products if s.full_products else 1.0,
            "stored_nonzeros": stored,
        }

    def explain(self) -> str:
        lines = ["einsum:", *(f"  {line}" for line in format_program(self.program).splitlines())]
        out = self.program.einsum.output.tensor
        for permutable in self.symmetrized.sets:
            order = " <= ".join(i.name for i in permutable.indices)
            names = ", ".join(i.name for i in permutable.indices)
            lines.append(f"permutable ({names}): {permutable.origin}; visit {order}")
        f = self.form
        i, j, k = f.row.name, f.column.name, f.reduction.name
        lines += [
            f"sparse output {out} [{self.output_format}]: canonical nonzeros ({i} <= {j}) as a SymmetricTensor",
            f"  {f.describe()}" + (f"; {f.tensor} read expanded (symmetric)" if f.symmetric_input else ""),
            f"  symbolic: for each row {i} of R, count the distinct {j} >= {i} over ({i}, {k}) in row {i} and "
            f"({j}, {k}) in column {k} from the position of ({i}, {k}) on",
            f"  numeric: the same walk adds R[{i},{k}]*w[{k}]*R[{j},{k}] into row {i}'s accumulator; each row "
            "written once, columns sorted",
            "  numba: rows dealt to threads cyclically, a dense accumulator per thread; triton: expand (one "
            "program per nonzero), sort, compress; reference: numpy expand-sort-compress",
        ]
        return "\n".join(lines) + "\n"

    def source(self, backend: str = "numba") -> str:
        """The source of the sparse-output kernels of `backend` (hand-written, not generated)."""
        import inspect

        if backend == "numba":
            from .backends import sparse_output_numba as module
        elif backend == "triton":
            from .backends import sparse_output_triton as module
        elif backend == "reference":
            return inspect.getsource(reference_gram)
        else:
            registry.backend(backend)  # the error for an unknown name
            raise ValueError(f"no sparse-output kernel for backend {backend!r}")
        return inspect.getsource(module)


def compile_sparse_output(text: str, program: Program, symmetrized: Symmetrized, output_format: str, backend: str,
                          name: str) -> SparseOutputKernel:
    """The sparse-output kernel of a statement (`program` declares its output dense), or
    SparseOutputError saying why it has none."""
    if output_format not in SPARSE_FORMATS:
        raise SparseOutputError(f"unknown sparse output format {output_format!r}; known: {', '.join(SPARSE_FORMATS)}")
    form = gram_form(program)
    registry.check_name(backend)
    return SparseOutputKernel(text, program, symmetrized, form, output_format, backend, name)

