"""Property tests: random expressions with random symmetric groups (orders up to 5) and all
three reductions, compiled with and without symmetry, checked against the numpy oracle."""

import warnings

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import systec_gpu as sg
from systec_gpu.ir.einsum_interpreter import interpret_einsum
from systec_gpu.storage import SymmetricTensor

from .symdata import dense_for_oracle, random_symmetric_dense

INDICES = "ijklm"


@st.composite
def groups_for(draw, order: int):
    """'full', or a random partition of some modes into groups of size >= 2."""
    if draw(st.booleans()):
        return "full"
    modes = list(draw(st.permutations(range(order))))
    groups, at = [], 0
    while order - at >= 2 and draw(st.booleans()) or (not groups and order - at >= 2):
        size = draw(st.integers(2, order - at))
        groups.append(tuple(sorted(modes[at:at + size])))
        at += size
    return groups


@st.composite
def expressions(draw):
    reduce = draw(st.sampled_from(["+=", "min=", "max="]))
    combine = "*" if reduce == "+=" else "+"
    order = draw(st.integers(2, 5))
    sym_indices = draw(st.permutations(INDICES[:order]))
    operands = [("A", list(sym_indices))]
    for name in draw(st.lists(st.sampled_from(["x", "B", "A"]), max_size=2)):
        if name == "x":
            operands.append(("x", [draw(st.sampled_from(INDICES[:order]))]))
        elif name == "B":
            operands.append(("B", list(draw(st.permutations(INDICES[:order])))[:2]))
        else:  # A again, with other indices: the symmetric operand read twice
            operands.append(("A", list(draw(st.permutations(INDICES[:order])))))
    used = sorted({i for _, idx in operands for i in idx})
    output = draw(st.lists(st.sampled_from(used), unique=True, max_size=2))
    rhs = f" {combine} ".join(f"{n}[{','.join(idx)}]" for n, idx in operands)
    text = f"Y[{','.join(output)}] {reduce} {rhs}"
    groups = draw(groups_for(order))
    sparse = draw(st.booleans())
    return text, groups, sparse, order


def run_case(text, groups, sparse, order, backend, seed):
    rng = np.random.default_rng(seed)
    size = 3
    normalized = sg.storage.normalize_groups(groups, (size,) * order)
    a_dense = random_symmetric_dense((size,) * order, normalized, rng)
    a = SymmetricTensor.from_dense(a_dense, normalized) if sparse else a_dense
    inputs = {"A": a}
    if "x[" in text:
        inputs["x"] = rng.uniform(-1, 1, size)
    if "B[" in text:
        inputs["B"] = rng.uniform(-1, 1, (size, size))
    formats = {"A": "coo" if sparse else "dense"}
    kernels = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for symmetry in (True, False):
            kernels.append(sg.compile(text, symmetric={"A": groups}, formats=formats, symmetry=symmetry,
                                      backend=backend))
    symbol = kernels[0].program.einsum.reduce
    expected = interpret_einsum(kernels[0].program.einsum, {n: dense_for_oracle(v, symbol) for n, v in inputs.items()})
    for kernel in kernels:
        result = kernel(**inputs).numpy()
        np.testing.assert_allclose(result, expected, rtol=1e-12, atol=1e-12, err_msg=f"{text} {groups} {kernel}")
    assert kernels[0].stats["work_ratio"] <= 1.0 + 1e-12


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(expressions(), st.integers(0, 2**16))
def test_random_expressions_reference(case, seed):
    run_case(*case, backend="reference", seed=seed)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(expressions(), st.integers(0, 2**16))
def test_random_expressions_numba(case, seed):
    run_case(*case, backend="numba", seed=seed)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(expressions(), st.integers(0, 2**16))
def test_random_expressions_numba_parallel_chunks(case, seed):
    # Tiny inputs normally run on one thread: force the per-chunk partial outputs.
    from unittest.mock import patch

    from systec_gpu.backends import numba_backend

    with patch.object(numba_backend, "SERIAL_BELOW", 0):
        run_case(*case, backend="numba", seed=seed)


def six_mode_mttkrp_case(backend):
    """6-D MTTKRP on tiny data (every diagonal class present) against the oracle."""
    from .symdata import symmetric_sparse

    rng = np.random.default_rng(6)
    a = symmetric_sparse(6, 4, rng, per_class=1)
    b = rng.uniform(-1, 1, (4, 3))
    text = "C[i,j] += A[i,k,l,m,n,o]*B[k,j]*B[l,j]*B[m,j]*B[n,j]*B[o,j]"
    kernel = sg.compile(text, symmetric={"A": "full"}, backend=backend)
    expected = interpret_einsum(kernel.program.einsum, {"A": dense_for_oracle(a, "+="), "B": b})
    np.testing.assert_allclose(kernel(A=a, B=b).numpy(), expected, rtol=1e-12, atol=1e-12)
    assert len(kernel.loops.tables[0].rows) == 2**5


def test_six_mode_mttkrp_reference():
    six_mode_mttkrp_case("reference")


def test_six_mode_mttkrp_numba():
    six_mode_mttkrp_case("numba")
