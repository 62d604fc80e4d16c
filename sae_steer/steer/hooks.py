"""Steering hooks: push a feature's direction into the residual stream while the model runs.

Three ways to steer with SAE feature ``i`` at the SAE's hook:

- ``decoder_row`` (the seed's method): add ``scale * W_dec[i]`` at every position.
- ``clamp`` (Anthropic's method): encode the activation, set feature i to ``scale``, decode,
  and add back the SAE's reconstruction error so every other feature passes through as is.
- ``decoder_onehot`` (a pitfall, kept only to show it): add ``scale * sae.decode(onehot_i)``,
  which is ``scale * (W_dec[i] + b_dec)`` -- the decoder bias swamps the feature.

Hooks are global state on the model, so every hook here lives inside a context manager
that removes it on exit -- normal, error or KeyboardInterrupt. Scale units (absolute vs a
multiple of the typical residual norm) convert here too; the sampler is ``generate.py``.
SAEs are duck-typed (``cfg.d_sae``, ``cfg.d_in``, ``cfg.hook_name``, ``W_dec``, ``encode``,
``decode``), so SAELens SAEs steer as well.
"""
from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
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
    """What a steering hook did: how many forward passes and token positions it touched."""

    calls: int = 0
    positions: int = 0


def check_mode(mode: str) -> str:
    """``mode`` if it is one of ``MODES``, else a ValueError listing them."""
    if mode not in MODES:
        raise ValueError(f"unknown steering mode {mode!r}; choose one of {', '.join(MODES)}")
    return mode


@contextlib.contextmanager
def hooked(model: HookedTransformer, hook_name: str, fn: Callable) -> Iterator[None]:
    """Attach ``fn`` at ``hook_name`` for the block; always removed on exit."""
    before = attached_hook_count(model)
    # model.hooks removes exactly the hooks of its own context level in its finally clause,
    # so hooks a user attached before us survive and ours never leak.
    with model.hooks(fwd_hooks=[(hook_name, fn)]):
        yield
    assert attached_hook_count(model) == before, "steering hook leaked"


def _count(stats: SteeringStats, act: Tensor) -> None:
    stats.calls += 1
    stats.positions += act.shape[0] * act.shape[1] if act.ndim >= 3 else act.shape[0]


@contextlib.contextmanager
def steering(
    model: HookedTransformer,
    hook_name: str,
    direction: Float[Tensor, " d_model"],
    scale: float,
) -> Iterator[SteeringStats]:
    """Add ``scale * direction`` at ``hook_name`` at every position of every forward pass.

    That includes the prompt pass and each length-1 pass of KV-cached generation. Yields a
    ``SteeringStats`` that counts the passes and positions steered. Works with any
    ``HookedTransformer``; ``direction`` is moved to the activation's device and dtype.
    """
    scale = check_number(scale, "scale")
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
        _count(stats, act)
        key = (act.device, act.dtype)
        if key not in moved:  # move once, not on every one of the length-1 passes
            moved[key] = delta.to(device=act.device, dtype=act.dtype)
        return act + moved[key]

    with hooked(model, hook_name, add):
        yield stats


@contextlib.contextmanager
def clamping(
    model: HookedTransformer, sae: Any, feature: int, value: float, hook_name: str | None = None
) -> Iterator[SteeringStats]:
    """Clamp SAE feature ``feature`` to ``value`` at every position, keeping the SAE's error.

    ``x -> decode(f with f_i := value) + (x - decode(f))``. Because the decoder is linear this
    equals ``x + (value - f_i) * W_dec[i]``, which we compute directly: it is exact when
    ``value`` equals the feature's own activation, and every other feature passes untouched.
    """
    value = check_number(value, "clamp value")
    feature = feature_index(feature, sae.cfg.d_sae)
    hook_name = check_sae_fits(model, sae.cfg, hook_name)
    stats = SteeringStats()
    w_dec = sae.W_dec.detach()

    def clamp(act: Float[Tensor, "batch pos d_model"], hook: Any) -> Tensor:
        _count(stats, act)
        x = act.to(device=w_dec.device, dtype=w_dec.dtype)
        with torch.no_grad():
            f_i = sae.encode(x)[..., feature : feature + 1]
        return act + ((value - f_i) * w_dec[feature]).to(device=act.device, dtype=act.dtype)

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
    model: HookedTransformer, sae: Any, feature: int, scale: float, mode: str = "decoder_row",
    hook_name: str | None = None,
) -> Iterator[SteeringStats]:
    """Steer with SAE feature ``feature`` in any of the three modes (scale in absolute units)."""
    check_mode(mode)
    hook_name = check_sae_fits(model, sae.cfg, hook_name)
    if mode == "clamp":
        ctx = clamping(model, sae, feature, scale, hook_name)
    else:
        ctx = steering(model, hook_name, steering_direction(sae, feature, mode), scale)
    with ctx as stats:
        yield stats


# ---------------------------------------------------------------- scale units


def to_absolute_scale(relative: float, resid_norm: float, direction: Tensor) -> float:
    """Absolute scale that makes ``scale * direction`` ``relative`` times the typical norm."""
    return float(relative * resid_norm / direction.float().norm().clamp(min=1e-12))


def to_relative_scale(absolute: float, resid_norm: float, direction: Tensor) -> float:
    """Inverse of ``to_absolute_scale``: the steering vector's norm over the typical norm."""
    return float(absolute * direction.float().norm() / resid_norm)
