"""Steering hooks: push features' directions into the residual stream while the model runs.

Three ways to steer with SAE features ``{i: scale_i, ...}`` (one or several) at the hook:

- ``decoder_row`` (the seed's method): add ``sum_i scale_i * W_dec[i]``.
- ``clamp`` (Anthropic's method): encode the activation, set each feature i to ``scale_i``,
  decode, and add back the SAE's reconstruction error so every other feature passes as is
  (``scale_i`` is the feature's output value, for a JumpReLU SAE even under its threshold).
- ``decoder_onehot`` (a pitfall, kept only to show it): add ``sum_i scale_i *
  sae.decode(onehot_i)``, i.e. ``scale_i * (W_dec[i] + b_dec)`` -- the bias swamps the feature.

Which positions are steered is a ``Positions`` gate: all of them, or those from ``start``
on (the generated ones), tracked through the KV cache by the sampler setting ``offset``.

Hooks are global state on the model, so every hook here lives inside a context manager
that removes it on exit -- normal, error or KeyboardInterrupt. The scale-unit arithmetic
for one feature is here (several features, max_act: ``units.py``); the typical residual norm
it needs is held by a ``Steerer`` (``steerer.py``), the one place that measures it. The
sampler is ``generate.py``.
SAEs are duck-typed (``cfg.d_sae``, ``cfg.d_in``, ``cfg.hook_name``, ``W_dec``, ``encode``,
``decode``), so SAELens SAEs steer as well.
"""
from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens import HookedTransformer

from sae_steer.config import MODES, check_number
from sae_steer.lm import attached_hook_count, check_sae_fits, hook_width, validate_hook
from sae_steer.sae import feature_index


@dataclasses.dataclass
class SteeringStats:
    """What a steering hook did: how many forward passes and token positions it steered."""

    calls: int = 0
    positions: int = 0


@dataclasses.dataclass
class Positions:
    """Which token positions a hook steers: absolute positions ``>= start`` (0: all).

    ``offset`` is the absolute position of the current pass's first token: 0 for a pass over
    the whole sequence, the KV cache's length for a cached pass. The sampler sets it before
    every pass; by hand (uncached passes over whole sequences) leave it at 0.

    ``rows``: which of the batch's original rows the current pass carries (None: all, in
    order). The sampler drops rows that have finished (EOS) from later passes and says so
    here, so a hook with one vector per row (``steering_rows``) picks the right ones.
    """

    start: int = 0
    offset: int = 0
    rows: Tensor | None = None

    def mask(self, act: Tensor) -> Tensor | None:
        """None when every position of ``act`` is steered, else a bool mask over its positions
        (shaped to broadcast: ``[pos, 1, ...]``)."""
        if self.offset >= self.start or act.ndim < 2:
            return None
        pos = torch.arange(self.offset, self.offset + act.shape[1], device=act.device)
        return (pos >= self.start).view(-1, *([1] * (act.ndim - 2)))


def as_positions(positions: Positions | int | None) -> Positions:
    """A ``Positions`` gate from a gate, a start position, or None (every position)."""
    if positions is None:
        return Positions()
    if isinstance(positions, Positions):
        return positions
    if isinstance(positions, bool) or not isinstance(positions, int) or positions < 0:
        raise ValueError(f"positions must be a Positions gate or a start position >= 0, "
                         f"got {positions!r}")
    return Positions(int(positions))


def check_mode(mode: str) -> str:
    """``mode`` if it is one of ``MODES``, else a ValueError listing them."""
    if mode not in MODES:
        raise ValueError(f"unknown steering mode {mode!r}; choose one of {', '.join(MODES)}")
    return mode


