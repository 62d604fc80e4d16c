"""Configs of the SAE and its training (``SAEConfig``, ``TrainConfig``)."""
from __future__ import annotations

import dataclasses
import math
from typing import Literal, get_args

from sae_steer.config.base import StageConfig, is_integer, require

Architecture = Literal["relu", "topk", "jumprelu"]
ARCHITECTURES: tuple[str, ...] = get_args(Architecture)
TRAINED_HERE: tuple[str, ...] = ("relu", "topk")
"""The architectures sae_steer trains; the others are loaded (trained by SAELens)."""
STORES = ("auto", "memory", "disk", "stream")


@dataclasses.dataclass
class SAEConfig(StageConfig):
    """Shape and kind of a sparse autoencoder (what ``sae.py`` needs to build one)."""

    d_in: int
    """Width of the activations the SAE reads (d_model of the hooked residual stream)."""
    d_sae: int
    """Number of features (the seed writeup used 10,000)."""
    architecture: str = "relu"
    """``relu`` (ReLU encoder, L1 penalty; the seed's kind), ``topk`` (k largest kept) or
    ``jumprelu`` (a feature fires only where its pre-activation exceeds its own learned
    ``threshold``: SAELens's JumpReLU SAEs, and its BatchTopK and Matryoshka BatchTopK SAEs,
    which SAELens saves as JumpReLU ones). ``jumprelu`` SAEs are loaded (``SAE.load``), not
    trained here."""
    k: int | None = None
    """Active features per token for ``topk``; ignored for ``relu`` and ``jumprelu``."""
    dtype: str = "float32"
    """Parameter dtype, as a torch dtype name: ``float32`` (default), ``bfloat16`` or
    ``float16`` (half the memory and faster matmuls on a GPU; the losses are still reduced
    in the parameters' dtype, so expect slightly worse EV), ``float64``. Activations are cast
    to it on the way in. For the harvest's dtype see ``TrainConfig.harvest_dtype``."""
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
        require(isinstance(self.d_in, int) and self.d_in > 0,
                 f"d_in must be a positive integer, got {self.d_in!r}")
        require(isinstance(self.d_sae, int) and self.d_sae > 0,
                 f"d_sae must be a positive integer, got {self.d_sae!r}")
        require(self.architecture in ARCHITECTURES,
                 f"architecture must be one of {', '.join(map(repr, ARCHITECTURES))}, "
                 f"got {self.architecture!r}")
        if self.architecture == "topk":
            require(isinstance(self.k, int) and 0 < self.k <= self.d_sae,
                     f"topk needs 0 < k <= d_sae ({self.d_sae}), got k={self.k!r}")
        require(self.dtype in ("float32", "float16", "bfloat16", "float64"),
                 f"dtype must be one of float32/float16/bfloat16/float64, got {self.dtype!r}")

    def check_trainable(self) -> None:
        """Raise a ValueError saying what to do when sae_steer cannot train this
        architecture (checked before any activation is harvested)."""
        require(self.architecture in TRAINED_HERE,
                f"sae_steer does not train {self.architecture} SAEs: train one with SAELens "
                f"and load it with SAE.load, or train architecture "
                f"{' or '.join(map(repr, TRAINED_HERE))}")


_AUTO_FRACTIONS = {"lr_warmup_steps": 0.05, "lr_decay_steps": 0.2, "l1_warmup_steps": 0.1}
"""TrainConfig's schedules left at None: these fractions of ``n_steps``."""


