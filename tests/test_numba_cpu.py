"""The Numba backend's hand-written-style code paths against the numpy oracle: the CSR row loop
that peels the diagonal entry, the per-class constant-factor paths of COO tensors, the factor
table kept when classes are too many, partial outputs initialized and combined over the rows a
chunk touches (any number of chunks, empty ones included), the in-kernel mirror of a symmetric
output, and the CPU plans (BLAS ?syrk, the expanded kernel)."""

import numpy as np
import pytest

import systec_gpu as sg
from systec_gpu.backends import numba_backend, plans
from systec_gpu.catalog import compile_catalog
from systec_gpu.ir.einsum_interpreter import interpret_einsum
from systec_gpu.runtime import bind, finish
from systec_gpu.storage import SymmetricTensor

from .symdata import dense_for_oracle, symmetric_sparse


def oracle(kernel, inputs: dict) -> np.ndarray:
    symbol = kernel.program.einsum.reduce
    return interpret_einsum(kernel.program.einsum, {n: dense_for_oracle(v, symbol) for n, v in inputs.items()})


def run_chunks(kernel, inputs: dict, chunks: int, canonical: bool = False) -> np.ndarray:
    """The generated kernel with `chunks` partial outputs (more chunks than threads or than
    nonzeros is allowed: chunks may be empty)."""
    args = bind(kernel.loops, kernel.program, inputs)
    numba_backend.run_numba(kernel.loops, args, threads=chunks)
    return finish(args, kernel.loops, kernel.program, canonical=canonical).numpy()


def matrix(entries: dict, size: int) -> SymmetricTensor:
    """A symmetric matrix from canonical (i <= j) entries {(i, j): value}."""
    coords = np.array(sorted(entries), dtype=np.int64).T.reshape(2, -1)
    values = np.array([entries[k] for k in sorted(entries)], dtype=np.float64)
    return SymmetricTensor.from_canonical(coords, values, (size, size), "full")


# Rows with the diagonal only, without it, empty rows (0, 3, 7), the last row, a lone entry.
CSR_CASES = {
    "mixed": ({(1, 1): 2.0, (1, 2): -1.0, (1, 6): 0.5, (2, 4): 3.0, (4, 4): -2.0, (5, 5): 1.5,
               (5, 6): 0.25, (6, 6): 4.0, (8, 8): 1.0}, 9),
    "diagonal only": ({(0, 0): 1.0, (3, 3): -2.0}, 5),
    "off-diagonal only": ({(0, 4): 1.0, (1, 2): 2.0}, 5),
    "single diagonal entry": ({(2, 2): 3.0}, 4),
    "single off-diagonal entry": ({(0, 3): -1.5}, 4),
    "empty": ({}, 3),
}


@pytest.mark.parametrize("chunks", [1, 2, 3, 7])
@pytest.mark.parametrize("case", list(CSR_CASES))
@pytest.mark.parametrize("name", ["ssymv", "syprd", "bellman", "ssymm"])
def test_csr_row_loop_peels_the_diagonal(name, case, chunks):
    entries, size = CSR_CASES[case]
    rng = np.random.default_rng(3)
    a = matrix(entries, size) if entries else SymmetricTensor.from_canonical(
        np.zeros((2, 0), np.int64), np.zeros(0), (size, size), "full")
    dense = {"ssymm": ("X", (size, 3))}.get(name, ("x", (size,)))
    inputs = {"A": a, dense[0]: rng.uniform(-1, 1, dense[1])}
    kernel = compile_catalog(name, backend="numba")
    np.testing.assert_allclose(run_chunks(kernel, inputs, chunks), oracle(kernel, inputs), rtol=1e-12, atol=1e-12)


def test_csr_diagonal_is_peeled_without_a_table():
    source = compile_catalog("ssymv").source("numba")
    assert "mult" not in source.split("import numba", 1)[1]  # no factor table in the code
    assert "A_crd1[start] == i" in source  # the diagonal entry, first of its sorted row
    body = source.split("for p in range(start, stop):", 1)[1].split("acc[i] +=", 1)[0]
    assert "if " not in body and "x[i]" not in body  # off-diagonal loop: no test, x[i] per row


@pytest.mark.parametrize("chunks", [1, 2, 5, 64])
@pytest.mark.parametrize("name", ["ttm", "mttkrp3", "mttkrp4", "mttkrp5"])
def test_coo_class_paths_any_chunks(name, chunks):
    order = {"ttm": 3, "mttkrp3": 3, "mttkrp4": 4, "mttkrp5": 5}[name]
    rng = np.random.default_rng(order + chunks)
    a = symmetric_sparse(order, 7, rng, per_class=3)
    inputs = {"A": a, "B": rng.uniform(-1, 1, (7, 3))}
    for symmetry in (True, False):
        kernel = compile_catalog(name, backend="numba", symmetry=symmetry)
        np.testing.assert_allclose(run_chunks(kernel, inputs, chunks), oracle(kernel, inputs), rtol=1e-11, atol=1e-12)


