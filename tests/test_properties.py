"""Property tests: random expressions over a tensor A (symmetric in random groups, orders up to 5,
or not symmetric at all), in every format, with all three reductions, compiled with and without
symmetry, checked against the numpy oracle.

The generator also writes what a hand-written catalog does not: an index repeated inside an
access (A[i,i,j], B[k,k]), accesses in any mode order (A[j,i] of a row-major A), A read twice,
and nan / inf values in the data.
"""

import warnings

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import systec_gpu as sg
from systec_gpu.dense_symmetry import mirror_canonical
from systec_gpu.ir.einsum import accesses
from systec_gpu.ir.einsum_interpreter import interpret_einsum
from systec_gpu.passes.lower_loops import choose_driver
from systec_gpu.storage import SparseTensor, SymmetricTensor

from .symdata import dense_for_oracle, random_symmetric_dense

INDICES = "ijklm"
SIZE = 3


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
def access_indices(draw, pool: str, count: int) -> list[str]:
    """`count` indices from `pool` in any order (a transposed access), sometimes one repeated."""
    indices = list(draw(st.permutations(pool)))[:count]
    if count >= 2 and draw(st.integers(0, 3)) == 0:
        source, target = draw(st.lists(st.integers(0, count - 1), min_size=2, max_size=2, unique=True))
        indices[target] = indices[source]  # A[i,i,k]: a diagonal
    return indices


# Values outside the reals, per reduction. Under min=/max= an infinity of the identity's sign only:
# an opposite one meets the fill value of a sparse operand (inf + -inf = nan, see
# test_nan_through_min_max for what nan does there).
SPECIALS = {"+=": (np.nan, np.inf, -np.inf), "min=": (np.inf,), "max=": (-np.inf,)}


@st.composite
def expressions(draw):
    reduce = draw(st.sampled_from(["+=", "min=", "max="]))
    combine = "*" if reduce == "+=" else "+"
    order = draw(st.integers(2, 5))
    operands = [("A", draw(access_indices(INDICES[:order], order)))]
    for name in draw(st.lists(st.sampled_from(["x", "B", "A"]), max_size=2)):
        if name == "x":
            operands.append(("x", [draw(st.sampled_from(INDICES[:order]))]))
        elif name == "B":
            operands.append(("B", draw(access_indices(INDICES[:order], 2))))
        else:  # A again, with other indices: the operand read twice
            operands.append(("A", draw(access_indices(INDICES[:order], order))))
    used = sorted({i for _, idx in operands for i in idx})
    output = draw(st.lists(st.sampled_from(used), unique=True, max_size=2))
    rhs = f" {combine} ".join(f"{n}[{','.join(idx)}]" for n, idx in operands)
    text = f"Y[{','.join(output)}] {reduce} {rhs}"
    groups = draw(st.sampled_from([None, "groups", "groups", "groups"]))  # symmetric 3 times in 4
    groups = draw(groups_for(order)) if groups else None
    fmt = draw(st.sampled_from(["dense", "coo"] + (["csr"] if order == 2 else [])))
    # A sparse A read twice gets specials too: the access that does not drive the loop is read
    # densely, guarded by its membership, so an inf/nan meeting one of its unstored entries
    # contributes nothing, whichever access drives (test_access_patterns.py has the cases found).
    specials = draw(st.lists(st.sampled_from(SPECIALS[reduce]), max_size=2))
    return text, groups, fmt, order, specials


@st.composite
def sum_expressions(draw):
    """An expression of `expressions` with a second term (`t1 + t2` under `+=`, `min(t1, t2)` and
    `max(t1, t2)` under `min=`/`max=`), a product of A, B and x: a sparse A is then a factor of a
    term, not always of the update, and where an access of it is unstored its term is the zero
    (the oracle's stored= gives that semantics)."""
    text, groups, fmt, order, _ = draw(expressions())
    output, reduce, rhs = text.split(" ", 2)
    combine = "*" if reduce == "+=" else "+"
    operands = []
    for name in draw(st.lists(st.sampled_from(["x", "B", "A"]), min_size=1, max_size=2)):
        if name == "x":
            operands.append(("x", [draw(st.sampled_from(INDICES[:order]))]))
        elif name == "B":
            operands.append(("B", draw(access_indices(INDICES[:order], 2))))
        else:
            operands.append(("A", draw(access_indices(INDICES[:order], order))))
    term = f" {combine} ".join(f"{n}[{','.join(idx)}]" for n, idx in operands)
    rhs = f"{rhs} + {term}" if reduce == "+=" else f"{reduce[:3]}({rhs}, {term})"
    specials = draw(st.lists(st.sampled_from(SPECIALS[reduce]), min_size=1, max_size=3))  # one at least
    return f"{output} {reduce} {rhs}", groups, fmt, order, specials