@dataclasses.dataclass
class TrainConfig(StageConfig):
    """How an SAE is trained: data stream, optimiser, sparsity schedule, logging, checkpoints.

    Steps count optimiser updates; one step reads ``batch_size`` activation vectors.
    """

    n_steps: int = 2000
    """Optimiser steps to take (tokens seen = ``n_steps * batch_size``)."""
    batch_size: int = 4096
    """Activation vectors (tokens) per optimiser step."""
    lr: float | None = None
    """Adam learning rate after warm-up. None: ``2e-4 / sqrt(d_sae / 2**14)``, the
    1/sqrt(width) scaling of Gao et al. 2024 (1.1e-3 at 512 features, 2.6e-4 at 10,000).
    The old fixed 4e-4 with a 100-step warm-up starved short runs on small models."""
    adam_beta1: float = 0.9
    """Adam's first-moment decay."""
    adam_beta2: float = 0.999
    """Adam's second-moment decay."""
    lr_warmup_steps: int | None = None
    """Steps over which the learning rate rises linearly from 0 to ``lr`` (None: 5 % of
    ``n_steps``)."""
    lr_decay_steps: int | None = None
    """Final steps over which the learning rate falls linearly to 0 (0: no decay; None:
    20 % of ``n_steps``)."""
    l1_coefficient: float = 5.0
    """Weight of the (decoder-norm weighted) L1 penalty for ``relu`` SAEs; unused by ``topk``."""
    l1_warmup_steps: int | None = None
    """Steps over which the L1 coefficient rises linearly from 0 (avoids early dead
    features; None: 10 % of ``n_steps``)."""
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
    """Tokens per sequence fed to the model; a longer text becomes several windows of this
    many tokens, each starting with BOS (see ``long_texts``)."""
    long_texts: str = "window"
    """``window``: read texts longer than ``context_size`` whole, in windows (training
    harvest and the CE evaluation); ``truncate``: keep only each text's first window (the
    pre-window behaviour, kept by the offline reference recipe; the result's ``harvest``
    counts the tokens cut)."""
    epochs: int | None = None
    """None: train ``n_steps`` steps, streaming from the model as before; if the texts run
    out first, the remaining steps cycle over epochs of the activation store (each a
    fresh whole-store shuffle). An integer: harvest every text once into the store, then
    train exactly this many epochs over it (``n_steps`` is then derived: epochs x full
    batches in the store)."""
    store: str = "auto"
    """Where harvested activations are kept for later epochs: ``auto`` (memory up to
    ``store_budget_bytes``; past it a memory-mapped file on disk when ``epochs`` is set,
    or, with ``epochs=None``, no store: so much data rarely runs out), ``memory`` (never
    disk), ``disk`` (always a file), or ``stream`` (keep nothing: read the texts once and
    stop when they run out; for datasets too large to store, like all of TinyStories)."""
    store_budget_bytes: int = 2 * 1024 ** 3
    """Bytes of activations held in memory before the store spills to disk (2 GiB)."""
    model_batch_size: int = 32
    """Sequences per model forward pass while harvesting activations."""
    harvest_dtype: str | None = None
    """``bfloat16`` or ``float16``: run the model's forward under ``torch.autocast`` with
    that dtype while harvesting (a GPU's fast path; activations still reach the SAE as
    float32). None: the model's own dtype. The SAE's parameter dtype is ``SAEConfig.dtype``
    (float32 default; bfloat16/float16 halve its memory, at some cost in precision)."""
    buffer_batches: int = 16
    """Shuffle buffer size in training batches: a batch mixes tokens from this many
    batches' worth of sequences, so it is never one story."""
    tf32: bool = False
    """CUDA only: let the SAE's float32 matmuls use TF32 tensor cores while it trains (about
    1e-3 relative precision per product; the encoder matmul that sets a step's pace runs
    several times faster on an A100 / H100 / H200). Switched on only around the SAE's own
    training step and put back after it, so the model's forward passes (harvesting, the CE
    evaluation) keep the process's setting. No effect on a CPU."""
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
        require(isinstance(self.buffer_batches, int) and self.buffer_batches >= 2,
                 f"buffer_batches must be an integer >= 2, got {self.buffer_batches!r}")
        for name in ("n_steps", "batch_size", "context_size", "model_batch_size",
                     "log_every", "dead_after_steps"):
            value = getattr(self, name)
            require(isinstance(value, int) and value > 0,
                     f"{name} must be a positive integer, got {value!r}")
        for name in ("lr_warmup_steps", "lr_decay_steps", "l1_warmup_steps",
                     "resample_every", "eval_sequences", "checkpoint_every", "seed"):
            value = getattr(self, name)
            auto = name in _AUTO_FRACTIONS
            require((auto and value is None) or (isinstance(value, int) and value >= 0),
                     f"{name} must be a non-negative integer{' or None' if auto else ''}, "
                     f"got {value!r}")
        require(self.lr is None or (isinstance(self.lr, (int, float)) and 0 < self.lr < float("inf")),
                 f"lr must be None or a positive finite number, got {self.lr!r}")
        for name in ("l1_coefficient", "aux_k_coefficient"):
            value = getattr(self, name)
            require(isinstance(value, (int, float)) and 0 <= value < float("inf"),
                     f"{name} must be a non-negative finite number, got {value!r}")
        for name in ("adam_beta1", "adam_beta2"):
            value = getattr(self, name)
            require(0 <= value < 1, f"{name} must be in [0, 1), got {value!r}")
        require(0 < self.dense_threshold <= 1,
                 f"dense_threshold must be in (0, 1], got {self.dense_threshold!r}")
        require(isinstance(self.tf32, bool), f"tf32 must be True or False, got {self.tf32!r}")
        require(self.harvest_dtype in (None, "bfloat16", "float16"),
                f"harvest_dtype must be None, 'bfloat16' or 'float16', got {self.harvest_dtype!r}")
        require(self.long_texts in ("window", "truncate"),
                f"long_texts must be 'window' or 'truncate', got {self.long_texts!r}")
        require(self.store in STORES, f"store must be one of {STORES}, got {self.store!r}")
        require(self.epochs is None or (is_integer(self.epochs) and self.epochs > 0),
                f"epochs must be None or a positive integer, got {self.epochs!r}")
        require(self.epochs is None or self.store != "stream",
                "epochs= trains over an activation store: it does not combine with "
                "store='stream' (set store='auto', 'memory' or 'disk')")
        require(is_integer(self.store_budget_bytes) and self.store_budget_bytes >= 0,
                f"store_budget_bytes must be a non-negative integer, got "
                f"{self.store_budget_bytes!r}")
        warmup, decay = self.lr_warmup_steps or 0, self.lr_decay_steps or 0
        require(warmup + decay <= self.n_steps,
                 f"lr_warmup_steps + lr_decay_steps ({warmup} + {decay}) must not exceed "
                 f"n_steps ({self.n_steps})")

    def resolved(self, d_sae: int) -> TrainConfig:
        """This config with every None ("auto") setting made concrete for ``d_sae`` features
        and ``n_steps`` steps: what the training loop runs."""
        fixed = {name: max(int(fraction * self.n_steps), 0 if name == "lr_decay_steps" else 1)
                 for name, fraction in _AUTO_FRACTIONS.items() if getattr(self, name) is None}
        if self.lr is None:
            fixed["lr"] = 2e-4 / math.sqrt(d_sae / 2 ** 14)
        return self.replace(**fixed) if fixed else self


