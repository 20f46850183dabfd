"""Prepared calls (runtime.Launch, inputs.PreparedBind): a repeat call with an input signature seen
before skips `bind`, and still sees every change the contract says it sees: values written in
place, new values (`with_values`), a scipy matrix's data written in place (symmetry checked
again), its structure arrays reassigned, its nnz or shape changed; a changed signature is bound
again and gets its own prepared call."""

import concurrent.futures
import os

os.environ["TRITON_INTERPRET"] = "1"

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import scipy.sparse as sp  # noqa: E402
import torch  # noqa: E402

import systec_gpu as sg  # noqa: E402
from systec_gpu import inputs, runtime  # noqa: E402
from systec_gpu.storage import EntryError  # noqa: E402

from .symdata import symmetric_sparse  # noqa: E402

BACKENDS = ["numba", "triton"]
FIRST = 2  # calls bound by `bind`: the first, and the first that sees the sparse structure again


@pytest.fixture
def binds(monkeypatch):
    """Counts the calls bound through the general `bind` (not a prepared one)."""
    counts = [0]
    original = runtime.bind

    def counting(*args, **kwargs):
        counts[0] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(runtime, "bind", counting)
    return counts


def _ssymv(backend):
    return sg.compile("y[i] += A[i,j]*x[j]", symmetric={"A": "full"}, backend=backend)


def _scipy_symmetric(n: int, seed: int) -> sp.csr_matrix:
    a = sp.random(n, n, density=0.3, random_state=seed, format="csr")
    m = sp.csr_matrix(a + a.T)
    m.sort_indices()
    return m


@pytest.mark.parametrize("backend", BACKENDS)
def test_repeat_calls_are_prepared_and_see_new_values(backend, binds):
    kernel = _ssymv(backend)
    rng = np.random.default_rng(0)
    a = symmetric_sparse(2, 7, rng)
    dense = a.to_dense()
    for _ in range(4):
        x = rng.uniform(-1, 1, 7)
        np.testing.assert_allclose(kernel(A=a, x=x).numpy(), dense @ x, rtol=1e-12)
    assert binds[0] == FIRST  # the first call, and the first that sees the structure again
    launch = kernel.launch(backend)
    assert len(launch._prepared) == 1
    a.values *= 3.0  # written in place: values are read on every call
    x = rng.uniform(-1, 1, 7)
    np.testing.assert_allclose(kernel(A=a, x=x).numpy(), 3.0 * dense @ x, rtol=1e-12)
    b = a.with_values(np.ones(a.nnz))  # the same structure, new values: the same prepared call
    np.testing.assert_allclose(kernel(A=b, x=x).numpy(), (dense != 0) @ x, rtol=1e-12)
    assert binds[0] == FIRST and len(launch._prepared) == 1
    assert kernel.stats["stored_nonzeros"] == a.nnz  # the last call's arguments, as bind gives them


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_changed_signature_is_bound_again(backend, binds):
    kernel = _ssymv(backend)
    rng = np.random.default_rng(1)
    a = symmetric_sparse(2, 6, rng)
    dense = a.to_dense()
    x = rng.uniform(-1, 1, 6)
    kernel(A=a, x=x)
    kernel(A=a, x=x)
    kernel(A=a, x=x)
    assert binds[0] == FIRST
    changes = [
        ({"A": a, "x": x.astype(np.float32)}, dense @ x.astype(np.float32)),  # dtype
        ({"A": a, "x": np.asfortranarray(np.stack([x, x]))[0]}, dense @ x),  # layout: a strided view
        ({"A": a, "x": list(x)}, dense @ x),  # kind
        ({"A": symmetric_sparse(2, 6, rng, per_class=3), "x": x}, None),  # another structure
    ]
    for tensors, expected in changes:
        before = binds[0]
        result = kernel(**tensors).numpy()
        if expected is None:
            expected = tensors["A"].to_dense() @ x
        np.testing.assert_allclose(result, expected, rtol=1e-5 if result.dtype == np.float32 else 1e-12)
        assert binds[0] == before + 1, tensors
    kernel(A=a, x=x, check=False)  # `check` is part of the signature
    assert binds[0] == FIRST + len(changes) + 1
    with pytest.raises(ValueError, match="size mismatch for index"):  # a new shape is checked as ever
        kernel(A=a, x=np.ones(5))
    kernel(A=a, x=x)  # one prepared call per sparse structure and `check`: the last signature's
    before = binds[0]
    np.testing.assert_allclose(kernel(A=a, x=x).numpy(), dense @ x, rtol=1e-12)
    assert binds[0] == before