def feature_scales(feature: Any, scale: Any, d_sae: int, name: str = "scale") -> dict[int, float]:
    """``{feature: scale, ...}`` checked: from one feature and its scale, or from a dict.

    ``name`` names the number in errors ("scale must be finite", "scale of feature 3 ...").
    """
    if isinstance(feature, Mapping):
        if scale is not None:
            raise ValueError("give the scales in the dict {feature: scale, ...}, not also "
                             f"scale={scale!r}")
        if not feature:
            raise ValueError("no features to steer with: give {feature: scale, ...}")
        items, label = list(feature.items()), name + " of feature {}"
    else:
        if scale is None:
            raise ValueError("give a scale: (feature, scale) or a dict {feature: scale, ...}")
        items, label = [(feature, scale)], name
    out: dict[int, float] = {}
    for f, s in items:
        i = feature_index(f, d_sae)
        if i in out:
            raise ValueError(f"feature {i} is listed twice")
        out[i] = check_number(s, label.format(i))
    return out


@contextlib.contextmanager
def hooked(model: HookedTransformer, hook_name: str, fn: Callable) -> Iterator[None]:
    """Attach ``fn`` at ``hook_name`` for the block; always removed on exit."""
    before = attached_hook_count(model)
    # model.hooks removes exactly the hooks of its own context level in its finally clause,
    # so hooks a user attached before us survive and ours never leak.
    with model.hooks(fwd_hooks=[(hook_name, fn)]):
        yield
    assert attached_hook_count(model) == before, "steering hook leaked"


def _gated(stats: SteeringStats, gate: Positions, act: Tensor, delta: Tensor) -> Tensor:
    """``act + delta`` at the gate's positions (``act`` untouched elsewhere), counted."""
    mask = gate.mask(act)
    stats.calls += 1
    per_pos = act.shape[0] if act.ndim >= 3 else 1
    n_pos = act.shape[1] if act.ndim >= 3 else act.shape[0]
    if mask is None:
        stats.positions += per_pos * n_pos
        return act + delta
    stats.positions += per_pos * int(mask.sum())
    return torch.where(mask, act + delta, act)


@contextlib.contextmanager
def steering(
    model: HookedTransformer, hook_name: str, direction: Float[Tensor, " d_model"],
    scale: float, positions: Positions | int | None = None,
) -> Iterator[SteeringStats]:
    """Add ``scale * direction`` at ``hook_name`` at every steered position of every pass.

    By default that is every position, including the prompt pass and each length-1 pass of
    KV-cached generation; ``positions`` (a start, or a ``Positions`` gate) limits it. Yields
    a ``SteeringStats`` that counts the passes and positions steered. Works with any
    ``HookedTransformer``; ``direction`` is moved to the activation's device and dtype.
    """
    scale = check_number(scale, "scale")
    gate = as_positions(positions)
    validate_hook(model, hook_name)
    direction = torch.as_tensor(direction).detach()
    width = hook_width(model, hook_name)
    if direction.shape != (width,):
        raise ValueError(
            f"direction has shape {tuple(direction.shape)} but {hook_name!r} has width {width}"
        )
    if not torch.isfinite(direction).all():
        raise ValueError("direction contains NaN or inf")
    delta = scale * direction.float()
    stats = SteeringStats()
    moved: dict[tuple, Tensor] = {}

    def add(act: Float[Tensor, "batch pos d_model"], hook: Any) -> Tensor:
        key = (act.device, act.dtype)
        if key not in moved:  # move once, not on every one of the length-1 passes
            moved[key] = delta.to(device=act.device, dtype=act.dtype)
        return _gated(stats, gate, act, moved[key])

    with hooked(model, hook_name, add):
        yield stats


