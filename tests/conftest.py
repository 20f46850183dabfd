"""`--slow`: heavier test modes (the adversarial suite draws ten times more examples)."""


def pytest_addoption(parser):
    parser.addoption("--slow", action="store_true", default=False,
                     help="run the heavier modes of the suite (e.g. 10x adversarial examples)")
