"""Fixtures of the reliability battery (helpers live in rel_helpers.py)."""
from __future__ import annotations

import pytest
import torch
from transformer_lens import HookedTransformer

from rel_helpers import make_sae, tokenized_model
from sae_steer.sae import SAE


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread: bit-identical numbers across processes, and fast on a busy box."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tok_model() -> HookedTransformer:
    """``tiny_model``'s twin with a word-level tokenizer (text prompts, search, rendering)."""
    return tokenized_model()


@pytest.fixture
def sae() -> SAE:
    """An 8-feature SAE on ``blocks.0.hook_resid_post`` of the 16-wide tiny models."""
    return make_sae()
