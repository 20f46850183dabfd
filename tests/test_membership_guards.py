"""A sparse operand read densely (a second access of the driver's tensor, a second sparse tensor)
is guarded by its membership: where it reads an entry it does not store, the term contributes
nothing, even where another factor is inf or nan (no `0 * inf`, no `inf + -inf`), on every backend
and with or without symmetry, as the numpy oracle with `stored=` says.
"""

import os

os.environ["TRITON_INTERPRET"] = "1"  # before any generated Triton kernel is loaded

import dataclasses  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import scipy.sparse as sp  # noqa: E402
import torch  # noqa: E402

import systec_gpu as sg  # noqa: E402
from systec_gpu import algebra  # noqa: E402
from systec_gpu.backends.triton_launch import run_triton  # noqa: E402
from systec_gpu.dense_symmetry import mirror_canonical  # noqa: E402
from systec_gpu.ir.einsum import Literal, accesses  # noqa: E402
from systec_gpu.ir.einsum_interpreter import interpret_einsum  # noqa: E402
from systec_gpu.ir.loop import LoopIRError, Select, Stored, Update, verify_loops  # noqa: E402
from systec_gpu.ir.traverse import postwalk, walk  # noqa: E402
from systec_gpu.runtime import bind, finish  # noqa: E402
from systec_gpu.schedule import RowBlockSchedule, SparseTileSchedule  # noqa: E402
from systec_gpu.storage import SparseTensor, SymmetricTensor  # noqa: E402

BACKENDS = ("reference", "numba", "triton")
SIZE = 4

# (expression, symmetric declaration, sparse tensors, specials the dense operands may hold)
PROGRAMS = [
    ("y[] += A[i,i]*A[i,j]", {"A": "full"}, ("A",), (np.inf, -np.inf, np.nan)),
    ("Y[] += A[i,j]*A[j,i]", None, ("A",), (np.inf, np.nan)),
    ("y[i] += A[i,j]*A[j,i]*x[j]", None, ("A",), (np.inf, -np.inf, np.nan)),
    ("y[i] += A[i,j]*B[i,j]", {"A": "full"}, ("A", "B"), (np.inf, np.nan)),  # y[j] reads B[j,i]
    ("C[i,j] += A[i,k]*A[j,k]", None, ("A",), (np.inf, np.nan)),  # output symmetry found
    ("C[i,j] += A[i,k]*A[j,k]*x[k]", None, ("A",), (np.inf, -np.inf, np.nan)),
    ("y[i] min= A[i,j] + A[j,i] + x[j]", None, ("A",), (-np.inf, np.inf)),  # inf + -inf = nan
    ("y[i] max= A[i,j] + B[j,i]", {"A": "full"}, ("A", "B"), (np.inf, -np.inf)),
    # a sparse factor of a term, not of the whole update: where it is unstored the term is the
    # zero (a Select on its membership), the other terms count
    ("y[i] += A[i,j]*x[j] + B[i,j]", None, ("A", "B"), (np.inf, -np.inf, np.nan)),
    ("y[i] += A[i,j]*x[j] + B[i,j]", {"A": "full"}, ("A", "B"), (np.inf, -np.inf, np.nan)),
    ("y[i] += A[i,j]*x[j] + B[i,j]*x[j] + x[j]", None, ("A", "B"), (np.inf, -np.inf, np.nan)),
    ("y[i] += A[i,j]*A[j,i]*x[j] + A[i,j]", None, ("A",), (np.inf, np.nan)),
    ("y[i] += A[i,j]*(B[i,j]*x[j] + x[i])", {"A": "full"}, ("A", "B"), (np.inf, -np.inf, np.nan)),  # A drives
    ("y[i] += max(A[i,j]*x[j], x[i])", None, ("A",), (np.inf, -np.inf, np.nan)),
    ("y[i] min= min(A[i,j] + x[j], B[i,j])", None, ("A", "B"), (np.inf, -np.inf)),  # inf + -inf = nan
    ("y[i] min= min(A[i,j] + x[j], B[i,j] + x[i])", {"A": "full"}, ("A", "B"), (np.inf, -np.inf)),
    ("y[i] max= max(A[i,j] + x[j], B[j,i] + x[i])", {"A": "full"}, ("A", "B"), (np.inf, -np.inf)),
]


def _sparse_dense(rng, fill: float, symmetric: bool, specials) -> np.ndarray:
    """A dense SIZE x SIZE array with half its entries `fill` (unstored) and some specials
    among the stored ones; symmetric when asked."""
    a = np.where(rng.random((SIZE, SIZE)) < 0.5, rng.uniform(-1, 1, (SIZE, SIZE)), fill)
    for value in specials:
        a[rng.integers(SIZE), rng.integers(SIZE)] = value
    return mirror_canonical(a, ((0, 1),)) if symmetric else a


