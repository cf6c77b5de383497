import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """Small CPU workloads: one intra-op thread avoids OpenMP spinning when the 2 cores are
    shared (measured 0.4 s vs 2-6 s per SmolLM2 forward under load); restored after."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