@pytest.mark.parametrize("backend", BACKENDS)
def test_scipy_data_written_in_place_is_seen_and_checked(backend, binds):
    kernel = _ssymv(backend)
    m = _scipy_symmetric(9, 2)
    x = np.random.default_rng(2).uniform(-1, 1, 9)
    for _ in range(3):
        np.testing.assert_allclose(kernel(A=m, x=x).numpy(), m @ x, rtol=1e-12)
    assert binds[0] == FIRST
    m.data *= 2.0  # symmetric still: a new conversion, the same prepared call's kind
    np.testing.assert_allclose(kernel(A=m, x=x).numpy(), m @ x, rtol=1e-12)
    off = int(np.flatnonzero(m.indices != np.repeat(np.arange(9), np.diff(m.indptr)))[0])
    m.data[off] += 1.0  # one entry without its mirror's value: declared symmetry is checked again
    with pytest.raises(EntryError, match="A is not symmetric"):
        kernel(A=m, x=x)
    m.data[off] -= 1.0
    np.testing.assert_allclose(kernel(A=m, x=x).numpy(), m @ x, rtol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_scipy_structure_reassigned_nnz_or_shape_changed_is_seen(backend):
    kernel = _ssymv(backend)
    m = _scipy_symmetric(8, 3)
    x = np.random.default_rng(3).uniform(-1, 1, 8)
    for _ in range(2):
        np.testing.assert_allclose(kernel(A=m, x=x).numpy(), m @ x, rtol=1e-12)
    # reassigned structure arrays (the matrix's transpose pattern is the same: a symmetric matrix)
    t = m.transpose().tocsr()
    t.sort_indices()
    m.indices, m.indptr, m.data = t.indices.copy(), t.indptr.copy(), t.data * 0.5
    np.testing.assert_allclose(kernel(A=m, x=x).numpy(), m @ x, rtol=1e-12)
    # fewer stored entries: a symmetric pair removed
    dense = m.toarray()
    i, j = np.argwhere(np.triu(dense, 1) != 0)[0]
    dense[i, j] = dense[j, i] = 0.0
    smaller = sp.csr_matrix(dense)
    m.data, m.indices, m.indptr = smaller.data, smaller.indices, smaller.indptr
    np.testing.assert_allclose(kernel(A=m, x=x).numpy(), dense @ x, rtol=1e-12)
    # another shape
    m.resize((6, 6))
    m = sp.csr_matrix((m + m.T) * 0.5)
    np.testing.assert_allclose(kernel(A=m, x=x[:6]).numpy(), m @ x[:6], rtol=1e-12)


def test_scipy_structure_cache_policy_is_identity():
    """What the conversion cache compares: a scipy matrix's structure arrays by identity, its
    data byte for byte (inputs module doc, README "Calls, caches and host time")."""
    m = _scipy_symmetric(6, 4)
    first = inputs._conversion("A", m, ((0, 1),), True)
    assert inputs._conversion("A", m, ((0, 1),), True) is first
    assert [name for name, _ in first.structure] == ["indptr", "indices"]
    assert dict(first.structure)["indptr"] is m.indptr and dict(first.structure)["indices"] is m.indices
    m.indices = m.indices.copy()  # the same coordinates, another array: converted again
    second = inputs._conversion("A", m, ((0, 1),), True)
    assert second is not first
    m.data = m.data.copy()  # the same bytes in another array: reused
    assert inputs._conversion("A", m, ((0, 1),), True) is second
    m.data *= 2.0  # other values, written in place: converted again
    third = inputs._conversion("A", m, ((0, 1),), True)
    assert third is not second
    np.testing.assert_array_equal(third.storage.values, 2.0 * second.storage.values)
    assert inputs._conversion("A", m, ((0, 1),), False) is not third  # another `check`: another conversion


@pytest.mark.parametrize("backend", BACKENDS)
def test_out_on_the_prepared_path(backend, binds):
    kernel = _ssymv(backend)
    rng = np.random.default_rng(5)
    a = symmetric_sparse(2, 5, rng)
    out = torch.full((5,), np.nan, dtype=torch.float64)
    for _ in range(3):
        x = rng.uniform(-1, 1, 5)
        assert kernel(A=a, x=x, out=out) is out
        np.testing.assert_allclose(out.numpy(), a.to_dense() @ x, rtol=1e-12)
    assert binds[0] == FIRST
    with pytest.raises(ValueError, match=r"out= has shape \(4,\) but y has shape \(5,\)"):
        kernel(A=a, x=x, out=torch.zeros(4, dtype=torch.float64))


def test_torch_dense_operands_on_the_triton_path(binds):
    kernel = _ssymv("triton")
    rng = np.random.default_rng(6)
    a = symmetric_sparse(2, 6, rng)
    x = torch.from_numpy(rng.uniform(-1, 1, 6))
    for _ in range(2):
        np.testing.assert_allclose(kernel(A=a, x=x).numpy(), a.to_dense() @ x.numpy(), rtol=1e-12)
    x.mul_(2.0)  # written in place: read again
    np.testing.assert_allclose(kernel(A=a, x=x).numpy(), a.to_dense() @ x.numpy(), rtol=1e-12)
    assert binds[0] == FIRST
    kernel(A=a, x=x.float())  # another dtype: bound again
    assert binds[0] == FIRST + 1


def test_prepared_calls_from_many_threads():
    # numba only: Triton's CPU interpreter patches its language module while it runs a kernel
    kernel = _ssymv("numba")
    rng = np.random.default_rng(7)
    a = symmetric_sparse(2, 40, rng, per_class=6)
    m = sp.csr_matrix(a.to_dense())
    xs = rng.uniform(-1, 1, (16, 40))
    scales = rng.uniform(0.5, 2.0, 16)

    def call(k: int):
        operand = m if k % 3 == 0 else a.with_values(a.values * scales[k % 16])
        return k, kernel(A=operand, x=xs[k % 16]).numpy()

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(call, range(96)))
    for k, y in results:
        scale = 1.0 if k % 3 == 0 else scales[k % 16]
        np.testing.assert_allclose(y, scale * (a.to_dense() @ xs[k % 16]), rtol=1e-12, atol=1e-12)


