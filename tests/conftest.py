"""Tiny offline fixtures shared by every test module.

Module-specific fixtures live in the test module that needs them.
"""
from __future__ import annotations

import os

import pytest
import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

# The offline world and trained SAEs are cached here during a test session, so tests
# never touch the user's real cache and later tests reuse what earlier ones built.
os.environ.setdefault("SAE_STEER_CACHE", os.path.join(os.path.dirname(__file__), "..", ".cache"))


@pytest.fixture
def tiny_cfg() -> HookedTransformerConfig:
    return HookedTransformerConfig(
        n_layers=2, d_model=16, n_ctx=32, d_head=4, n_heads=4, d_mlp=64,
        d_vocab=50, act_fn="gelu", normalization_type="LN", seed=0, device="cpu",
    )


@pytest.fixture
def tiny_model(tiny_cfg: HookedTransformerConfig) -> HookedTransformer:
    """A random 2-layer model with no tokenizer: feed it token tensors."""
    torch.manual_seed(0)
    model = HookedTransformer(tiny_cfg)
    model.eval()
    return model



def pytest_collection_modifyitems(config, items):
    """Run browser tests last: by then the unit and notebook tests have built the offline
    world and reference SAE in the test cache, so JupyterLab's "Run All" only loads them."""
    items.sort(key=lambda item: item.get_closest_marker("browser") is not None)
