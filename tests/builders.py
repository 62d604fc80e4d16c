"""The test suite's shared builders: one tiny model config, one SAE builder, one tokenizer.

A plain module with a unique name (``conftest`` itself cannot be imported by name); the
fixtures in ``conftest.py`` wrap these. Hand-set weights make expected values obvious
(``identity_sae``); seeded random ones never touch the global RNG.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

from sae_steer.config import SAEConfig
from sae_steer.config.sae import TOPK_FAMILY
from sae_steer.lm import attached_hook_count
from sae_steer.sae import SAE
from sae_steer.toystories.text import SPECIAL_TOKENS
from sae_steer.toystories.tokenizer import build_tokenizer

HOOK = "blocks.0.hook_resid_post"
D_MODEL = 16
PROMPT = [0, 5, 9, 3]
"""Token ids for models without a tokenizer."""

# Words of the tokenized model: story words plus everything hostile data-set text contains.
WORDS = ("Once upon a time there was little girl named Lily she liked to play in the park "
         "with her friend Tom . , ! ? < > / script img src = x onerror alert ( 1 ) & amp "
         "; \" ' ` é café 日本 語 😀 naïve").split()


def tiny_config(**overrides: Any) -> HookedTransformerConfig:
    """The suite's one model shape: 2 layers, d_model 16, LayerNorm, GELU, on CPU."""
    base = dict(n_layers=2, d_model=D_MODEL, n_ctx=32, d_head=4, n_heads=4, d_mlp=64,
                d_vocab=50, act_fn="gelu", normalization_type="LN", device="cpu")
    base.update(overrides)
    return HookedTransformerConfig(**base)


def seeded_model(cfg: HookedTransformerConfig, tokenizer=None, seed: int = 0) -> HookedTransformer:
    """A model with seeded random weights (the global RNG is left as it was), in eval mode."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = HookedTransformer(cfg, tokenizer=tokenizer)
    return model.eval()


def word_tokenizer(words=WORDS):
    """A word-level tokenizer (the offline world's kind) over ``words``."""
    return build_tokenizer(list(SPECIAL_TOKENS) + list(dict.fromkeys(words)))


def tokenized_model(n_ctx: int = 64, model_name: str = "tests/tok", **overrides: Any
                    ) -> HookedTransformer:
    """``tiny_model``'s twin with a word-level tokenizer (text prompts, search, rendering)."""
    tokenizer = word_tokenizer()
    cfg = tiny_config(n_ctx=n_ctx, d_vocab=len(tokenizer), default_prepend_bos=True,
                      model_name=model_name, **overrides)
    return seeded_model(cfg, tokenizer)


def make_sae(d_in: int = D_MODEL, d_sae: int = 8, hook_name: str | None = HOOK, seed: int = 0,
             arch: str = "relu", k: int | None = None, **kw: Any) -> SAE:
    """A real SAE with seeded random weights (no global RNG touched) and a non-zero b_dec."""
    k = (k or 2) if arch in TOPK_FAMILY else None
    if arch == "matryoshka_batchtopk":
        kw.setdefault("matryoshka_widths", (d_sae // 2, d_sae))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        sae = SAE(SAEConfig(d_in=d_in, d_sae=d_sae, hook_name=hook_name, device="cpu",
                            architecture=arch, k=k, **kw))
        with torch.no_grad():
            sae.b_enc.uniform_(-0.1, 0.3)
            sae.b_dec.normal_(0, 0.1)
    return sae


def identity_sae(arch: str = "relu", b_dec=None, k: int | None = None, d: int = 4) -> SAE:
    """Hand-set weights: W_enc = W_dec = I, zero b_enc, so feats = act(x - b_dec) and
    x_hat = feats + b_dec exactly."""
    sae = make_sae(d_in=d, d_sae=d, hook_name=None, arch=arch, k=k)
    with torch.no_grad():
        sae.W_enc.copy_(torch.eye(d))
        sae.W_dec.copy_(torch.eye(d))
        sae.b_enc.zero_()
        sae.b_dec.copy_(torch.zeros(d) if b_dec is None else torch.tensor(b_dec))
    return sae


def assert_clean(model: HookedTransformer) -> None:
    """No hook of any kind is left on ``model``."""
    assert attached_hook_count(model) == 0


def leftovers(root: Path) -> list[str]:
    """Hidden temp files/dirs (``.tmp`` / ``.tmp_*``) anywhere under ``root``."""
    return sorted(str(p.relative_to(root)) for p in Path(root).rglob("*")
                  if p.name.startswith(".") and ".tmp" in p.name)


def spy_seeds(monkeypatch) -> list[set[int]]:
    """Record the seeds of every batch of rows the selection engine generates (its shared
    ranking baseline and every measurement batch), to check which stage drew them."""
    import sae_steer.measure.batch as batch_mod
    import sae_steer.measure.select as select_mod

    real, seen = batch_mod.generate_rows, []

    def spy(model, hook, deltas, seeds, cfg, **kw):
        seen.append(set(seeds))
        return real(model, hook, deltas, seeds, cfg, **kw)

    monkeypatch.setattr(batch_mod, "generate_rows", spy)
    monkeypatch.setattr(select_mod, "generate_rows", spy)
    return seen