def _torch_storage(a):
    return sg.SymmetricTensor.from_canonical(torch.from_numpy(a.indices.copy()), torch.from_numpy(a.values.copy()),
                                             a.shape, a.groups)


@pytest.mark.parametrize("on_device", [False, True], ids=["host", "device"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_torch_storage_on_the_prepared_path(backend, on_device, binds, monkeypatch):
    """Torch-held storage: read on the host (numba; triton on the CPU), or kept where it lives by
    a device backend (checked on the CPU by treating torch's CPU as the device, as
    test_storage_device.py does)."""
    if on_device:
        if backend != "triton":
            pytest.skip("only a device backend keeps storage on its device")
        monkeypatch.setattr(inputs, "_on_accelerator", lambda storage: isinstance(storage.indices, torch.Tensor))
    kernel = _ssymv(backend)
    rng = np.random.default_rng(8)
    a = _torch_storage(symmetric_sparse(2, 7, rng))
    dense = a.to_dense().numpy()
    x = rng.uniform(-1, 1, 7)
    for _ in range(2):
        np.testing.assert_allclose(kernel(A=a, x=x).numpy(), dense @ x, rtol=1e-12)
    a.values.mul_(-2.0)  # written in place: read again
    np.testing.assert_allclose(kernel(A=a, x=x).numpy(), -2.0 * dense @ x, rtol=1e-12)
    b = a.with_values(torch.ones(a.nnz, dtype=torch.float64))
    np.testing.assert_allclose(kernel(A=b, x=x).numpy(), (dense != 0) @ x, rtol=1e-12)
    assert binds[0] == FIRST
    assert isinstance(kernel._last.driver.values, torch.Tensor if on_device else np.ndarray)
    kernel(A=a.with_values(a.values.float()), x=x.astype(np.float32))  # another dtype: bound again
    assert binds[0] == FIRST + 1


def test_parallel_numba_runs_are_prepared_too(binds):
    """Work above numba_backend.SERIAL_BELOW runs in parallel chunks; its repeat calls are
    prepared too (the prepared bind, and the backend's run specialized for the signature)."""
    kernel = _ssymv("numba")
    m = sp.csr_matrix(sp.random(1000, 1000, density=0.05, random_state=9))
    m = sp.csr_matrix(m + m.T)
    a = sg.SymmetricTensor.from_coo(np.vstack(m.nonzero()), m.data, m.shape)
    assert a.nnz >= 20_000
    rng = np.random.default_rng(9)
    for operand in (a, m):
        for _ in range(3):
            x = rng.uniform(-1, 1, 1000)
            np.testing.assert_allclose(kernel(A=operand, x=x).numpy(), m @ x, rtol=1e-10, atol=1e-10)
    assert binds[0] == 2 * FIRST  # per operand
    from systec_gpu.backends import numba_backend

    loops = kernel.launch("numba").loops
    assert numba_backend.estimated_points(loops, kernel._last) >= numba_backend.SERIAL_BELOW  # the parallel path


@pytest.mark.parametrize("expression, symmetric, make_output", [
    ("y[] += x[i]*A[i,j]*x[j]", {"A": "full"}, lambda a, x: x @ a @ x),  # a 0-d result
    ("C[i,j] += A[i,k]*B[k,j]", {"A": "full"}, lambda a, b: a @ b),  # a dense second operand
    ("y[i] min= A[i,j] + x[j]", {"A": "full"}, lambda a, x: np.where(a != 0, a + x, np.inf).min(axis=1)),
])
@pytest.mark.parametrize("backend", BACKENDS)
def test_prepared_calls_of_other_shapes_and_semirings(backend, expression, symmetric, make_output, binds):
    kernel = sg.compile(expression, symmetric=symmetric, backend=backend)
    rng = np.random.default_rng(10)
    a = symmetric_sparse(2, 6, rng)
    dense = a.to_dense()
    other = [n for n in ("x", "B") if f"{n}[" in expression][0]
    for _ in range(4):
        operand = rng.uniform(-1, 1, (6, 3) if other == "B" else 6)
        result = kernel(A=a, **{other: operand}).numpy()
        np.testing.assert_allclose(result, make_output(dense, operand), rtol=1e-12, atol=1e-12)
        assert result.shape == np.shape(make_output(dense, operand))
    assert binds[0] == FIRST


def test_a_sparse_torch_tensor_where_a_dense_one_was_prepared(binds):
    kernel = _ssymv("triton")
    rng = np.random.default_rng(11)
    a = symmetric_sparse(2, 6, rng)
    x = torch.from_numpy(rng.uniform(-1, 1, 6))
    for _ in range(3):
        kernel(A=a, x=x)
    assert binds[0] == FIRST
    sparse_x = x.to_sparse()  # the same type, shape, dtype and device; another layout
    np.testing.assert_allclose(kernel(A=a, x=sparse_x).numpy(), a.to_dense() @ x.numpy(), rtol=1e-12)
    assert binds[0] == FIRST + 1


def test_blas_syrk_calls_are_prepared(binds):
    """The dense SSYRK plan (BLAS ?syrk + mirror, backends/plans.py) has no sparse structure to
    wait for: its calls are prepared from the first, and still return both halves, or the
    canonical one where asked."""
    kernel = sg.compile("C[i,j] += A[i,k]*A[j,k]", backend="numba")
    rng = np.random.default_rng(12)
    for _ in range(3):
        a = rng.uniform(-1, 1, (9, 4))
        np.testing.assert_allclose(kernel(A=a).numpy(), a @ a.T, rtol=1e-12, atol=1e-12)
    assert binds[0] == 1 and kernel._last.output_mirrored
    canonical = kernel(A=a, canonical_output=True).numpy()
    np.testing.assert_allclose(canonical, np.triu(a @ a.T), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(kernel(A=a).numpy(), a @ a.T, rtol=1e-12, atol=1e-12)  # whole again
    kernel(A=a.astype(np.float32))  # another dtype: bound again
    assert binds[0] == 2


def test_prepared_parallel_runs_follow_the_thread_count(binds, monkeypatch):
    """A prepared numba run reads numba's thread count on every call (numba.set_num_threads
    between calls takes effect) and splits the work into that many chunks."""
    import numba

    from systec_gpu.backends import numba_backend

    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("one numba thread on this machine")
    monkeypatch.setattr(numba_backend, "SERIAL_BELOW", 0)  # parallel at any size
    kernel = _ssymv("numba")
    rng = np.random.default_rng(13)
    a = symmetric_sparse(2, 30, rng, per_class=40)
    dense = a.to_dense()
    before = numba.get_num_threads()
    try:
        for threads in (2, 1, 2, 1):
            numba.set_num_threads(threads)
            assert numba_backend.num_threads() == numba.get_num_threads() == threads
            x = rng.uniform(-1, 1, 30)
            np.testing.assert_allclose(kernel(A=a, x=x).numpy(), dense @ x, rtol=1e-12, atol=1e-12)
            assert kernel._last.chunks == threads
    finally:
        numba.set_num_threads(before)
    assert binds[0] == FIRST
