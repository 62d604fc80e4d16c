"""The sparse autoencoder: ``x -> feats -> x_hat`` with raw parameters in ``x @ W`` order.

    sae_in = x - b_dec                       (when cfg.apply_b_dec_to_input)
    pre    = sae_in @ W_enc + b_enc          [..., d_sae]
    feats  = relu(pre)                       ("relu")
           | relu(top-k of pre), 0 elsewhere ("topk")
           | relu(pre) * (pre > threshold)   ("jumprelu", "batchtopk", "matryoshka_batchtopk";
                                              threshold [d_sae])
    x_hat  = feats @ W_dec + b_dec           [..., d_in]

``W_dec[i]`` is feature i's direction (what steering adds); ``decode(onehot_i)`` is
``W_dec[i] + b_dec`` -- not the same thing, on purpose (see ``feature_direction``).

``jumprelu`` is SAELens's JumpReLU SAE: its ``threshold`` is a parameter, learned per
feature. ``batchtopk`` and ``matryoshka_batchtopk`` train on the batch's top ``k * batch``
activations and run at inference as JumpReLU with one threshold, estimated while training,
for every feature (a buffer, not a parameter); SAELens saves them as JumpReLU SAEs, and so
does ``io.py``.

Training goes through ``training_forward``. Only the encoder matmul is dense once the codes
are sparse: the decoder reads the active (token, feature) entries and the backward pass
touches only their columns/rows (``topk_kernel.py``, ``relu_kernel.py``,
``jumprelu_kernel.py``, ``batchtopk_kernel.py``; each tested equal to plain autograd).
Save/load in SAELens's format lives in ``io.py``.
Knows only torch (+ safetensors via io.py): no language-model code here.
"""
from __future__ import annotations

import contextlib
import numbers
import os
from collections.abc import Iterator
from typing import Any

import torch
from jaxtyping import Bool, Float
from torch import Tensor, nn

from sae_steer.config import SAEConfig, TrainConfig
from sae_steer.config.sae import THRESHOLDED, TOPK_FAMILY
from sae_steer.sae import batchtopk_kernel, jumprelu_kernel, relu_kernel, topk_kernel
from sae_steer.sae import io as sae_io
from sae_steer.sae.kernels import TrainStepOutput

_DTYPES = {"float32": torch.float32, "float16": torch.float16,
           "bfloat16": torch.bfloat16, "float64": torch.float64}
JUMPRELU_INIT_THRESHOLD = 0.01
"""A new jumprelu SAE's threshold, in the units of the scaled inputs training sees
(SAELens's ``jumprelu_init_threshold`` default); resampled features start from it again."""


def _default_device() -> str:
    # Same rule as lm.default_device(); the SAE layer must not import the language-model layer.
    return "cuda" if torch.cuda.is_available() else "cpu"


def decoder_units(sae: Any) -> Tensor:
    """``[d_sae, d_in]`` the decoder rows ``W_dec[i]`` at unit norm (no gradient), for any
    SAE with a ``W_dec`` (ours or SAELens's): features compared by direction alone."""
    rows = sae.W_dec.detach()
    return rows / rows.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def feature_index(i: Any, d_sae: int) -> int:
    """``i`` as a feature index in ``0..d_sae-1``: an int, numpy integer or one-element
    integer tensor. Floats and bools are refused, since int() would turn 2.7 into 2."""
    if isinstance(i, Tensor):
        if i.numel() != 1 or i.dtype.is_floating_point or i.dtype == torch.bool:
            raise ValueError(f"feature index must be one integer, got tensor {i!r}")
        i = int(i.item())
    elif isinstance(i, bool) or not isinstance(i, numbers.Integral):
        raise ValueError(f"feature index must be an integer, got {type(i).__name__} {i!r}")
    i = int(i)
    if not 0 <= i < d_sae:
        raise ValueError(f"feature {i} is out of range: this SAE has {d_sae} "
                         f"features (0..{d_sae - 1})")
    return i


