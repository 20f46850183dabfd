"""Programs of several statements with symmetric intermediates, against the numpy oracle.

Every catalog program runs on the reference, Numba and Triton-interpreter backends; its
`work_ratio` must be below that of the unchained composition (the same statements compiled as if
alone, without the intermediates' symmetry). TRITON_INTERPRET must be set before the Triton
kernels are decorated: at import of this module is early enough.
"""

import os

os.environ["TRITON_INTERPRET"] = "1"

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import scipy.sparse as sp  # noqa: E402
import torch  # noqa: E402

import systec_gpu as sg  # noqa: E402
from systec_gpu.api import Kernel, _compile  # noqa: E402
from systec_gpu.catalog import PROGRAMS, compile_program_catalog  # noqa: E402
from systec_gpu.frontend import ParseError  # noqa: E402
from systec_gpu.frontend.declare import DeclarationError  # noqa: E402
from systec_gpu.frontend.program import ProgramError  # noqa: E402
from systec_gpu.ir.einsum_interpreter import interpret_einsum  # noqa: E402
from systec_gpu.program import ProgramKernel, compile_program  # noqa: E402
from systec_gpu.spgemm import SparseOutputError, SparseOutputKernel  # noqa: E402
from systec_gpu.storage import SymmetricTensor  # noqa: E402

from .symdata import dense_for_oracle, symmetric_sparse  # noqa: E402

BACKENDS = ["reference", "numba", "triton"]


def program_inputs(name: str, rng) -> dict:
    if name == "gram_spmv":
        return {"A": rng.uniform(-1, 1, (7, 4)), "x": rng.uniform(-1, 1, 7)}
    if name in ("gram_spmv_sparse", "ssyrk_sparse"):
        keep = np.ones(8)
        keep[3] = 0  # an empty row
        a = sp.csr_matrix(sp.diags(keep) @ sp.random(8, 5, density=0.4, random_state=int(rng.integers(1000))))
        a.eliminate_zeros()
        return {"A": a, "x": rng.uniform(-1, 1, 8)} if name == "gram_spmv_sparse" else {"A": a}
    if name == "quartic_hvp":
        return {"A": symmetric_sparse(4, 5, rng), "x": rng.uniform(-1, 1, 5), "v": rng.uniform(-1, 1, 5)}
    if name == "ttv3_form":
        return {"A": symmetric_sparse(3, 6, rng), "x": rng.uniform(-1, 1, 6)}
    if name == "ttv4_chain":
        return {"A": symmetric_sparse(4, 5, rng), "x": rng.uniform(-1, 1, 5)}
    if name == "cp_als3":
        return {"A": symmetric_sparse(3, 6, rng), "B": rng.uniform(-1, 1, (6, 3))}
    raise KeyError(name)


def dense(value) -> np.ndarray:
    if sp.issparse(value):
        return value.toarray()
    if isinstance(value, SymmetricTensor):
        return value.to_dense()
    return dense_for_oracle(value, "+=")


def oracle(flow, inputs: dict) -> list[np.ndarray]:
    """Each statement by the numpy interpreter, on the dense results of the earlier ones."""
    values = {n: dense(v) for n, v in inputs.items()}
    for statement in flow.statements:
        values[statement.einsum.output.tensor] = interpret_einsum(statement.einsum, values)
    return [values[o] for o in flow.outputs]


def as_list(kernel: ProgramKernel, result) -> list:
    return list(result) if len(kernel.outputs) > 1 else [result]


def unchained(name: str, backend: str) -> ProgramKernel:
    entry = PROGRAMS[name]
    return compile_program(entry.text, compile_statement=_compile, symmetric=entry.symmetric or None,
                           formats=entry.formats or None, outputs=entry.outputs, backend=backend, chain=False)