def _with_specials(array: np.ndarray, specials, rng) -> np.ndarray:
    array = np.array(array, dtype=np.float64)
    for value in specials:
        array.flat[rng.integers(array.size)] = value
    return array


def run_case(text, groups, fmt, order, specials, backend, seed, one_term=True):
    rng = np.random.default_rng(seed)
    shape = (SIZE,) * order
    normalized = sg.storage.normalize_groups(groups, shape) if groups is not None else ()
    to_a = [rng.random() < 0.5 for _ in specials]  # the others go to x and B
    in_a = [v for v, here in zip(specials, to_a, strict=True) if here]
    in_rest = [v for v, here in zip(specials, to_a, strict=True) if not here]
    a_dense = random_symmetric_dense(shape, (), rng)
    # Specials go in before mirroring: a symmetric A stays symmetric.
    a_dense = mirror_canonical(_with_specials(a_dense, in_a, rng), normalized)
    if fmt == "dense":
        a = a_dense
    elif normalized:
        a = SymmetricTensor.from_dense(a_dense, normalized)
    else:
        a = SparseTensor.from_dense(a_dense)
    inputs = {"A": a}
    if "x[" in text:
        inputs["x"] = _with_specials(rng.uniform(-1, 1, SIZE), in_rest, rng)
    if "B[" in text:
        inputs["B"] = _with_specials(rng.uniform(-1, 1, (SIZE, SIZE)), in_rest, rng)
    symmetric = {"A": groups} if groups is not None else None
    kernels = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for symmetry in (True, False):
            kernels.append(sg.compile(text, symmetric=symmetric, formats={"A": fmt}, symmetry=symmetry,
                                      backend=backend))
    einsum = kernels[0].program.einsum
    dense = {n: dense_for_oracle(v, einsum.reduce) for n, v in inputs.items()}
    # Nothing happens where an access of the sparse A reads an entry A does not store: the sparse
    # loop never visits it, and a second access read densely is guarded by A's membership (a
    # term with such an access is the zero, the others count).
    stored = {access: _stored(a) for access in accesses(einsum.rhs) if access.tensor == "A"} \
        if fmt != "dense" else None
    expected = interpret_einsum(einsum, dense, stored=stored)
    for kernel in kernels:
        driver, _ = choose_driver(kernel.symmetrized)
        if one_term and not kernel.symmetrized.exploit:
            # A is a factor of every term, so it drives the kernel without symmetry; symmetrized,
            # the updates may hold different arrangements of A with none common to all (e.g.
            # A[i,i,k,l,m]*A[i,j,k,l,m]*A[l,k,j,i,m] with A symmetric in modes (0, 1)): then
            # nothing drives and every sparse read is guarded instead
            assert (driver is not None) == (fmt != "dense"), kernel
        result = kernel(**inputs).numpy()
        np.testing.assert_allclose(result, expected, rtol=1e-12, atol=1e-12,
                                   err_msg=f"{text} {groups} {fmt} {specials} {kernel}")  # nan == nan here
    assert kernels[0].stats["work_ratio"] <= 1.0 + 1e-12


def _stored(value) -> np.ndarray:
    """Boolean array of the entries a sparse input stores (all of them, symmetric or not)."""
    stored = value.expanded() if isinstance(value, SymmetricTensor) else value
    mask = np.zeros(stored.shape, dtype=bool)
    mask[tuple(np.asarray(stored.indices))] = True
    return mask


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
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


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sum_expressions(), st.integers(0, 2**16))
def test_random_sums_reference(case, seed):
    run_case(*case, backend="reference", seed=seed, one_term=False)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sum_expressions(), st.integers(0, 2**16))
def test_random_sums_numba(case, seed):
    run_case(*case, backend="numba", seed=seed, one_term=False)


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
