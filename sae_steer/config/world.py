"""Configs of the offline worlds: ``WorldConfig`` (the word-level world, presets in
``toystories.lm``) and ``NeoConfig`` (the GPT-Neo world in TinyStories-33M's format,
presets in ``toystories.neo``)."""
from __future__ import annotations

import dataclasses

from sae_steer.config.base import StageConfig, require


@dataclasses.dataclass
class WorldConfig(StageConfig):
    """The offline toy world: story corpus and the 4-layer model trained on it.

    Everything here is part of the model's cache key, so two configs that differ in any
    field build (and cache) two different models. Presets live in ``toystories.lm``.
    """

    name: str = "custom"
    """Preset name, carried into ``model.cfg.model_name`` as ``toystories/<name>``."""
    n_train_stories: int = 5000
    """Stories the model trains on (about 80 tokens each)."""
    n_val_stories: int = 500
    """Held-out stories for the validation loss."""
    seed: int = 0
    """Seeds the story generator and the model's initialisation and batch order."""
    n_layers: int = 4
    """Transformer blocks (TinyStories-33M has 4)."""
    d_model: int = 64
    """Residual stream width."""
    n_heads: int = 4
    """Attention heads per layer (d_head = d_model / n_heads)."""
    d_mlp: int = 256
    """MLP hidden width."""
    n_ctx: int = 128
    """Context length; longer stories are truncated for training."""
    steps: int = 450
    """Optimiser steps: a fixed count, so results never depend on machine load."""
    batch_size: int = 32
    """Stories per step."""
    lr: float = 3e-3
    """Peak AdamW learning rate (linear warm-up, cosine decay to 10%)."""
    warmup_steps: int = 30
    """Steps of linear learning-rate warm-up."""
    weight_decay: float = 0.01
    """AdamW weight decay on matrices."""

    def __post_init__(self) -> None:
        for field in ("n_train_stories", "n_val_stories", "n_layers", "d_model", "n_heads",
                      "d_mlp", "n_ctx", "steps", "batch_size"):
            value = getattr(self, field)
            require(isinstance(value, int) and value > 0,
                     f"{field} must be a positive integer, got {value!r}")
        require(self.d_model % self.n_heads == 0,
                 f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")
        require(self.lr > 0, f"lr must be positive, got {self.lr!r}")
        require(0 <= self.warmup_steps < self.steps,
                 f"warmup_steps must be in [0, steps), got {self.warmup_steps!r}")


@dataclasses.dataclass
class NeoConfig(StageConfig):
    """The GPT-Neo offline world: corpus, BPE vocabulary, model shape and training.

    All of it is the world's cache key, like ``WorldConfig``'s.
    """

    name: str = "small"
    """Preset name, carried into the cache entry's name and ``toystories-neo/<name>``."""
    n_train_stories: int = 5000
    """Stories the model and the BPE vocabulary train on."""
    n_val_stories: int = 500
    """Held-out stories for the validation loss."""
    seed: int = 0
    """Seeds the story generator, the initialisation and the batch order."""
    vocab_size: int = 1024
    """BPE vocabulary, ``<|endoftext|>`` included (256 byte symbols + merges)."""
    n_layers: int = 4
    """Blocks, alternating global and local attention (TinyStories-33M has 4)."""
    d_model: int = 64
    """Residual stream width."""
    n_heads: int = 4
    """Attention heads per layer."""
    window_size: int = 32
    """Local attention window of the odd layers (TinyStories-33M: 256)."""
    steps: int = 450
    """Optimiser steps: a fixed count, so results never depend on machine load."""
    batch_size: int = 32
    """Stories per step."""
    lr: float = 3e-3
    """Peak AdamW learning rate (linear warm-up, cosine decay to 10%)."""
    warmup_steps: int = 30
    """Steps of linear learning-rate warm-up."""
    weight_decay: float = 0.01
    """AdamW weight decay on matrices."""

    def __post_init__(self) -> None:
        require(self.n_layers % 2 == 0 and self.d_model % self.n_heads == 0
                and self.vocab_size > 257,
                "NeoConfig needs an even n_layers, d_model divisible by n_heads "
                "and vocab_size > 257 (256 bytes + <|endoftext|>)")