CHAINED = [name for name in PROGRAMS if "\n" in PROGRAMS[name].text]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", CHAINED)
def test_program_matches_numpy_and_does_less_work_than_unchained(name, backend):
    rng = np.random.default_rng(5)
    inputs = program_inputs(name, rng)
    chained = compile_program_catalog(name, backend=backend)
    alone = unchained(name, backend)
    want = oracle(chained.flow, inputs)
    for kernel in (chained, alone):
        got = as_list(kernel, kernel(**inputs))
        for tensor, g, w in zip(kernel.outputs, got, want, strict=True):
            np.testing.assert_allclose(dense(g), w, rtol=1e-10, atol=1e-12, err_msg=f"{name} {tensor} {backend}")
    ours, theirs = chained.stats, alone.stats
    assert ours["baseline_points"] == theirs["baseline_points"]  # same statements, same storage
    assert ours["visited_points"] < theirs["visited_points"]
    assert ours["work_ratio"] < theirs["work_ratio"], (name, ours["work_ratio"], theirs["work_ratio"])
    assert len(ours["statements"]) == len(chained.kernels)


def test_intermediate_symmetry_is_declared_where_read_and_producer_is_canonical():
    p = sg.compile("T[i,j] += A[i,k]*A[j,k]; y[i] += T[i,j]*x[j]")
    assert isinstance(p, ProgramKernel)
    t = p.intermediates["T"]
    assert t.groups == ((0, 1),) and t.canonical and t.storage == "dense"
    assert p.kernels[0].loops.output_groups == ((0, 1),)  # producer: canonical part only
    assert p.kernels[1].program.groups_of("T") == ((0, 1),)  # consumer: declared symmetric
    assert [s.origin for s in p.kernels[1].symmetrized.sets] == ["T is symmetric in modes (0, 1)"]
    text = p.explain()
    assert "T symmetric in modes (0, 1): found by statement 1, invisible" in text
    assert "statement 1 computes and stores only its canonical part" in text
    assert "storage: dense" in text and "storage rule:" in text


def test_visible_symmetry_of_an_intermediate_is_named():
    p = compile_program_catalog("ttv3_form")
    assert "T symmetric in modes (0, 1): found by statement 1, visible: A[i,j,k] is symmetric in modes (0, 1, 2)" \
        in p.explain()


def test_declared_symmetry_of_an_intermediate_is_passed_on():
    with pytest.warns(UserWarning, match="cannot prove"):
        p = sg.compile("T[i,j] += B[i,k]*C[j,k]; y[i] += T[i,j]*x[j]", symmetric={"T": "full"})
    assert p.intermediates["T"].groups == ((0, 1),)
    assert "T symmetric in modes (0, 1): declared (symmetric=)" in p.explain()


def test_returned_intermediate_is_full_unless_canonical_asked():
    rng = np.random.default_rng(1)
    a, x = rng.uniform(-1, 1, (6, 3)), rng.uniform(-1, 1, 6)
    p = sg.compile("T[i,j] += A[i,k]*A[j,k]; y[i] += T[i,j]*x[j]", outputs=("y", "T"))
    full = p(A=a, x=x)
    assert full._fields == ("y", "T")
    np.testing.assert_allclose(full.T.numpy(), a @ a.T)
    np.testing.assert_allclose(full.y.numpy(), a @ a.T @ x)
    canonical = p(A=a, x=x, canonical_output=True)
    np.testing.assert_allclose(canonical.T.numpy(), np.triu(a @ a.T))
    np.testing.assert_allclose(canonical.y.numpy(), a @ a.T @ x)


def test_storage_rule_and_override():
    text = "T[i,j] += A[i,k]*A[j,k]; y[i] += T[i,j]*x[j]"
    assert sg.compile(text).intermediates["T"].storage == "dense"
    sparse = sg.compile(text, formats={"A": "csr"})
    assert sparse.intermediates["T"].storage == "csr"
    assert isinstance(sparse.kernels[0], SparseOutputKernel)
    assert "storage: csr (its producer's output is sparse" in sparse.explain()
    forced = sg.compile(text, formats={"A": "csr", "T": "dense"})
    assert forced.intermediates["T"].storage == "dense"
    assert "storage: dense (formats= declares it)" in forced.explain()
    a = sp.random(6, 4, density=0.5, random_state=0, format="csr")
    x = np.arange(6.0)
    for kernel in (sparse, forced):
        np.testing.assert_allclose(kernel(A=a, x=x).numpy(), a @ (a.T @ x))
    with pytest.raises(SparseOutputError, match="statement 1.*cannot be a sparse output"):
        sg.compile("T[i,j] += A[i,j,k]*x[k]; s[] += x[i]*T[i,j]*x[j]", symmetric={"A": "full"}, formats={"T": "coo"})


