"""Tiny offline fixtures shared by every test module (builders live in ``builders.py``).

The folders below mirror ``sae_steer/``: ``tests/lm``, ``tests/sae``, ``tests/train``...
"""
from __future__ import annotations

import os

import pytest
from transformer_lens import HookedTransformer, HookedTransformerConfig

from builders import make_sae, seeded_model, tiny_config, tokenized_model
from sae_steer.sae import SAE

# The offline world and trained SAEs are cached here during a test session, so tests
# never touch the user's real cache and later tests reuse what earlier ones built.
os.environ.setdefault("SAE_STEER_CACHE", os.path.join(os.path.dirname(__file__), "..", ".cache"))


@pytest.fixture
def tiny_cfg() -> HookedTransformerConfig:
    return tiny_config()


@pytest.fixture
def tiny_model(tiny_cfg: HookedTransformerConfig) -> HookedTransformer:
    """A random 2-layer model with no tokenizer: feed it token tensors."""
    return seeded_model(tiny_cfg)


@pytest.fixture(scope="session")
def tok_model() -> HookedTransformer:
    """``tiny_model``'s twin with a word-level tokenizer (text prompts, search, rendering)."""
    return tokenized_model()


@pytest.fixture
def sae() -> SAE:
    """An 8-feature SAE on ``blocks.0.hook_resid_post`` of the 16-wide tiny models."""
    return make_sae()


def pytest_collection_modifyitems(config, items):
    """Run browser tests last: by then the unit and notebook tests have built the offline
    world and reference SAE in the test cache, so JupyterLab's "Run All" only loads them."""
    items.sort(key=lambda item: item.get_closest_marker("browser") is not None)
