"""Configs of the SAE and its training (``SAEConfig``, ``TrainConfig``)."""
from __future__ import annotations

import dataclasses
import math
from typing import Literal, get_args

from sae_steer.config.base import StageConfig, is_integer, require

Architecture = Literal["relu", "topk", "jumprelu", "batchtopk", "matryoshka_batchtopk"]
ARCHITECTURES: tuple[str, ...] = get_args(Architecture)
BATCH_TOPK: tuple[str, ...] = ("batchtopk", "matryoshka_batchtopk")
"""Trained on the batch's top ``k * batch`` activations, run as JumpReLU at one threshold."""
TOPK_FAMILY: tuple[str, ...] = ("topk",) + BATCH_TOPK
"""Architectures that keep a fixed number of activations (``k`` per token, or ``k`` x batch
over a batch) and revive dead features with AuxK; the others (relu, jumprelu) set sparsity
with a penalty and resample dead features."""
THRESHOLDED: tuple[str, ...] = ("jumprelu",) + BATCH_TOPK
"""Architectures whose inference encoder is JumpReLU: a feature fires only above its
``threshold`` (learned per feature for jumprelu; one value estimated during training for
the BatchTopK pair, which is how SAELens saves them too)."""
STORES = ("auto", "memory", "disk", "stream")


@dataclasses.dataclass
class SAEConfig(StageConfig):
    """Shape and kind of a sparse autoencoder (what ``sae.py`` needs to build one)."""

    d_in: int
    """Width of the activations the SAE reads (d_model of the hooked residual stream)."""
    d_sae: int
    """Number of features (the seed writeup used 10,000)."""
    architecture: str = "relu"
    """``relu`` (ReLU encoder, L1 penalty; the seed's kind), ``topk`` (the k largest kept
    per token), ``jumprelu`` (a feature fires only where its pre-activation exceeds its own
    learned ``threshold``; trained with an L0 penalty, Rajamanoharan et al. 2024),
    ``batchtopk`` (the k x batch largest kept over a whole training batch; at inference one
    threshold estimated in training, Bussmann et al. 2024) or ``matryoshka_batchtopk``
    (batchtopk whose nested prefixes ``matryoshka_widths`` each reconstruct the input too,
    Bussmann et al. 2025). SAELens saves the last two as JumpReLU SAEs; so do we."""
    k: int | None = None
    """``topk``: active features per token. ``batchtopk`` / ``matryoshka_batchtopk``: mean
    active features per token over a training batch (the batch keeps ``k * batch`` of its
    activations). Ignored for ``relu`` and ``jumprelu``."""
    matryoshka_widths: tuple[int, ...] | None = None
    """``matryoshka_batchtopk`` only: increasing dictionary prefix widths ending at
    ``d_sae``, e.g. ``(d_sae // 8, d_sae // 4, d_sae // 2, d_sae)``; features ``0..w-1``
    alone must reconstruct the input for each ``w``, so early features learn the general
    directions and later ones the specific (less feature absorption)."""
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
        if self.architecture in TOPK_FAMILY:
            require(is_integer(self.k) and 0 < self.k <= self.d_sae,
                     f"{self.architecture} needs 0 < k <= d_sae ({self.d_sae}), got "
                     f"k={self.k!r}")
        if isinstance(self.matryoshka_widths, list):  # as JSON gives it back
            self.matryoshka_widths = tuple(self.matryoshka_widths)
        if self.architecture == "matryoshka_batchtopk":
            widths = self.matryoshka_widths
            require(isinstance(widths, tuple) and len(widths) > 0
                    and all(is_integer(w) for w in widths)
                    and all(a < b for a, b in zip((0,) + widths, widths))
                    and widths[-1] == self.d_sae,
                    f"matryoshka_batchtopk needs matryoshka_widths: increasing positive "
                    f"integers ending at d_sae ({self.d_sae}), got {widths!r}")
        else:
            require(self.matryoshka_widths is None,
                    f"matryoshka_widths is for matryoshka_batchtopk only, not "
                    f"{self.architecture}")
        require(self.dtype in ("float32", "float16", "bfloat16", "float64"),
                 f"dtype must be one of float32/float16/bfloat16/float64, got {self.dtype!r}")