def test_sparse_intermediate_reused_on_repeat_calls():
    rng = np.random.default_rng(2)
    p = compile_program_catalog("gram_spmv_sparse", backend="numba")
    inputs = program_inputs("gram_spmv_sparse", rng)
    a = sg.SparseTensor.from_coo(np.array(inputs["A"].nonzero()), inputs["A"].data, inputs["A"].shape)
    for _ in range(2):
        values = rng.uniform(-1, 1, a.nnz)
        b = a.with_values(values)
        got = p(A=b, x=inputs["x"]).numpy()
        dense_b = b.to_dense()
        np.testing.assert_allclose(got, dense_b @ (dense_b.T @ inputs["x"]))


def test_single_statement_is_still_a_kernel():
    k = sg.compile("y[i] += A[i,j]*x[j]", symmetric={"A": "full"})
    assert type(k) is Kernel
    one = sg.compile("y[i] += A[i,j]*x[j]", symmetric={"A": "full"}, outputs=("y",))
    assert isinstance(one, ProgramKernel) and len(one.kernels) == 1


def test_single_statement_errors_unchanged():
    with pytest.raises(ParseError) as error:
        sg.compile("y[i] += A[i,j] x[j]")
    assert error.value.position == 15 and "expected an operator or the end of the expression" in str(error.value)


@pytest.mark.parametrize(
    ("text", "outputs", "position", "reason"),
    [
        ("y[i] += T[i,j]*x[j]; T[i,j] += A[i,k]*A[j,k]", None, 8, "T is read before it is written"),
        ("T[i] += x[i]; T[i] += z[i]; y[i] += T[i]", None, 14, "T is written twice"),
        ("T[i] += U[i]*x[i]; U[i] += T[i]*x[i]; y[i] += U[i]", None, 8, "cycle: U is read by statement 1"),
        ("T[i] += x[i]\ny[i] += T[i,j]*z[j]", None, 21, "T is used with 2 indices here but with 1"),
        ("T[i] += x[i]\ny[i] += z[i]*x[i]", None, 0, "T is written but neither read"),
        ("T[i] += x[i]; y[i] += T[i]", ("y", "x"), 8, "outputs= names x, an input of the program"),
        ("T[i] += x[i]; y[i] += T[i]\nz[i] += y[i] q[i]", None, 40, "expected an operator, ';'"),
    ],
)
def test_bad_programs_give_caret_errors(text, outputs, position, reason):
    with pytest.raises(ParseError) as error:
        sg.compile(text, outputs=outputs)
    assert error.value.position == position, str(error.value)
    assert reason in str(error.value)
    assert "^" in str(error.value)


def test_caret_error_of_a_later_line_shows_that_line():
    with pytest.raises(ProgramError) as error:
        sg.compile("T[i,j] += A[i,k]*A[j,k]\ny[i] += T[i,j,l]*x[j]")
    message = str(error.value)
    assert "at line 2, column 9:" in message
    assert "\n  y[i] += T[i,j,l]*x[j]\n          ^" in message