@contextlib.contextmanager
def clamping(
    model: HookedTransformer, sae: Any, feature: int | Mapping[int, float],
    value: float | None = None, hook_name: str | None = None,
    positions: Positions | int | None = None,
) -> Iterator[SteeringStats]:
    """Clamp SAE feature ``feature`` to ``value`` (or each of ``{feature: value, ...}``),
    keeping the SAE's error, at every steered position (``positions`` as in ``steering``).

    ``x -> decode(f with f_i := value_i) + (x - decode(f))``. Because the decoder is linear
    this equals ``x + sum_i (value_i - f_i) * W_dec[i]``, which we compute directly: exact
    when each value equals the feature's own activation; every other feature passes as is.
    The value is the feature's output, never passed back through the activation: for a
    JumpReLU SAE a value under the feature's threshold is written as given, although its
    encoder never outputs one there (0 switches the feature off).
    """
    values = feature_scales(feature, value, sae.cfg.d_sae, "clamp value")
    gate = as_positions(positions)
    hook_name = check_sae_fits(model, sae.cfg, hook_name)
    stats = SteeringStats()
    w_dec = sae.W_dec.detach()
    idx = torch.tensor(list(values), device=w_dec.device)
    target = torch.tensor(list(values.values()), device=w_dec.device, dtype=w_dec.dtype)
    rows = w_dec[idx]  # [n, d_in]

    def clamp(act: Float[Tensor, "batch pos d_model"], hook: Any) -> Tensor:
        x = act.to(device=w_dec.device, dtype=w_dec.dtype)
        with torch.no_grad():
            f = sae.encode(x)[..., idx]  # [..., n]
        # broadcast and sum, not a matmul: exact for one feature (its own value -> no change)
        delta = ((target - f)[..., None] * rows).sum(-2).to(device=act.device, dtype=act.dtype)
        return _gated(stats, gate, act, delta)

    with hooked(model, hook_name, clamp):
        yield stats


def steering_direction(sae: Any, feature: int, mode: str = "decoder_row") -> Tensor:
    """The vector added per unit of scale: ``W_dec[i]``, or ``decode(onehot)`` for the pitfall."""
    feature, mode = feature_index(feature, sae.cfg.d_sae), check_mode(mode)
    if mode == "decoder_onehot":
        onehot = torch.zeros(sae.cfg.d_sae, device=sae.W_dec.device, dtype=sae.W_dec.dtype)
        onehot[feature] = 1.0
        with torch.no_grad():
            return sae.decode(onehot).detach()  # = W_dec[i] + b_dec: the seed's pitfall
    if mode == "clamp":
        raise ValueError("clamp mode has no fixed direction; use clamping(...)")
    return sae.W_dec[feature].detach()  # W_dec[i], also for SAELens SAEs (no feature_direction)


@contextlib.contextmanager
def steered(
    model: HookedTransformer, sae: Any, feature: int | Mapping[int, float],
    scale: float | None = None, mode: str = "decoder_row", hook_name: str | None = None,
    positions: Positions | int | None = None,
) -> Iterator[SteeringStats]:
    """Steer with SAE feature ``feature`` at ``scale``, or with several at once
    (``{feature: scale, ...}``), in any of the three modes (scales in absolute units).

    ``decoder_row`` adds ``sum scale_i * W_dec[i]``, ``clamp`` clamps each listed feature,
    ``decoder_onehot`` adds ``sum scale_i * decode(onehot_i)``. ``positions``: as in
    ``steering`` (default every position).
    """
    check_mode(mode)
    scales = feature_scales(feature, scale, sae.cfg.d_sae)
    hook_name = check_sae_fits(model, sae.cfg, hook_name)
    if mode == "clamp":
        ctx = clamping(model, sae, scales, None, hook_name, positions)
    else:
        direction = sum(s * steering_direction(sae, i, mode).float() for i, s in scales.items())
        ctx = steering(model, hook_name, direction, 1.0, positions)
    with ctx as stats:
        yield stats


# ---------------------------------------------------------------- scale units
# (several features at once, and the max_act unit: units.py; the norm: Steerer.resid_norm)


def to_absolute_scale(relative: float, resid_norm: float, direction: Tensor) -> float:
    """Absolute scale that makes ``scale * direction`` ``relative`` times the typical norm."""
    return float(relative * resid_norm / direction.float().norm().clamp(min=1e-12))


def to_relative_scale(absolute: float, resid_norm: float, direction: Tensor) -> float:
    """Inverse of ``to_absolute_scale``: the steering vector's norm over the typical norm."""
    return float(absolute * direction.float().norm() / resid_norm)