@contextlib.contextmanager
def _seeded(seed: int | None, device: torch.device) -> Iterator[None]:
    """Draw from torch's global RNG seeded with ``seed``, restoring the caller's state after
    (CPU, and every CUDA device when drawing on one); ``None``: the global RNG as it is."""
    if seed is None:
        yield
        return
    cuda = list(range(torch.cuda.device_count())) if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)
        yield


class SAE(nn.Module):
    """A ReLU, TopK, JumpReLU, BatchTopK or Matryoshka BatchTopK sparse autoencoder built
    from an :class:`SAEConfig`.

    A JumpReLU SAE has one more parameter, ``threshold [d_sae]`` (a BatchTopK pair has it as
    a buffer): feature i is zero unless its pre-activation exceeds ``threshold[i]``, so it
    never takes a value in ``(0, threshold[i]]``. Clamping (``steer.clamping``) acts on the feature's output value,
    as for the other architectures: it adds ``(value - f_i) * W_dec[i]``, whatever the
    threshold. A clamp value inside ``(0, threshold[i]]`` is therefore written as given,
    although the encoder itself would never produce it; clamp to 0 to switch a feature off.
    """

    def __init__(self, cfg: SAEConfig, *, seed: int | None = None):
        """``seed=None`` draws the initial weights from torch's global RNG (as ``nn.Linear``
        does); ``seed=s`` gives the weights ``torch.manual_seed(s); SAE(cfg)`` would, and
        leaves the caller's RNG as it was. Every trainer builds its SAE this way."""
        super().__init__()
        self.cfg = cfg
        device = torch.device(cfg.device or _default_device())
        dtype = _DTYPES[cfg.dtype]
        # Unit-norm decoder rows, encoder tied to the decoder's transpose, so each feature
        # starts by detecting its own direction. For relu the tied encoder overshoots (half
        # the features fire on any input: x_hat ~ (d_sae / 2 d_in) x), so it is shrunk by
        # 2 d_in / d_sae. Two measurements disagree on that shrink:
        # - 6 steps (bench data, lr 1e-3): EV -0.35 with L0 collapsing to 75 shrunk, 0.46 at
        #   L0 313 not. Adam moves every weight by ~lr per step whatever its size, so the
        #   first steps shove a small encoder around;
        # - 1500 steps (the offline world's reference recipe, toystories/small): EV 0.877 at
        #   L0 10.5 and CE increase 0.10 nats shrunk, 0.783 at L0 19.3 and 0.35 not.
        # The long run decides: the first steps' dip is gone long before any run worth
        # using ends, while the unshrunk start still costs at the end, in both EV and L0.
        # The topk family is not shrunk: only k features per token fire, so it has no such
        # overshoot; jumprelu is (it starts as relu does, its thresholds near 0).
        with _seeded(seed, device):
            W_dec = torch.randn(cfg.d_sae, cfg.d_in, device=device, dtype=torch.float32)
        W_dec /= W_dec.norm(dim=1, keepdim=True)
        # a copy even where W_dec.T is already contiguous (d_in == 1): two parameters must
        # not share storage
        W_enc = W_dec.T.clone(memory_format=torch.contiguous_format).to(dtype)
        if cfg.architecture not in TOPK_FAMILY:  # in the parameter dtype, as cached SAEs were
            W_enc.mul_(min(1.0, 2 * cfg.d_in / cfg.d_sae))
        self.W_enc = nn.Parameter(W_enc)
        self.b_enc = nn.Parameter(torch.zeros(cfg.d_sae, device=device, dtype=dtype))
        self.W_dec = nn.Parameter(W_dec.to(dtype))
        self.b_dec = nn.Parameter(torch.zeros(cfg.d_in, device=device, dtype=dtype))
        # Registered only for these: relu/topk state dicts and saved files stay as they were.
        if cfg.architecture == "jumprelu":  # learned by the optimizer
            self.threshold = nn.Parameter(torch.full(
                (cfg.d_sae,), JUMPRELU_INIT_THRESHOLD, device=device, dtype=dtype))
        elif cfg.architecture in THRESHOLDED:  # followed from the batches, not by gradient
            self.register_buffer("threshold", torch.zeros(cfg.d_sae, device=device, dtype=dtype))
        self.log_feature_sparsity: Tensor | None = None
        """log10 firing frequency per feature, set by the trainer; written by ``save``."""

    # ---- shape and metadata -------------------------------------------------------
    @property
    def d_in(self) -> int:
        return self.cfg.d_in

    @property
    def d_sae(self) -> int:
        return self.cfg.d_sae

    @property
    def hook_name(self) -> str | None:
        return self.cfg.hook_name

    @property
    def device(self) -> torch.device:
        return self.W_dec.device

    @property
    def dtype(self) -> torch.dtype:
        return self.W_dec.dtype

    def _apply(self, fn, *args, **kwargs):
        # Keep cfg.device/cfg.dtype truthful after sae.to(...), so save() records them.
        out = super()._apply(fn, *args, **kwargs)
        self.cfg.device = str(self.W_dec.device)
        self.cfg.dtype = str(self.W_dec.dtype).removeprefix("torch.")
        if self.log_feature_sparsity is not None:
            self.log_feature_sparsity = self.log_feature_sparsity.to(self.W_dec.device)
        return out

    # ---- inference ----------------------------------------------------------------
    def _sae_in(self, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... d_in"]:
        if x.shape[-1] != self.d_in:
            raise ValueError(f"expected activations of width d_in={self.d_in} in the last "
                             f"dimension, got shape {tuple(x.shape)}")
        x = x.to(self.dtype)
        return x - self.b_dec if self.cfg.apply_b_dec_to_input else x

    def pre_activations(self, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... d_sae"]:
        return self._sae_in(x) @ self.W_enc + self.b_enc

    def encode(self, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... d_sae"]:
        """Feature activations (non-negative; for topk at most k non-zero per token)."""
        pre = self.pre_activations(x)
        if self.cfg.architecture == "relu":
            return torch.relu(pre)
        if self.cfg.architecture in THRESHOLDED:
            # SAELens's JumpReLUSAE.encode op for op: relu, then zero where pre <= threshold
            # (the relu keeps a negative threshold from letting negative values through).
            return torch.relu(pre) * (pre > self.threshold).to(pre.dtype)
        vals, idx = pre.topk(self.cfg.k, dim=-1, sorted=False)
        return torch.zeros_like(pre).scatter_(-1, idx, vals.relu())

    def decode(self, feats: Float[Tensor, "... d_sae"]) -> Float[Tensor, "... d_in"]:
        """``feats @ W_dec + b_dec``: decode(onehot_i) is W_dec[i] + b_dec, not W_dec[i]."""
        return feats.to(self.dtype) @ self.W_dec + self.b_dec

    def forward(self, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... d_in"]:
        return self.decode(self.encode(x))

    def feature_direction(self, i: int) -> Float[Tensor, "d_in"]:
        """Row ``W_dec[i]``: the direction feature i writes (what steering should add)."""
        return self.W_dec[feature_index(i, self.d_sae)]

    # ---- training -----------------------------------------------------------------
    def training_forward(
        self,
        x: Float[Tensor, "batch d_in"],
        *,
        l1_coefficient: float = 0.0,
        l0_coefficient: float = 0.0,
        dead_mask: Bool[Tensor, "d_sae"] | None = None,
        aux_k_coefficient: float = TrainConfig.aux_k_coefficient,
        aux_k: int | None = None,
        bandwidth: float = TrainConfig.jumprelu_bandwidth,
        threshold_lr: float = TrainConfig.topk_threshold_lr,
    ) -> TrainStepOutput:
        """Losses for one batch of activations (leading dims are flattened to tokens).

        relu: MSE + l1_coefficient * sum_i feats_i * ||W_dec[i]|| (weighted by the row
        norm so shrinking W_dec cannot buy sparsity). jumprelu: MSE + l0_coefficient * the
        number of active features, the thresholds trained through the straight-through
        estimator of ``bandwidth`` (kept >= 0, as SAELens does). topk, batchtopk and
        matryoshka_batchtopk: MSE (+ the inner prefixes' MSEs) + AuxK, where the aux_k
        (default d_in // 2) largest pre-activations among ``dead_mask`` features reconstruct
        the residual error ``x - x_hat`` (Gao et al. 2024, appendix A.2), scaled down by
        min(n_dead / aux_k, 1) when few features are dead. batchtopk and
        matryoshka_batchtopk also move their inference threshold ``threshold_lr`` of the way
        to the smallest activation the batch kept.
        """
        for name, value in (("l1_coefficient", l1_coefficient),
                            ("l0_coefficient", l0_coefficient),
                            ("aux_k_coefficient", aux_k_coefficient)):
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        if aux_k is not None and (not isinstance(aux_k, int) or aux_k <= 0):
            raise ValueError(f"aux_k must be a positive integer or None (d_in // 2), got {aux_k!r}")
        if x.shape[-1] != self.d_in:
            raise ValueError(f"expected activations of width d_in={self.d_in} in the last "
                             f"dimension, got shape {tuple(x.shape)}")
        x = x.reshape(-1, self.d_in).to(self.device, self.dtype)
        if dead_mask is not None and dead_mask.shape != (self.d_sae,):
            raise ValueError(f"dead_mask must have shape ({self.d_sae},), "
                             f"got {tuple(dead_mask.shape)}")
        if dead_mask is not None:
            dead_mask = dead_mask.to(self.device, torch.bool)
        arch = self.cfg.architecture
        aux_k = aux_k if aux_k is not None else self.d_in // 2
        if arch == "topk":
            return topk_kernel.topk_training_forward(self, x, dead_mask, aux_k_coefficient, aux_k)
        if arch == "jumprelu":
            with torch.no_grad():
                # a projection, not a clamp in the graph (which would pin a threshold
                # reaching 0 there for good): a negative one would pass negative values
                self.threshold.clamp_(min=0.0)
            return jumprelu_kernel.jumprelu_training_forward(self, x, l0_coefficient, bandwidth)
        if arch in TOPK_FAMILY:
            out, kept_min = batchtopk_kernel.batchtopk_training_forward(
                self, x, dead_mask, aux_k_coefficient, aux_k)
            with torch.no_grad():  # an exponential moving average, skipped when none was kept
                moved = torch.lerp(self.threshold, kept_min.to(self.dtype), threshold_lr)
                self.threshold.copy_(torch.where(torch.isfinite(kept_min), moved, self.threshold))
            return out
        return relu_kernel.relu_training_forward(self, x, l1_coefficient)

    @torch.no_grad()
    def normalize_decoder_(self) -> None:
        """Rescale W_dec rows to unit norm, folding each norm into W_enc[:, i] and b_enc[i].

        Why fold rather than project gradients: relu(a*z) = a*relu(z) for a > 0, so for
        relu the SAE computes exactly the same function before and after, and the L1
        penalty (weighted by row norms) means the same thing for every feature. For topk
        the selection now ranks pre_i * ||W_dec[i]||: exactly SAELens's
        ``rescale_acts_by_decoder_norm`` forward, which is what its TopK SAEs train with.
        For jumprelu the thresholds scale with their pre-activations (SAELens's
        ``JumpReLUSAE.fold_W_dec_norm``), so the same features fire: the function is unchanged.
        Call after every optimizer step (norms drift by ~lr per step).
        """
        norms = self.W_dec.norm(dim=1).clamp_min(1e-8)
        self.W_dec.div_(norms[:, None])
        self.W_enc.mul_(norms[None, :])
        self.b_enc.mul_(norms)
        if self.cfg.architecture == "jumprelu":
            self.threshold.mul_(norms)

    # ---- persistence (SAELens format; see io.py) --------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Write cfg.json + sae_weights.safetensors + sparsity.safetensors (SAELens's format)."""
        sae_io.save_sae(self, path)

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device | None = None) -> "SAE":
        """Load an SAE saved by ``save`` or by SAELens: its standard, topk and jumprelu SAEs,
        and its BatchTopK / Matryoshka BatchTopK SAEs (as jumprelu; see ``io.py``).

        ``device=None`` means CUDA when available, else CPU: the device recorded in
        cfg.json is ignored, so an SAE saved on a GPU machine loads on a laptop. Its
        parameters do not require grad (``train`` turns it on; for your own loop call
        ``sae.requires_grad_(True)``).
        """
        return sae_io.load_sae(cls, path, device=device or _default_device())
