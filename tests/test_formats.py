"""Storage formats (systec_gpu/formats/): the objects, CSF levels, and CSF drivers against the
numpy oracle on every backend that reads them (numba, reference), the Triton fallback to COO
tiles, and the rule that reads a default COO driver as CSF where that reads fewer bytes."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

import systec_gpu as sg
from systec_gpu import formats
from systec_gpu.backends import numba_backend
from systec_gpu.formats.choice import fiber_variant, read_as
from systec_gpu.formats.csf import build_fibers, coo_nbytes, fibers, reads_fewer_bytes
from systec_gpu.frontend.declare import DeclarationError
from systec_gpu.ir.einsum_interpreter import interpret_einsum
from systec_gpu.ir.loop import SparseLoop
from systec_gpu.ir.traverse import walk
from systec_gpu.runtime import bind, finish
from systec_gpu.storage import SymmetricTensor

from .symdata import symmetric_sparse

CASES = [
    ("C[i,r] += A[i,k,l]*B[l,r]*B[k,r]", 3),
    ("y[i,j] += A[i,j,k]*x[k]", 3),
    ("s[] += A[i,j,k]*x[i]*x[j]*x[k]", 3),
    ("y[i] min= A[i,j,k] + x[j] + x[k]", 3),
    ("y[i] += A[i,j,k,l]*x[j]*x[k]*x[l]", 4),
    ("C[i,r] += A[i,j,k,l]*B[j,r]*B[k,r]*B[l,r]", 4),
    ("C[i,r] += A[i,j,k,l,m]*B[j,r]*B[k,r]*B[l,r]*B[m,r]", 5),
]
SIZE = 7


def _inputs(text: str, order: int, rng, per_class: int = 3) -> dict:
    inputs = {"A": symmetric_sparse(order, SIZE, rng, per_class=per_class)}
    if "B[" in text:
        inputs["B"] = rng.uniform(-1, 1, (SIZE, 3))
    if "x[" in text:
        inputs["x"] = rng.uniform(-1, 1, SIZE)
    return inputs


def _oracle(kernel, inputs: dict) -> np.ndarray:
    arrays = {n: (v.to_dense() if isinstance(v, SymmetricTensor) else v) for n, v in inputs.items()}
    if kernel.program.einsum.reduce != "+=":
        # min/max: a missing entry is no candidate (the identity), not a zero
        arrays["A"] = np.where(arrays["A"] == 0, np.inf, arrays["A"])
    return interpret_einsum(kernel.program.einsum, arrays)


def _sparse_loop(loops) -> SparseLoop:
    return next(n for n in walk(loops.body) if isinstance(n, SparseLoop))


# ---------------------------------------------------------------------------------------------
# The objects


def test_spellings_resolve_to_format_objects():
    program = sg.compile("y[i] += A[i,j,k]*x[j]*x[k]", symmetric={"A": "full"}, formats={"A": "csf"},
                         backend="reference").program
    assert program.format_of("A") is formats.CSF and program.format_of("x") is formats.DENSE
    assert formats.resolve("csr") is formats.CSR and formats.resolve("nope") is None
    assert formats.SPELLINGS == ("dense", "coo", "csr", "csf")


def test_defaults_csr_for_matrices_coo_or_csf_above():
    ssymv = sg.compile("y[i] += A[i,j]*x[j]", symmetric={"A": "full"}, backend="reference")
    ttv = sg.compile("y[i] += A[i,j,k]*x[j]*x[k]", symmetric={"A": "full"}, backend="reference")
    assert ssymv.program.format_of("A") is formats.CSR
    assert ttv.program.format_of("A") is formats.COO_OR_CSF and str(formats.COO_OR_CSF) == "coo"


@pytest.mark.parametrize("text, fmt, message", [
    ("y[i] += A[i,j]*x[j]", "csf", "'csf' needs 3 or more modes"),
    ("y[i] += A[i,j,k]*x[j]*x[k]", "csr", "'csr' needs a matrix"),
    ("y[i] += A[i,j,k]*x[j]*x[k]", "blocked", "unknown format"),
])
def test_formats_refuse_with_a_reason(text, fmt, message):
    with pytest.raises(DeclarationError, match=message):
        sg.compile(text, symmetric={"A": "full"}, formats={"A": fmt}, backend="reference")


def test_formats_are_singletons_across_pickle():
    for fmt in (*formats.FORMATS, formats.COO_OR_CSF):
        assert pickle.loads(pickle.dumps(fmt)) is fmt


MTTKRP3 = "C[i,r] += A[i,k,l]*B[l,r]*B[k,r]"
TTV3 = "y[i] += A[i,j,k]*x[j]*x[k]"


def test_coo_and_default_coo_kernels_are_distinct_ops():
    text = MTTKRP3
    declared = sg.compile(text, symmetric={"A": "full"}, formats={"A": "coo"}, backend="numba")
    default = sg.compile(text, symmetric={"A": "full"}, backend="numba")
    assert declared.name != default.name
    assert fiber_variant(declared.loops) is None and fiber_variant(default.loops) is not None


def test_explain_states_the_rule_only_where_it_applies():
    assert "read as CSF" in sg.compile(MTTKRP3, symmetric={"A": "full"}, backend="reference").explain()
    assert "read as CSF" not in sg.compile(MTTKRP3, symmetric={"A": "full"}, formats={"A": "coo"},
                                           backend="reference").explain()
    # scalar work per nonzero: measured slower as CSF (perf/results/formats-vm-2026-11-27.json)
    assert "read as CSF" not in sg.compile(TTV3, symmetric={"A": "full"}, backend="reference").explain()


# ---------------------------------------------------------------------------------------------
# CSF levels


def test_levels_of_a_small_tensor():
    coords = [np.array(c, dtype=np.uint32) for c in ([0, 0, 0, 1, 3], [1, 1, 2, 2, 3], [2, 3, 3, 3, 3])]
    levels = build_fibers(coords, 5)
    assert [c.tolist() for c in levels.coords] == [[0, 1, 3], [1, 2, 2, 3], [2, 3, 3, 3, 3]]
    assert levels.pointers[0] is None
    assert levels.pointers[1].tolist() == [0, 2, 3, 4]
    assert levels.pointers[2].tolist() == [0, 2, 3, 4, 5]
    assert levels.root_starts.tolist() == [0, 3, 4]
    bounds = levels.chunk_bounds(2)
    assert bounds[0] == 0 and bounds[-1] == 3 and np.all(np.diff(bounds) >= 0)


def test_levels_of_no_nonzeros():
    levels = build_fibers([np.zeros(0, np.uint32)] * 3, 0)
    assert [len(c) for c in levels.coords] == [0, 0, 0]
    assert levels.pointers[1].tolist() == [0] and levels.chunk_bounds(3).tolist() == [0, 0, 0, 0]


@pytest.mark.parametrize("order", [3, 4, 5])
def test_csf_walk_visits_the_coo_nonzeros_in_order(order):
    rng = np.random.default_rng(order)
    tensor = symmetric_sparse(order, SIZE, rng, per_class=3)
    kernel = sg.compile("s[] += A[" + ",".join("ijklm"[:order]) + "]", symmetric={"A": "full"},
                        formats={"A": "csf"}, backend="reference")
    driver = bind(kernel.loops, kernel.program, {"A": tensor}).driver
    walked = list(formats.CSF.visit(driver))
    assert [p for _, p in walked] == list(range(tensor.nnz))
    expected = np.asarray(tensor.indices).T.tolist()
    assert [list(c) for c, _ in walked] == expected


# ---------------------------------------------------------------------------------------------
# CSF drivers against the oracle


@pytest.mark.parametrize("text, order", CASES)
@pytest.mark.parametrize("backend", ["numba", "reference"])
def test_csf_driver_matches_the_oracle(text, order, backend):
    rng = np.random.default_rng(order)
    kernel = sg.compile(text, symmetric={"A": "full"}, formats={"A": "csf"}, backend=backend)
    assert _sparse_loop(kernel.loops).format is formats.CSF
    inputs = _inputs(text, order, rng)
    np.testing.assert_allclose(kernel(**inputs).numpy(), _oracle(kernel, inputs), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("text, order", CASES)
@pytest.mark.parametrize("chunks", [2, 5, 40])
def test_csf_numba_chunks_match_the_oracle(text, order, chunks):
    """Chunks of CSF roots (more chunks than roots: some empty), combined over the rows they touch."""
    rng = np.random.default_rng(10 + order)
    kernel = sg.compile(text, symmetric={"A": "full"}, formats={"A": "csf"}, backend="numba")
    inputs = _inputs(text, order, rng)
    args = bind(kernel.loops, kernel.program, inputs)
    numba_backend.run_numba(kernel.loops, args, threads=chunks)
    result = finish(args, kernel.loops, kernel.program).numpy()
    np.testing.assert_allclose(result, _oracle(kernel, inputs), rtol=1e-12, atol=1e-12)


def test_csf_source_walks_one_loop_per_level():
    kernel = sg.compile("y[i,j] += A[i,j,k]*x[k]", symmetric={"A": "full"}, formats={"A": "csf"}, backend="numba")
    source = kernel.source("numba")
    assert "A_ptr1[" in source and "A_ptr2[" in source and "A_crd0[" in source
    assert "y_register" in source  # y[i,j] accumulates over the k level, written once per (i, j)


def test_empty_csf_driver():
    kernel = sg.compile("y[i] += A[i,j,k]*x[j]*x[k]", symmetric={"A": "full"}, formats={"A": "csf"}, backend="numba")
    empty = SymmetricTensor.from_canonical(np.zeros((3, 0), np.int64), np.zeros(0), (4, 4, 4), "full")
    assert np.array_equal(kernel(A=empty, x=np.ones(4)).numpy(), np.zeros(4))


def test_expanded_csf_is_read_as_coo_with_a_note():
    rng = np.random.default_rng(3)
    text = "C[i,r] += A[i,k,l]*B[l,r]*B[k,r]"
    kernel = sg.compile(text, symmetric={"A": "full"}, formats={"A": "csf"}, symmetry=False, backend="numba")
    assert _sparse_loop(kernel.loops).format is formats.COO
    assert any("declared CSF" in note and "read as COO" in note for note in kernel.loops.notes)
    inputs = _inputs(text, 3, rng)
    np.testing.assert_allclose(kernel(**inputs).numpy(), _oracle(kernel, inputs), rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# The default: COO read as CSF where CSF reads fewer bytes


def _shared_prefixes(order: int) -> SymmetricTensor:
    """Every canonical (0, 1, k...) point: two leading coordinates shared by many nonzeros."""
    n = 40
    tail = np.array([c for c in np.ndindex(*(n,) * (order - 2)) if c[0] >= 1 and list(c) == sorted(c)]).T
    coords = np.vstack([np.zeros(tail.shape[1], np.int64), np.ones(tail.shape[1], np.int64), tail])
    return SymmetricTensor.from_canonical(coords, np.linspace(0.5, 2.0, coords.shape[1]), (n,) * order, "full")


def _distinct_prefixes() -> SymmetricTensor:
    """Canonical points whose leading pairs are all distinct: CSF would only add pointers."""
    coords = np.array([[i, i + 1, i + 2] for i in range(0, 60, 3)]).T
    return SymmetricTensor.from_canonical(coords, np.linspace(0.5, 2.0, coords.shape[1]), (64,) * 3, "full")


@pytest.mark.parametrize("backend", ["numba", "reference"])
def test_default_reads_csf_where_it_reads_fewer_bytes(backend):
    kernel = sg.compile(MTTKRP3, symmetric={"A": "full"}, backend=backend)
    for tensor, expect_csf in ((_shared_prefixes(3), True), (_distinct_prefixes(), False)):
        factors = np.linspace(-1, 1, tensor.shape[0] * 3).reshape(tensor.shape[0], 3)
        inputs = {"A": tensor, "B": factors}
        args = bind(kernel.loops, kernel.program, inputs)
        assert reads_fewer_bytes(args.driver) is expect_csf
        assert (fibers(args.driver).nbytes() < coo_nbytes(args.driver)) is expect_csf
        chosen = read_as(kernel.loops, args.driver)
        assert (chosen is not kernel.loops) is expect_csf
        if expect_csf:
            assert _sparse_loop(chosen).format is formats.CSF
        np.testing.assert_allclose(kernel(**inputs).numpy(), _oracle(kernel, inputs), rtol=1e-12, atol=1e-12)


def test_declared_coo_is_never_read_as_csf():
    kernel = sg.compile(MTTKRP3, symmetric={"A": "full"}, formats={"A": "coo"}, backend="numba")
    args = bind(kernel.loops, kernel.program, {"A": _shared_prefixes(3), "B": np.ones((40, 3))})
    assert reads_fewer_bytes(args.driver) and read_as(kernel.loops, args.driver) is kernel.loops


def test_scalar_work_per_nonzero_stays_coo():
    """TTV does no dense loop per nonzero: CSF measured slower there, so fewer bytes do not switch it."""
    kernel = sg.compile(TTV3, symmetric={"A": "full"}, backend="numba")
    args = bind(kernel.loops, kernel.program, {"A": _shared_prefixes(3), "x": np.ones(40)})
    assert reads_fewer_bytes(args.driver) and fiber_variant(kernel.loops) is None
    assert read_as(kernel.loops, args.driver) is kernel.loops


# ---------------------------------------------------------------------------------------------
# Triton: CSF is tiled as its COO nonzeros, with the reason


@pytest.mark.parametrize("text, order", [CASES[0], CASES[1], CASES[4]])
@pytest.mark.parametrize("fmt", ["csf", None])
def test_triton_tiles_csf_as_coo_nonzeros(text, order, fmt):
    from systec_gpu.backends.triton_backend import run_triton
    from systec_gpu.schedule import SparseTileSchedule, apply_schedule

    rng = np.random.default_rng(20 + order)
    kernel = sg.compile(text, symmetric={"A": "full"}, formats={"A": fmt} if fmt else None, backend="triton")
    tiles = apply_schedule(kernel.loops, SparseTileSchedule(nnz_per_tile=4, dense_block=2))
    notes = " ".join(tiles.notes)
    assert ("CSF driver tiled as its COO nonzeros" in notes) == (fmt == "csf")
    inputs = _inputs(text, order, rng, per_class=2)
    args = bind(kernel.loops, kernel.program, inputs)
    run_triton(kernel.loops, args, SparseTileSchedule(nnz_per_tile=4, dense_block=2))
    result = finish(args, kernel.loops, kernel.program).numpy()
    np.testing.assert_allclose(result, _oracle(kernel, inputs), rtol=1e-12, atol=1e-12)