def _input(dense: np.ndarray, fill: float, groups, kind: str):
    """The sparse operand as a storage, a scipy matrix, a dense numpy array or a dense torch tensor
    (the last two: unstored entries are those equal to the fill value)."""
    if kind == "storage":
        if groups:
            return SymmetricTensor.from_dense(dense, groups, fill=fill)
        return SparseTensor.from_dense(dense, fill=fill)
    if kind == "scipy":
        keep = dense != fill
        rows, cols = np.nonzero(keep)
        return sp.coo_matrix((dense[keep], (rows, cols)), shape=dense.shape)
    if kind == "numpy":
        return dense
    return torch.from_numpy(dense.copy())


def run_program(text, symmetric, sparse, specials, backend, fmt, kind, seed) -> None:
    rng = np.random.default_rng(seed)
    reduce, _ = algebra.reduction_for(text.split()[1])
    fill = algebra.fill_value(reduce)
    if kind == "scipy" and fill != 0:
        kind = "storage"  # scipy's unstored entries are 0
    groups = {name: ((0, 1),) for name in (symmetric or {})}
    stored_specials = [v for v in specials if v == v]  # nan as a stored value too
    dense = {name: _sparse_dense(rng, fill, name in groups, rng.choice(stored_specials, 2) if stored_specials
                                 else ()) for name in sparse}
    inputs = {name: _input(dense[name], fill, groups.get(name), kind) for name in sparse}
    if "x[" in text:
        x = rng.uniform(-1, 1, SIZE)
        x[rng.integers(SIZE)] = rng.choice(specials)
        x[rng.integers(SIZE)] = rng.choice(specials)
        inputs["x"] = dense["x"] = x
    formats = {name: fmt for name in sparse}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kernels = [sg.compile(text, symmetric=symmetric, formats=formats, symmetry=symmetry, backend=backend)
                   for symmetry in (True, False)]
        einsum = kernels[0].program.einsum
        masks = {name: dense[name] != fill for name in sparse}  # nan != fill: stored
        expected = interpret_einsum(einsum, dense, stored={a: masks[a.tensor] for a in accesses(einsum.rhs)
                                                          if a.tensor in masks})
        for symmetry, kernel in zip((True, False), kernels, strict=True):
            result = kernel(**inputs).numpy()
            np.testing.assert_allclose(result, expected, rtol=1e-12, atol=1e-12,
                                       err_msg=f"{text} {fmt} {kind} symmetry={symmetry} seed={seed}")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("program", PROGRAMS, ids=[p[0] for p in PROGRAMS])
