import pyro
import pytest
import torch

# Small tensors: one thread is fastest, and avoids oversubscribing shared CI cores.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def clean_pyro_state():
    """Every test starts from a cleared parameter store, validation on and a fixed seed."""
    pyro.clear_param_store()
    pyro.enable_validation(True)
    pyro.set_rng_seed(0)
    torch.set_default_dtype(torch.float32)
    yield
    pyro.clear_param_store()