def default_lr(d_sae: int, d_in: int) -> float:
    """The default learning rate: ``2e-4 * sqrt(2**14 / d_sae) * sqrt(768 / d_in)``.

    The width term is Gao et al. 2024's 1/sqrt(number of latents). The input term keeps
    Adam's step the same size relative to a unit decoder row: the inputs are normalised
    to mean squared norm ``d_in``, so a row's coordinates are about 1/sqrt(d_in) while
    Adam moves each by about ``lr``; at d_in 768 it is 1 (the reference the constant was
    set at). On the offline worlds (d_in 64) a grid from x1/8 to x8 of the old, width-only
    rule peaked at x8 on all four runs (512 and 2,048 features, 480 and 1,500 steps), with
    x4 within 0.01 EV of it (``bench/lr_sweep.py``, docs/results.md); this rule gives
    x3.5 there. The budget showed no dependence of its own in that sweep."""
    return 2e-4 * math.sqrt(2 ** 14 / d_sae) * math.sqrt(768 / d_in)


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
    """Adam learning rate after warm-up. None: ``default_lr(d_sae, d_in)``, which follows
    the SAE's width and its input's width (3.9e-3 at 512 features on a 64-wide residual
    stream, 2.6e-4 at 10,000 on a 768-wide one)."""
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
    l0_coefficient: float = 1.0
    """``jumprelu`` only: weight of the L0 ("step") penalty, the mean number of active
    features per token, whose gradient reaches the thresholds through the straight-through
    estimator (Rajamanoharan et al. 2024; SAELens's default ``jumprelu_sparsity_loss_mode
    ="step"`` and its default ``l0_coefficient`` 1.0, for inputs scaled as
    ``normalize_activations`` scales them)."""
    l1_warmup_steps: int | None = None
    """Steps over which the sparsity coefficient (``l1_coefficient`` for relu,
    ``l0_coefficient`` for jumprelu) rises linearly from 0 (avoids early dead features;
    None: 10 % of ``n_steps``)."""
    jumprelu_bandwidth: float = 0.05
    """``jumprelu`` only: width of the window around each threshold in which the
    straight-through estimator passes gradient to it (SAELens's default 0.05; in the units of
    the scaled inputs)."""
    topk_threshold_lr: float = 0.01
    """``batchtopk`` / ``matryoshka_batchtopk``: each step the inference threshold moves this
    fraction of the way to the batch's smallest kept activation (an exponential moving
    average; SAELens's default 0.01)."""
    aux_k_coefficient: float = 1 / 32
    """Weight of the AuxK loss that revives dead features of ``topk``, ``batchtopk`` and
    ``matryoshka_batchtopk`` SAEs (0: off)."""
    dead_after_steps: int = 200
    """A feature that has not fired for this many steps counts as dead; this is also the
    time constant (in steps) of its firing-rate estimate, and no feature counts as dead
    before this many steps."""
    dead_below_mean: float = 0.01
    """A feature that fires less than this fraction as often as the average feature also
    counts as dead, even if it fired within ``dead_after_steps`` (0: only the last-fired
    rule). A rate is an exponential moving average of the fraction of each batch's tokens
    the feature fires on; the average feature's is L0 / d_sae, so the line follows the
    SAE's width and sparsity (3e-4 at 1,024 features and L0 32, 5e-6 at 65,536)."""
    resample_every: int = 500
    """Every this many steps re-initialise dead features toward inputs the SAE reconstructs
    worst (0: never). No resampling during LR decay. For the topk family this points a
    dead feature at what the live ones miss, where AuxK can then train it: AuxK alone
    never reaches a feature whose pre-activations are negative on every token."""
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
        require(isinstance(self.dead_below_mean, (int, float)) and 0 <= self.dead_below_mean < 1,
                f"dead_below_mean must be in [0, 1), got {self.dead_below_mean!r}")
        for name in ("l1_coefficient", "l0_coefficient", "aux_k_coefficient"):
            value = getattr(self, name)
            require(isinstance(value, (int, float)) and 0 <= value < float("inf"),
                     f"{name} must be a non-negative finite number, got {value!r}")
        for name in ("adam_beta1", "adam_beta2"):
            value = getattr(self, name)
            require(0 <= value < 1, f"{name} must be in [0, 1), got {value!r}")
        require(isinstance(self.jumprelu_bandwidth, (int, float))
                and 0 < self.jumprelu_bandwidth < float("inf"),
                f"jumprelu_bandwidth must be a positive finite number, got "
                f"{self.jumprelu_bandwidth!r}")
        require(isinstance(self.topk_threshold_lr, (int, float))
                and 0 < self.topk_threshold_lr <= 1,
                f"topk_threshold_lr must be in (0, 1], got {self.topk_threshold_lr!r}")
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

    def sparsity_coefficient(self, architecture: str) -> float:
        """The penalty weight ``architecture`` trains with (before its warm-up): the L1
        coefficient for relu, the L0 one for jumprelu, 0 for the topk family (their
        sparsity is the k they keep)."""
        return {"relu": self.l1_coefficient, "jumprelu": self.l0_coefficient}.get(
            architecture, 0.0)

    def resolved(self, d_sae: int, d_in: int) -> TrainConfig:
        """This config with every None ("auto") setting made concrete for an SAE of ``d_sae``
        features on ``d_in``-wide inputs and ``n_steps`` steps: what the training loop runs."""
        fixed = {name: max(int(fraction * self.n_steps), 0 if name == "lr_decay_steps" else 1)
                 for name, fraction in _AUTO_FRACTIONS.items() if getattr(self, name) is None}
        if self.lr is None:
            fixed["lr"] = default_lr(d_sae, d_in)
        return self.replace(**fixed) if fixed else self


