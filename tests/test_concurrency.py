"""Calls of one kernel from several threads, and several processes compiling into one cache."""

import ast
import concurrent.futures
import multiprocessing
import os

import numpy as np
import scipy.sparse as sp

import systec_gpu as sg


def _ssymv_inputs(n: int, seed: int):
    rng = np.random.default_rng(seed)
    a = sp.random(n, n, density=0.02, random_state=rng, format="csr")
    return sp.csr_matrix(a + a.T), rng.uniform(-1, 1, (8, n))


def test_one_kernel_from_many_threads():
    """Parallel (chunked) numba runs, the foreign-input cache and the prepared launch, shared by
    threads: every result is right."""
    csr, xs = _ssymv_inputs(2000, 0)  # ~160k stored entries: the parallel path
    prepared = sg.SymmetricTensor.from_coo(np.vstack(csr.nonzero()), csr.data, csr.shape)
    kernel = sg.compile("y[i] += A[i,j]*x[j]", symmetric={"A": "full"}, backend="numba")

    def call(k: int):
        a = csr if k % 2 else prepared
        x = xs[k % len(xs)]
        return k, kernel(A=a, x=x).numpy()

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(call, range(48)))
    for k, y in results:
        np.testing.assert_allclose(y, csr @ xs[k % len(xs)], rtol=1e-10, atol=1e-10)


def _compile_and_run(args):
    cache, seed = args
    os.environ["SYSTEC_CACHE_DIR"] = cache
    import systec_gpu as sg_child

    # an expression no other test compiles: both processes write the same new files at once
    kernel = sg_child.compile("w[i] += M[i,j]*v[j]*v[j]", symmetric={"M": "full"}, backend="numba")
    rng = np.random.default_rng(seed)
    m = rng.uniform(-1, 1, (30, 30))
    m = m + m.T
    v = rng.uniform(-1, 1, 30)
    return np.abs(kernel(M=m, v=v).numpy() - m @ (v * v)).max()


def test_processes_compiling_into_one_cache(tmp_path):
    cache = str(tmp_path / "cache")
    context = multiprocessing.get_context("spawn")
    with context.Pool(2) as pool:
        errors = pool.map(_compile_and_run, [(cache, 1), (cache, 2), (cache, 3), (cache, 4)])
    assert max(errors) < 1e-10
    files = [f for f in os.listdir(cache) if f.endswith(".py")]
    assert files and not [f for f in os.listdir(cache) if f.endswith(".tmp")]
    for name in files:  # intact: each parses, and names its content hash
        ast.parse((tmp_path / "cache" / name).read_text())