def test_classes_become_constant_paths():
    source = compile_catalog("mttkrp3").source("numba")
    code = source.split("import numba", 1)[1]
    assert "mult[" not in code and "if mult" not in code
    assert code.count("elif cls ==") == 2 and "x2_A_val = (2.0 * A_val)" in code  # once: chunk_kernel


def test_six_way_group_keeps_the_factor_table():
    # 32 classes: more than MAX_PEELED_CLASSES, so the kernel reads the table.
    kernel = sg.compile("C[i,j] += A[i,k,l,m,n,o]*B[k,j]*B[l,j]*B[m,j]*B[n,j]*B[o,j]",
                        symmetric={"A": "full"}, backend="numba")
    assert numba_backend.class_peel(kernel.loops) is None
    rng = np.random.default_rng(6)
    inputs = {"A": symmetric_sparse(6, 7, rng, per_class=1), "B": rng.uniform(-1, 1, (7, 2))}
    for chunks in (1, 3):
        np.testing.assert_allclose(run_chunks(kernel, inputs, chunks), oracle(kernel, inputs), rtol=1e-11)


def test_coo_matrix_uses_the_class_switch():
    kernel = compile_catalog("ssymv", formats={"A": "coo"}, backend="numba")
    rng = np.random.default_rng(1)
    inputs = {"A": matrix(CSR_CASES["mixed"][0], 9), "x": rng.uniform(-1, 1, 9)}
    for chunks in (1, 4):
        np.testing.assert_allclose(run_chunks(kernel, inputs, chunks), oracle(kernel, inputs), rtol=1e-12)


@pytest.mark.parametrize("reduce", ["+=", "max="])
@pytest.mark.parametrize("chunks", [1, 2, 3])
def test_symmetric_output_mirrored_in_the_kernel(reduce, chunks):
    # 37 > 2 mirror blocks of 16 rows; chunks start at different leading coordinates.
    combine = "*" if reduce == "+=" else "+"
    kernel = sg.compile(f"C[i,j,l] {reduce} A[k,j,l] {combine} B[k,i]", symmetric={"A": "full"}, backend="numba")
    assert numba_backend.mirrors_output(kernel.loops)
    rng = np.random.default_rng(chunks)
    inputs = {"A": symmetric_sparse(3, 37, rng, per_class=20), "B": rng.uniform(-1, 1, (37, 3))}
    expected = oracle(kernel, inputs)
    for _ in range(5):  # uninitialized buffers: a race or a missed row would show garbage
        np.testing.assert_allclose(run_chunks(kernel, inputs, chunks), expected, rtol=1e-12)
    canonical = run_chunks(kernel, inputs, chunks, canonical=True)
    j, l = np.meshgrid(np.arange(37), np.arange(37), indexing="ij")
    upper = np.broadcast_to((j <= l)[None], expected.shape)
    np.testing.assert_allclose(canonical[upper], expected[upper], rtol=1e-12)
    identity = 0.0 if reduce == "+=" else -np.inf
    assert np.all(canonical[~upper] == identity)