def test_specials_meeting_unstored_entries_of_a_dense_read(program, backend):
    for seed in range(4 if backend == "triton" else 8):
        fmt = ("coo", "csr")[seed % 2]
        kind = ("storage", "scipy", "numpy", "torch")[seed // 2 % 4]
        run_program(*program, backend=backend, fmt=fmt, kind=kind, seed=seed)


def test_only_sparse_factors_read_densely_are_guarded():
    # the driver (A[i,j]) is not guarded; the second access and the second sparse tensor are,
    # update by update (y[j] reads B[j,i]); a dense operand never is
    kernel = sg.compile("y[i] += A[i,j]*B[i,j]*x[j]", symmetric={"A": "full"}, formats={"B": "coo"},
                        backend="reference")
    guarded = {n.access for n in walk(kernel.loops.body) if isinstance(n, Stored)}
    assert {str(a) for a in guarded} == {"B[i,j]", "B[j,i]"}
    assert kernel.loops.stored_inputs == ("B",)
    updates = [n for n in walk(kernel.loops.body) if isinstance(n, Update)]
    assert all(len(u.when) == 1 for u in updates)
    assert "a mask of the stored entries guards" in kernel.explain()
    dense_kernel = sg.compile("y[i] += A[i,j]*B[i,j]*x[j]", symmetric={"A": "full"}, backend="reference")
    assert dense_kernel.loops.stored_inputs == ()
    assert not any(isinstance(n, Stored) for n in walk(dense_kernel.loops.body))


def test_a_sparse_factor_of_a_term_selects_the_zero():
    # A is a factor of the term A[i,j]*x[j], not of the update: the term is selected on A's
    # membership, the update is not guarded; B is a term of the sum (0 is the identity of +):
    # read as its fill, no mask
    kernel = sg.compile("y[i] += A[i,j]*x[j] + B[i,j]", formats={"A": "coo", "B": "coo"}, backend="reference")
    (update,) = [n for n in walk(kernel.loops.body) if isinstance(n, Update)]
    assert update.when == ()
    (select,) = [n for n in walk(update.value) if isinstance(n, Select)]
    assert select.otherwise == Literal(0.0)
    assert {str(n.access) for n in walk(kernel.loops.body) if isinstance(n, Stored)} == {"A[i,j]"}
    assert kernel.loops.stored_inputs == ("A",)
    assert "a factor of a term, not of the whole update" in kernel.explain()
    # under min= the zero is inf and annihilates +: A[i,j] + x[j] is the term selected
    kernel = sg.compile("y[i] min= min(A[i,j] + x[j], B[i,j])", formats={"A": "coo", "B": "coo"},
                        backend="reference")
    (select,) = [n for n in walk(kernel.loops.body) if isinstance(n, Select)]
    assert select.otherwise == Literal(np.inf)
    # a dense A: nothing to select
    kernel = sg.compile("y[i] += A[i,j]*x[j] + B[i,j]", backend="reference")
    assert not any(isinstance(n, Select | Stored) for n in walk(kernel.loops.body))


def test_verify_loops_checks_a_select():
    kernel = sg.compile("y[i] += A[i,j]*x[j] + B[i,j]", formats={"A": "coo", "B": "coo"}, backend="reference")
    loops = kernel.loops

    def with_select(rule):
        return dataclasses.replace(loops, body=postwalk(loops.body, lambda n: rule(n) if isinstance(n, Select)
                                                        else None))

    verify_loops(loops)
    with pytest.raises(LoopIRError, match="the identity of the reduction"):
        verify_loops(with_select(lambda n: dataclasses.replace(n, otherwise=Literal(1.0))))
    with pytest.raises(LoopIRError, match="without a condition"):
        verify_loops(with_select(lambda n: dataclasses.replace(n, when=())))
    with pytest.raises(LoopIRError, match="not the membership of a sparse read"):
        verify_loops(with_select(lambda n: dataclasses.replace(n, when=(Literal(1.0),))))


def test_a_dense_operand_keeps_every_entry():
    # B is dense: its zeros are entries, so 0 * inf = nan is the dense answer, not skipped
    a = SymmetricTensor.from_dense(np.array([[1.0, 2.0], [2.0, 0.0]]), "full")
    b = np.array([[0.0, 1.0], [1.0, 1.0]])
    x = np.array([np.inf, 1.0])
    kernel = sg.compile("y[i] += A[i,j]*B[i,j]*x[j]", symmetric={"A": "full"}, backend="numba")
    assert np.isnan(kernel(A=a, B=b, x=x).numpy()[0])


TRITON_SCHEDULES = [
    SparseTileSchedule(nnz_per_tile=4, dense_block=2),
    SparseTileSchedule(nnz_per_tile=4, dense_block=2, segmented=False),
    RowBlockSchedule(rows_per_block=2, lanes_per_row=2, dense_block=2),
    RowBlockSchedule(rows_per_block=2, lanes_per_row=2, dense_block=2, row_write="atomic"),
]


@pytest.mark.parametrize("schedule", TRITON_SCHEDULES, ids=repr)
@pytest.mark.parametrize("text", ["y[i] += A[i,j]*A[j,i]*x[j]", "C[i,j] += A[i,k]*A[j,k]*x[k]",
                                  "y[i] += A[i,j]*(A[j,i]*x[j] + x[i])"])
def test_triton_schedules_mask_lanes_of_unstored_entries(text, schedule):
    # several tiles / row blocks and dense blocks of 2 lanes: the guard is one more mask term of
    # every write (scatters, segmented runs, tile and row reductions)
    rng = np.random.default_rng(7)
    a = np.where(rng.random((6, 6)) < 0.5, rng.uniform(-1, 1, (6, 6)), 0.0)
    a[0, 1], a[1, 0] = np.nan, 0.0  # a stored nan whose mirror is unstored
    a[2, 3], a[3, 2] = np.inf, 0.0
    x = rng.uniform(-1, 1, 6)
    x[4] = np.inf
    for symmetry in (True, False):
        kernel = sg.compile(text, formats={"A": "csr"}, symmetry=symmetry, backend="triton")
        einsum = kernel.program.einsum
        expected = interpret_einsum(einsum, {"A": a, "x": x},
                                    stored={acc: a != 0 for acc in accesses(einsum.rhs) if acc.tensor == "A"})
        args = bind(kernel.loops, kernel.program, {"A": sp.csr_matrix(a), "x": x})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            run_triton(kernel.loops, args, schedule)
        result = finish(args, kernel.loops, kernel.program).numpy()
        np.testing.assert_allclose(result, expected, rtol=1e-12, atol=1e-12, err_msg=f"symmetry={symmetry}")
