"""Random expressions through the Triton backend (interpreter on CPU tensors), against numpy."""

import os

os.environ["TRITON_INTERPRET"] = "1"  # before triton compiles any kernel: run on CPU tensors

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from .test_properties import expressions, run_case, sum_expressions  # noqa: E402


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(expressions(), st.integers(0, 2**16))
def test_random_expressions_triton(case, seed):
    run_case(*case, backend="triton", seed=seed)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sum_expressions(), st.integers(0, 2**16))
def test_random_sums_triton(case, seed):
    run_case(*case, backend="triton", seed=seed, one_term=False)


def test_six_mode_mttkrp_triton():
    from .test_properties import six_mode_mttkrp_case

    six_mode_mttkrp_case("triton")
