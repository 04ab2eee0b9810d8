import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    # On this shared 2-core machine one OpenMP thread is ~15x faster than two whenever other jobs
    # compete for the cores (measured), and results are the same.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
