"""The repository's own test settings; dfkd.testing.fixtures itself is a pytest plugin (entry
point ``pytest11``), loaded wherever dfkd is installed."""


def pytest_configure(config):
    """One torch thread per test process: the models are tiny and threads only contend."""
    import torch

    torch.set_num_threads(1)
