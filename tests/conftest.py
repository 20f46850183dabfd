"""`--slow`: heavier test modes (the adversarial suite draws ten times more examples).

TRITON_INTERPRET is set here, before any test module is collected: triton decorates its own jit
helpers (tl.sum, tl.max, ...) when it is first imported, and a module collected early (test_golden
generating the sparse-output source) may import it before the Triton test modules set the flag;
kernels interpreted later would then call compiled helpers. `TRITON_INTERPRET=0 pytest` still
turns it off (for a GPU run of the cuda-marked tests).

Hypothesis examples are derandomized (the "fixed" profile) unless SYSTEC_HYPOTHESIS=explore.
"""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

from hypothesis import settings  # noqa: E402

# The property tests draw the same examples on every run (a submission's CI result must not
# depend on luck); `SYSTEC_HYPOTHESIS=explore pytest` draws new ones, to look for new failures.
settings.register_profile("fixed", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile("explore" if os.environ.get("SYSTEC_HYPOTHESIS") == "explore" else "fixed")


def pytest_addoption(parser):
    parser.addoption("--slow", action="store_true", default=False,
                     help="run the heavier modes of the suite (e.g. 10x adversarial examples)")
