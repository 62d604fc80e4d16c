"""Shared constants and helpers of the reliability battery (fixtures are in conftest.py).

A plain module with a unique name: ``conftest`` itself cannot be imported by name, since
tests/conftest.py shares that name.
"""
from __future__ import annotations

from pathlib import Path

import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

from sae_steer.collect import attached_hook_count
from sae_steer.config import SAEConfig
from sae_steer.sae import SAE
from sae_steer.toystories.text import SPECIAL_TOKENS
from sae_steer.toystories.tokenizer import build_tokenizer

HOOK = "blocks.0.hook_resid_post"
D_MODEL = 16

# Words of the tokenized twin: story words plus everything hostile data-set text contains.
WORDS = ("Once upon a time there was little girl named Lily she liked to play in the park "
         "with her friend Tom . , ! ? < > / script img src = x onerror alert ( 1 ) & amp "
         "; \" ' ` é café 日本 語 😀 naïve").split()


def tokenized_model(n_ctx: int = 64, model_name: str = "reliability/tok") -> HookedTransformer:
    """A random 2-layer model like ``tiny_model`` but with a word-level tokenizer."""
    tokenizer = build_tokenizer(list(SPECIAL_TOKENS) + list(dict.fromkeys(WORDS)))
    cfg = HookedTransformerConfig(
        n_layers=2, d_model=D_MODEL, n_ctx=n_ctx, d_head=4, n_heads=4, d_mlp=64,
        d_vocab=len(tokenizer), act_fn="gelu", normalization_type="LN", device="cpu",
        default_prepend_bos=True, model_name=model_name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = HookedTransformer(cfg, tokenizer=tokenizer)
    model.eval()
    return model


def make_sae(d_in: int = D_MODEL, d_sae: int = 8, hook_name: str | None = HOOK, seed: int = 0,
             **kw) -> SAE:
    """A real SAE with seeded random weights (no global RNG touched) and a non-zero b_dec."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        sae = SAE(SAEConfig(d_in=d_in, d_sae=d_sae, hook_name=hook_name, device="cpu", **kw))
        with torch.no_grad():
            sae.b_enc.uniform_(-0.1, 0.3)
            sae.b_dec.normal_(0, 0.1)
    return sae


def assert_clean(model: HookedTransformer) -> None:
    """No hook of any kind is left on ``model``."""
    assert attached_hook_count(model) == 0


def leftovers(root: Path) -> list[str]:
    """Hidden temp files/dirs (``.tmp`` / ``.tmp_*``) anywhere under ``root``."""
    return sorted(str(p.relative_to(root)) for p in Path(root).rglob("*")
                  if p.name.startswith(".") and ".tmp" in p.name)
