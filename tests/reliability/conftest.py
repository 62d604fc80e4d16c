"""The reliability battery runs on one torch thread (its shared fixtures are in tests/conftest.py)."""
from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread: bit-identical numbers across processes, and fast on a busy box."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
