import os

import pytest

# Tests are CPU-only and offline; keep torch from oversubscribing the 2-core machine.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(autouse=True)
def _deterministic_threads():
    import torch

    torch.set_num_threads(2)
    yield