def test_program_declarations_are_checked():
    with pytest.raises(DeclarationError, match="symmetric= names 'Z', which the program does not use"):
        sg.compile("T[i] += x[i]; y[i] += T[i]", symmetric={"Z": "full"})
    with pytest.raises(DeclarationError, match="outputs= names 'w', which no statement writes"):
        sg.compile("T[i] += x[i]; y[i] += T[i]", outputs=("w",))
    with pytest.raises(DeclarationError, match="loop_order"):
        sg.compile("T[i] += x[i]; y[i] += T[i]", loop_order=["i"])
    with pytest.raises(DeclarationError, match="mode 2 of group \\(0, 2\\) is out of range"):
        sg.compile("T[i] += x[i]; y[i] += A[i,j]*T[j]", symmetric={"A": [(0, 2)]})
    with pytest.raises(DeclarationError, match="statement 2, y\\[i\\] \\+= A\\[i,j,k\\] .*'csr' needs a matrix"):
        sg.compile("T[i] += x[i]; y[i] += A[i,j,k]*T[j]*x[k]", formats={"A": "csr"})


def test_program_inputs_are_checked_once_and_named():
    p = sg.compile("T[i,j] += A[i,j,k]*x[k]; s[] += x[i]*T[i,j]*x[j]", symmetric={"A": "full"}, formats={"A": "dense"})
    bad = np.zeros((3, 3, 3))
    bad[0, 1, 2] = 1.0
    with pytest.raises(ValueError, match="A is not symmetric"):
        p(A=bad, x=np.ones(3))
    with pytest.raises(TypeError, match="missing tensor"):
        p(A=bad)


def test_gradients_flow_through_a_program():
    rng = np.random.default_rng(3)
    a = torch.tensor(rng.uniform(-1, 1, (5, 3)))
    x = torch.tensor(rng.uniform(-1, 1, 5), requires_grad=True)
    p = sg.compile("T[i,j] += A[i,k]*A[j,k]; y[i] += T[i,j]*x[j]")
    p(A=a, x=x).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), (a @ a.T).sum(0).numpy())
    a.requires_grad_(True)
    x.grad = None
    y = p(A=a, x=x)
    np.testing.assert_allclose(y.detach().numpy(), (a @ a.T @ x).detach().numpy())
    y.sum().backward()
    ones, xs = torch.ones(5, dtype=torch.float64), x.detach()
    np.testing.assert_allclose(a.grad.numpy(), ((torch.outer(ones, xs) + torch.outer(xs, ones)) @ a.detach()).numpy())


def test_cp_als_step_solves_with_the_program_outputs():
    rng = np.random.default_rng(4)
    inputs = program_inputs("cp_als3", rng)
    p = compile_program_catalog("cp_als3", backend="numba")
    m, h = p(**inputs)
    step = np.linalg.solve(h.numpy(), m.numpy().T).T  # B <- M H^-1 (H symmetric)
    a, b = dense(inputs["A"]), inputs["B"]
    m_ref = np.einsum("ikl,kr,lr->ir", a, b, b)
    h_ref = (b.T @ b) * (b.T @ b)
    np.testing.assert_allclose(step, np.linalg.solve(h_ref, m_ref.T).T, rtol=1e-9)
    assert "intermediate G: written by statement 2, read by 3" in p.explain()


def test_program_source_lists_every_statement():
    p = compile_program_catalog("ttv4_chain")
    source = p.source("numba")
    assert source.count("# ---- statement") == 3 and "def kernel(" in source


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "text",
    [
        "T[i,j] min= A[i,k] + A[j,k]; y[i] min= T[i,j] + x[j]",
        "T[i,j] max= A[i,k] + A[j,k]\ny[i] += T[i,j]*x[j]",
        "s[] += x[i]*x[i]; y[i] += s[]*A[i,k]*A[j,k]*x[j]",
    ],
    ids=["min-plus", "max-then-sum", "scalar-intermediate"],
)
def test_other_semirings_and_scalar_intermediates(text, backend):
    rng = np.random.default_rng(6)
    inputs = {"A": rng.uniform(0, 1, (6, 4)), "x": rng.uniform(0, 1, 6)}
    p = sg.compile(text, backend=backend)
    (want,) = oracle(p.flow, inputs)
    np.testing.assert_allclose(p(**inputs).numpy(), want, rtol=1e-12)
