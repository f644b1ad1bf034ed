pytest_plugins = ["dfkd.testing"]


def pytest_configure(config):
    """One torch thread per test process: the models are tiny and threads only contend."""
    import torch

    torch.set_num_threads(1)
