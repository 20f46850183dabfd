"""The prepared launch: a repeat call emits, hashes and loads nothing; `out=`; the backend table."""

import os

os.environ["TRITON_INTERPRET"] = "1"

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import systec_gpu as sg  # noqa: E402
from systec_gpu.backends import cache, numba_backend, registry, triton_backend  # noqa: E402

from .symdata import symmetric_sparse  # noqa: E402


@pytest.fixture
def counted(monkeypatch):
    """Counts source emissions (both emitters) and content hashing of sources."""
    counts = {"numba": 0, "triton": 0, "hash": 0}

    def counting(key, original):
        def wrapped(*args, **kwargs):
            counts[key] += 1
            return original(*args, **kwargs)

        return wrapped

    monkeypatch.setattr(numba_backend._Emitter, "emit", counting("numba", numba_backend._Emitter.emit))
    monkeypatch.setattr(triton_backend._Emitter, "emit", counting("triton", triton_backend._Emitter.emit))
    monkeypatch.setattr(cache, "source_path", counting("hash", cache.source_path))
    return counts


@pytest.mark.parametrize("backend", ["numba", "triton"])
def test_repeat_calls_emit_and_hash_nothing(backend, counted):
    # a fresh expression (nothing memoized yet): the first call emits once, repeats never
    kernel = sg.compile("z[i] += Q[i,j]*w[j]*w[j]", symmetric={"Q": "full"}, backend=backend)
    rng = np.random.default_rng(0)
    q = symmetric_sparse(2, 6, rng)
    w = rng.uniform(-1, 1, 6)
    first = kernel(Q=q, w=w).numpy()
    after_first = dict(counted)
    assert after_first[backend] == 1 and after_first["hash"] >= 1
    for scale in (2.0, 3.0, 4.0):
        np.testing.assert_allclose(kernel(Q=q, w=scale * w).numpy(), scale**2 * first, rtol=1e-12)
    assert counted == after_first
    assert list(kernel._launches) == [backend]


def test_a_new_schedule_gets_its_own_launch_plan(counted):
    kernel = sg.compile("y[i] += A[i,j]*x[j]", symmetric={"A": "full"}, backend="triton")
    rng = np.random.default_rng(1)
    small = symmetric_sparse(2, 6, rng)
    kernel(A=small, x=np.ones(6))
    plans = triton_backend._launch_plan.cache_info().currsize
    kernel(A=small, x=np.ones(6))
    assert triton_backend._launch_plan.cache_info().currsize == plans
    big = symmetric_sparse(2, 1100, rng, per_class=30)  # more rows: a larger row block, a new schedule
    np.testing.assert_allclose(kernel(A=big, x=np.ones(1100)).numpy(), big.to_dense().sum(axis=1), rtol=1e-12)
    assert triton_backend._launch_plan.cache_info().currsize == plans + 1


@pytest.mark.parametrize("backend", ["numba", "reference", "triton"])
def test_out_is_written_and_checked(backend):
    kernel = sg.compile("y[i] += A[i,j]*x[j]", symmetric={"A": "full"}, backend=backend)
    rng = np.random.default_rng(2)
    a = symmetric_sparse(2, 5, rng)
    x = rng.uniform(-1, 1, 5)
    out = torch.full((5,), np.nan, dtype=torch.float64)
    result = kernel(A=a, x=x, out=out)
    assert result is out
    np.testing.assert_allclose(out.numpy(), a.to_dense() @ x, rtol=1e-12)
    with pytest.raises(ValueError, match=r"out= has shape \(4,\) but y has shape \(5,\)"):
        kernel(A=a, x=x, out=torch.zeros(4, dtype=torch.float64))
    with pytest.raises(TypeError, match="out= has dtype torch.float32 but this call computes y in torch.float64"):
        kernel(A=a, x=x, out=torch.zeros(5, dtype=torch.float32))
    with pytest.raises(TypeError, match="out= must be a torch.Tensor"):
        kernel(A=a, x=x, out=np.zeros(5))


def test_backend_table_drives_names_and_sources():
    kernel = sg.compile("y[i] += A[i,j]*x[j]", symmetric={"A": "full"})
    for name, backend in registry.BACKENDS.items():
        assert kernel.source(name) == backend.source(kernel.loops)
    with pytest.raises(ValueError, match="unknown backend 'cuda'; known: auto, numba, triton, reference"):
        sg.compile("y[i] += A[i,j]*x[j]", backend="cuda")
    with pytest.raises(ValueError, match="unknown backend 'opencl'"):
        kernel.source("opencl")


def test_import_is_light():
    """`import systec_gpu` loads neither numba, triton nor torch (they load on first use)."""
    import subprocess
    import sys

    code = "import sys, systec_gpu; print(sorted(m for m in ('numba', 'triton', 'torch') if m in sys.modules))"
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert found.strip() == "[]"
