"""One dataclass config per stage, saved as JSON beside what the stage produced.

Standard library only: every other module imports this one, so it must stay light.
Each class validates itself in ``__post_init__`` with messages a user can act on.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Literal, TypeVar

from sae_steer.fsutil import atomic_path

C = TypeVar("C", bound="StageConfig")


def write_json_atomic(path: str | os.PathLike, data: Any) -> None:
    """Write JSON via a temp file and rename, so a crash never leaves half a file."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True))


@dataclasses.dataclass
class StageConfig:
    """Base: JSON round-trip and a readable diff between two configs."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls: type[C], data: dict[str, Any]) -> C:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"{cls.__name__} has no field(s) {unknown}; known fields: {sorted(known)}"
            )
        return cls(**data)

    def save_json(self, path: str | os.PathLike) -> None:
        write_json_atomic(path, self.to_dict())

    @classmethod
    def load_json(cls: type[C], path: str | os.PathLike) -> C:
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"{cls.__name__}: config file {path} does not exist")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{cls.__name__}: {path} is not valid JSON ({e})") from e
        return cls.from_dict(data)

    def diff(self, other: StageConfig) -> dict[str, tuple[Any, Any]]:
        """Fields whose values differ, as ``{name: (self_value, other_value)}``."""
        mine, theirs = self.to_dict(), other.to_dict()
        return {k: (mine.get(k), theirs.get(k)) for k in sorted(set(mine) | set(theirs))
                if mine.get(k) != theirs.get(k)}


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


Architecture = Literal["relu", "topk"]


@dataclasses.dataclass
class SAEConfig(StageConfig):
    """Shape and kind of a sparse autoencoder (what ``sae.py`` needs to build one)."""

    d_in: int
    """Width of the activations the SAE reads (d_model of the hooked residual stream)."""
    d_sae: int
    """Number of features (the seed writeup used 10,000)."""
    architecture: str = "relu"
    """``relu`` (ReLU encoder, L1 penalty; the seed's kind) or ``topk`` (k largest kept)."""
    k: int | None = None
    """Active features per token for ``topk``; ignored for ``relu``."""
    dtype: str = "float32"
    """Parameter dtype, as a torch dtype name."""
    device: str | None = None
    """Where parameters live; None means CUDA when available, else CPU."""
    apply_b_dec_to_input: bool = True
    """Subtract ``b_dec`` before encoding (SAELens's default for standard SAEs)."""
    hook_name: str | None = None
    """TransformerLens hook the SAE was trained on, e.g. ``blocks.1.hook_resid_post``."""
    model_name: str | None = None
    """Model the SAE was trained on (``toystories/small``, ``tiny-stories-33M``...)."""
    context_size: int | None = None
    """Tokens per sequence during training."""
    prepend_bos: bool = True
    """Whether sequences started with BOS during training."""
    dataset_path: str | None = None
    """Text source the SAE was trained on."""

    def __post_init__(self) -> None:
        _require(isinstance(self.d_in, int) and self.d_in > 0,
                 f"d_in must be a positive integer, got {self.d_in!r}")
        _require(isinstance(self.d_sae, int) and self.d_sae > 0,
                 f"d_sae must be a positive integer, got {self.d_sae!r}")
        _require(self.architecture in ("relu", "topk"),
                 f"architecture must be 'relu' or 'topk', got {self.architecture!r}")
        if self.architecture == "topk":
            _require(isinstance(self.k, int) and 0 < self.k <= self.d_sae,
                     f"topk needs 0 < k <= d_sae ({self.d_sae}), got k={self.k!r}")
        _require(self.dtype in ("float32", "float16", "bfloat16", "float64"),
                 f"dtype must be one of float32/float16/bfloat16/float64, got {self.dtype!r}")


@dataclasses.dataclass
class TrainConfig(StageConfig):
    """How an SAE is trained: data stream, optimiser, sparsity schedule, logging, checkpoints.

    Steps count optimiser updates; one step reads ``batch_size`` activation vectors.
    """

    n_steps: int = 2000
    """Optimiser steps to take (tokens seen = ``n_steps * batch_size``)."""
    batch_size: int = 4096
    """Activation vectors (tokens) per optimiser step."""
    lr: float = 4e-4
    """Adam learning rate after warm-up."""
    adam_beta1: float = 0.9
    """Adam's first-moment decay."""
    adam_beta2: float = 0.999
    """Adam's second-moment decay."""
    lr_warmup_steps: int = 100
    """Steps over which the learning rate rises linearly from 0 to ``lr``."""
    lr_decay_steps: int = 400
    """Final steps over which the learning rate falls linearly to 0 (0: no decay)."""
    l1_coefficient: float = 5.0
    """Weight of the (decoder-norm weighted) L1 penalty for ``relu`` SAEs; unused by ``topk``."""
    l1_warmup_steps: int = 200
    """Steps over which the L1 coefficient rises linearly from 0 (avoids early dead features)."""
    aux_k_coefficient: float = 1 / 32
    """Weight of the AuxK loss that revives dead ``topk`` features (0: off)."""
    dead_after_steps: int = 200
    """A feature that has not fired for this many steps counts as dead."""
    resample_every: int = 500
    """``relu`` only: every this many steps re-initialise dead features toward
    inputs the SAE reconstructs worst (0: never). No resampling during LR decay."""
    dense_threshold: float = 0.1
    """A feature firing on more than this fraction of a batch counts as dense."""
    normalize_activations: bool = True
    """Scale inputs so their mean squared norm is ``d_in`` while training (so one
    ``l1_coefficient`` suits any model); the scale is folded into the biases at the end."""
    context_size: int = 128
    """Tokens per sequence fed to the model (sequences are truncated to this)."""
    model_batch_size: int = 32
    """Sequences per model forward pass while harvesting activations."""
    buffer_batches: int = 16
    """Shuffle buffer size in training batches: a batch mixes tokens from this many
    batches' worth of sequences, so it is never one story."""
    skip_bos: bool = True
    """Leave out the BOS position (its norm is an outlier); padding is always left out."""
    eval_sequences: int = 16
    """Held-out sequences used for the CE-loss-increase metric (0: skip that metric)."""
    log_every: int = 100
    """Compute and record metrics every this many steps (and at the last step)."""
    checkpoint_every: int = 0
    """Write a resumable checkpoint every this many steps (0: never)."""
    seed: int = 0
    """Seeds data shuffling and dead-feature resampling; equal seeds give equal runs."""

    def __post_init__(self) -> None:
        _require(isinstance(self.buffer_batches, int) and self.buffer_batches >= 2,
                 f"buffer_batches must be an integer >= 2, got {self.buffer_batches!r}")
        for name in ("n_steps", "batch_size", "context_size", "model_batch_size",
                     "log_every", "dead_after_steps"):
            value = getattr(self, name)
            _require(isinstance(value, int) and value > 0,
                     f"{name} must be a positive integer, got {value!r}")
        for name in ("lr_warmup_steps", "lr_decay_steps", "l1_warmup_steps",
                     "resample_every", "eval_sequences", "checkpoint_every", "seed"):
            value = getattr(self, name)
            _require(isinstance(value, int) and value >= 0,
                     f"{name} must be a non-negative integer, got {value!r}")
        _require(isinstance(self.lr, (int, float)) and 0 < self.lr < float("inf"),
                 f"lr must be a positive finite number, got {self.lr!r}")
        for name in ("l1_coefficient", "aux_k_coefficient"):
            value = getattr(self, name)
            _require(isinstance(value, (int, float)) and 0 <= value < float("inf"),
                     f"{name} must be a non-negative finite number, got {value!r}")
        for name in ("adam_beta1", "adam_beta2"):
            value = getattr(self, name)
            _require(0 <= value < 1, f"{name} must be in [0, 1), got {value!r}")
        _require(0 < self.dense_threshold <= 1,
                 f"dense_threshold must be in (0, 1], got {self.dense_threshold!r}")
        _require(self.lr_warmup_steps + self.lr_decay_steps <= self.n_steps,
                 f"lr_warmup_steps + lr_decay_steps ({self.lr_warmup_steps} + "
                 f"{self.lr_decay_steps}) must not exceed n_steps ({self.n_steps})")


@dataclasses.dataclass
class SearchConfig(StageConfig):
    """How ``search.py`` scans a text set for every feature's excerpts and statistics."""

    k: int = 10
    """Top excerpts kept per feature, ranked by the feature's max activation in the excerpt."""
    context_left: int = 16
    """Tokens kept before an excerpt's peak token."""
    context_right: int = 8
    """Tokens kept after an excerpt's peak token."""
    n_bands: int = 10
    """Lower-band sampling: the range (0, max] is cut into this many equal bands (deciles)."""
    samples_per_band: int = 2
    """Excerpts sampled uniformly at random per band (reservoir sampling)."""
    n_top_tokens: int = 32
    """Distinct tokens tracked per feature for "fires on" (sum of activation per token)."""
    context_size: int = 128
    """Tokens per text (BOS included); longer texts are truncated."""
    batch_size: int = 32
    """Texts per forward pass."""
    n_texts: int | None = None
    """Stop after this many texts (None: the whole text set)."""
    exclude_bos: bool = True
    """Ignore position 0 (BOS): its residual norm is atypical and features fire on it."""
    hist_log10_min: float = -3.0
    """Activation histogram: log10-spaced bins from 10**hist_log10_min ..."""
    hist_log10_max: float = 3.0
    """... to 10**hist_log10_max (values outside land in the first/last bin)."""
    hist_bins: int = 48
    """Number of histogram bins (8 per decade by default)."""
    seed: int = 0
    """Seeds band sampling; equal seeds and data give equal results."""

    def __post_init__(self) -> None:
        for name in ("k", "n_bands", "samples_per_band", "n_top_tokens", "context_size",
                     "batch_size", "hist_bins"):
            value = getattr(self, name)
            _require(isinstance(value, int) and not isinstance(value, bool) and value > 0,
                     f"{name} must be a positive integer, got {value!r}")
        for name in ("context_left", "context_right", "seed"):
            value = getattr(self, name)
            _require(isinstance(value, int) and value >= 0,
                     f"{name} must be a non-negative integer, got {value!r}")
        _require(self.n_texts is None or (isinstance(self.n_texts, int) and self.n_texts > 0),
                 f"n_texts must be None or a positive integer, got {self.n_texts!r}")
        _require(self.hist_log10_min < self.hist_log10_max,
                 f"hist_log10_min ({self.hist_log10_min}) must be below hist_log10_max "
                 f"({self.hist_log10_max})")


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
            _require(isinstance(value, int) and value > 0,
                     f"{field} must be a positive integer, got {value!r}")
        _require(self.d_model % self.n_heads == 0,
                 f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")
        _require(self.lr > 0, f"lr must be positive, got {self.lr!r}")
        _require(0 <= self.warmup_steps < self.steps,
                 f"warmup_steps must be in [0, steps), got {self.warmup_steps!r}")