@pytest.mark.parametrize("fmt", ["dense", "coo"])
@pytest.mark.parametrize("chunks", [1, 2, 3])
def test_generated_syrk_kernels_write_both_halves(fmt, chunks):
    # Dense A: the mirror pass after the combine (blocks of 16: 37 rows make 3); sparse A: both
    # halves written beside each update. (kernel(...) would run BLAS for dense A: run_numba here.)
    kernel = sg.compile("C[i,j] += A[i,k]*A[j,k]", formats={"A": fmt}, backend="numba")
    a = np.random.default_rng(chunks).uniform(-1, 1, (37, 4))
    a[np.abs(a) < 0.4] = 0
    for _ in range(3):
        np.testing.assert_allclose(run_chunks(kernel, {"A": a}, chunks), a @ a.T, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(run_chunks(kernel, {"A": a}, chunks, canonical=True), np.triu(a @ a.T),
                                   rtol=1e-12, atol=1e-12)


def test_combine_is_not_fused_with_the_chunks_loop():
    # Found by the property tests: with both loops over n_chunks numba fused them, and a thread
    # combined partial outputs another thread had not written yet (garbage from np.empty).
    kernel = sg.compile("Y[i,j] max= A[i,j] + A[j,i] + A[j,i]", symmetric={"A": "full"},
                        formats={"A": "dense"}, backend="numba")
    assert 'parallel={"fusion": False}' in kernel.source("numba")
    for seed in range(30):
        a = np.random.default_rng(seed).uniform(0.5, 2.0, (5, 5))
        a = np.triu(a) + np.triu(a, 1).T
        np.testing.assert_allclose(run_chunks(kernel, {"A": a}, 2), 3 * a, rtol=1e-12)


def test_invariant_factors_are_multiplied_once_before_the_rank_loop():
    code = compile_catalog("mttkrp4").source("numba")
    assert "x6_A_val = (6.0 * A_val)" in code
    assert "6.0 * (A_val" not in code.split("if cls == 0:", 1)[1].split("elif", 1)[0]


# ---------------------------------------------------------------------------------------------
# CPU plans


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("expr, transposed", [("C[i,j] += A[i,k]*A[j,k]", False), ("C[i,j] += A[k,i]*A[k,j]", True)])
@pytest.mark.parametrize("shape", [(0, 3), (5, 0), (1, 1), (9, 4), (37, 5)])
def test_dense_syrk_runs_blas(expr, transposed, shape, dtype):
    kernel = sg.compile(expr, backend="numba")
    plan = plans.cpu_plan(kernel.program, kernel.loops)
    assert plan.name == "blas_syrk" and "cpu plan: blas_syrk" in kernel.explain()
    a = np.random.default_rng(1).uniform(-1, 1, shape).astype(dtype)
    expected = a.T @ a if transposed else a @ a.T
    result = kernel(A=a).numpy()
    assert result.dtype == dtype and result.shape == expected.shape
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(result, expected, rtol=tol, atol=tol)
    np.testing.assert_allclose(kernel(A=a, canonical_output=True).numpy(), np.triu(expected), rtol=tol, atol=tol)
    assert kernel.stats["work_ratio"] <= 1.0


@pytest.mark.parametrize("aat", [True, False])
@pytest.mark.parametrize("shape", [(1, 3), (17, 5), (40, 7), (1030, 2)])  # 1030: the tiled mirror
def test_blas_syrk_writes_every_entry_of_its_uninitialized_buffer(shape, aat):
    # ?syrk writes one triangle of an np.empty buffer (beta = 0), the mirror the other: an entry
    # either missed would show the NaNs left in the memory the buffer reuses.
    a = np.random.default_rng(3).uniform(-1, 1, shape)
    n = shape[0] if aat else shape[1]
    for _ in range(3):
        garbage = np.full((n, n), np.nan)
        del garbage
        result = plans.syrk_full(a, aat)
        assert result.flags.c_contiguous
        np.testing.assert_allclose(result, a @ a.T if aat else a.T @ a, rtol=1e-12, atol=1e-12)


def test_syrk_plan_only_for_what_blas_computes():
    for expr, kwargs in [
        ("C[i,j] min= A[i,k] + A[j,k]", {}),  # (min, +): not BLAS
        ("C[i,j] += A[i,k]*A[j,k]", {"formats": {"A": "coo"}}),  # sparse A: the generated kernel
        ("C[i,j] += A[i,k]*B[j,k]", {}),  # two tensors: a GEMM, not a SYRK
        ("C[i,j] += A[i,k]*A[j,k]*A[j,k]", {}),
    ]:
        kernel = sg.compile(expr, backend="numba", **kwargs)
        assert plans.cpu_plan(kernel.program, kernel.loops).name != "blas_syrk", expr
    kernel = sg.compile("C[i,j] += A[i,k]*A[j,k]", formats={"A": "coo"}, backend="numba")
    a = np.random.default_rng(2).uniform(-1, 1, (8, 3))
    a[a < 0] = 0
    np.testing.assert_allclose(kernel(A=a).numpy(), a @ a.T, rtol=1e-12)


def test_ssymm_runs_the_expanded_kernel_and_says_why():
    kernel = compile_catalog("ssymm", backend="numba")
    plan = plans.cpu_plan(kernel.program, kernel.loops)
    assert plan.name == "expanded" and plan.loops.body != kernel.loops.body
    assert "cpu plan: expanded" in kernel.explain() and "rank-loop work only 1x" in kernel.explain()
    rng = np.random.default_rng(4)
    inputs = {"A": symmetric_sparse(2, 9, rng, per_class=4), "X": rng.uniform(-1, 1, (9, 5))}
    np.testing.assert_allclose(kernel(**inputs).numpy(), oracle(kernel, inputs), rtol=1e-12)
    for name in ("mttkrp3", "ttm", "ssymv", "syprd"):  # symmetry cuts their work: their own kernel
        k = compile_catalog(name, backend="numba")
        assert plans.cpu_plan(k.program, k.loops).name == "generated", name
