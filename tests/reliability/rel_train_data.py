"""Synthetic activations, configs and SAEs for the training battery.

Kept free of TransformerLens so that the subprocesses the battery kills start in about
a second (torch + sae_steer.train only).
"""
from __future__ import annotations

import torch

from sae_steer.config import SAEConfig, TrainConfig
from sae_steer.sae import SAE

D_IN, D_SAE, N_STEPS = 8, 32, 40


def batches(n: int = N_STEPS, nan_at: int | None = None, value: float = float("nan")):
    """Sums of a few of 12 fixed directions (the same stream every call, from its seed)."""
    g = torch.Generator().manual_seed(123)
    dirs = torch.nn.functional.normalize(torch.randn(12, D_IN, generator=g), dim=1)
    for i in range(n):
        coef = torch.rand(64, 12, generator=g) * (torch.rand(64, 12, generator=g) < 0.2)
        x = 3 * coef @ dirs + 0.3
        if i == nan_at:
            x[7, 3] = value
        yield x


def cfg(**kw) -> TrainConfig:
    base = dict(n_steps=N_STEPS, batch_size=64, lr=1e-2, lr_warmup_steps=3, lr_decay_steps=8,
                l1_coefficient=0.2, l1_warmup_steps=6, dead_after_steps=4, resample_every=8,
                buffer_batches=2, log_every=5, eval_sequences=0, checkpoint_every=5, seed=3)
    return TrainConfig(**{**base, **kw})


def new_sae(seed: int = 0) -> SAE:
    """A fresh SAE whose init comes from ``seed`` (the global RNG is left untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return SAE(SAEConfig(d_in=D_IN, d_sae=D_SAE, device="cpu"))
