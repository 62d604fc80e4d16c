"""The ``Steerer``: steering with one SAE at one hook, and the one home of its scale units.

A scale means nothing without its unit. ``absolute`` multiplies ``W_dec[i]`` as is;
``relative`` is a multiple of the *typical residual norm* at the hook; ``max_act`` is a
multiple of the feature's max activation in a search (``SCALE_UNITS``). The typical norm
is a derived value (principle 13): measured once, by ``typical_resid_norm`` on the model's
own samples, or given by the user (``SteerConfig.resid_norm``). Every sampler, sweep,
choice, candidate ranking, score and panel asks a ``Steerer`` for it, so they all push by
the same amount for the same relative scale. A measured norm is kept per (model, hook), so
a second ``Steerer`` of the same model need not sample again.
"""
from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens import HookedTransformer

from sae_steer.config import SteerConfig, check_number, steer_config
from sae_steer.lm import check_sae_fits
from sae_steer.steer.generate import (Generation, _draw, _finish, _positions_gate, _sample,
                                      typical_resid_norm)
from sae_steer.steer.hooks import (Positions, SteeringStats, feature_scales, steered,
                                   steering_direction, to_absolute_scale, to_relative_scale)
from sae_steer.steer.units import to_absolute_scales

# model -> {(hook, weights' version): measured typical norm}. Weak keys: a cached norm never
# keeps a model alive. The version sums the parameters' in-place-edit counters, so a model
# trained or edited in place is measured again rather than answered with its old norm.
_NORMS: weakref.WeakKeyDictionary[Any, dict[tuple[str, int], float]] = weakref.WeakKeyDictionary()


def _weights_version(model: Any) -> int:
    return sum(p._version for p in model.parameters())  # torch's per-tensor edit counter


def measured_resid_norm(model: HookedTransformer, hook_name: str) -> float:
    """``typical_resid_norm(model, hook_name)`` measured once per (model, hook, weights)."""
    cache = _NORMS.setdefault(model, {})
    key = (hook_name, _weights_version(model))
    if key not in cache:
        cache[key] = typical_resid_norm(model, hook_name)
    return cache[key]


class Steerer:
    """Steering with one SAE at one hook: owns the typical residual norm (measured once) and
    every scale-unit conversion, and builds the hook.

    ``hook_name``: default the SAE's own (checked against the model). ``max_act``: the
    features' max activations (``search.max_act``) for the ``max_act`` unit. ``resid_norm``:
    the user's typical residual norm (an override nobody has to pass); None: measured on
    first use with ``typical_resid_norm(model, hook_name)``, once per model and hook.
    """

    def __init__(self, model: HookedTransformer, sae: Any, hook_name: str | None = None, *,
                 max_act: Any = None, resid_norm: float | None = None) -> None:
        self.model, self.sae = model, sae
        self.hook_name = check_sae_fits(model, sae.cfg, hook_name)
        self.max_act = max_act
        if resid_norm is not None and check_number(resid_norm, "resid_norm") <= 0:
            raise ValueError(f"resid_norm must be positive, got {resid_norm!r}")
        self._resid_norm = None if resid_norm is None else float(resid_norm)

    @classmethod
    def for_config(cls, model: HookedTransformer, sae: Any, cfg: SteerConfig,
                   hook_name: str | None = None, max_act: Any = None) -> Steerer:
        """The steerer for ``cfg``'s samples: its ``resid_norm`` (None: measured once)."""
        return cls(model, sae, hook_name, max_act=max_act, resid_norm=cfg.resid_norm)

    @property
    def resid_norm(self) -> float:
        """Typical residual norm at the hook: the user's, else measured once and cached."""
        if self._resid_norm is None:
            self._resid_norm = measured_resid_norm(self.model, self.hook_name)
        return self._resid_norm

    def direction(self, feature: int, mode: str = "decoder_row") -> Float[Tensor, " d_model"]:
        """The vector added per unit of absolute scale: ``W_dec[i]`` (``decoder_row``), or
        ``decode(onehot_i) = W_dec[i] + b_dec`` (``decoder_onehot``, the pitfall)."""
        return steering_direction(self.sae, feature, mode)

    def absolute(self, scales: Mapping[int, float], unit: str,
                 mode: str = "decoder_row") -> dict[int, float]:
        """Each feature's scale in absolute units (clamp mode: the clamp value).

        The norm is measured only when ``unit`` is ``"relative"``.
        """
        scales = feature_scales(scales, None, self.sae.cfg.d_sae)
        norm = self.resid_norm if unit == "relative" else None
        return to_absolute_scales(self.sae, scales, unit, mode, resid_norm=norm,
                                  max_act=self.max_act)

    def vector(self, scales: Mapping[int, float], unit: str = "relative"
               ) -> Float[Tensor, " d_model"]:
        """``sum_i absolute_i * W_dec[i]`` (decoder-row steering), float32 on the SAE's device."""
        w_dec = self.sae.W_dec.detach()
        out = torch.zeros(w_dec.shape[1], device=w_dec.device, dtype=torch.float32)
        for i, s in self.absolute(scales, unit).items():
            out += s * w_dec[i].float()
        return out

    def relative(self, absolute: float, feature: int, mode: str = "decoder_row") -> float:
        """Inverse for one feature: its steering vector's norm over the typical norm."""
        return to_relative_scale(absolute, self.resid_norm, self.direction(feature, mode))

    def to_absolute(self, relative: float, feature: int, mode: str = "decoder_row") -> float:
        """One feature's absolute scale whose vector is ``relative`` x the typical norm."""
        return to_absolute_scale(relative, self.resid_norm, self.direction(feature, mode))

    def scale_rows(self, features: Mapping[str, int] | Sequence[int], absolute: float,
                   relative: float) -> list[dict[str, Any]]:
        """A table row per feature: its decoder row's norm, ``absolute`` in x the typical
        norm, and ``relative`` x norm as an absolute scale. ``features``: indices, or
        ``{role: feature}`` (the role becomes the first column)."""
        named = features.items() if isinstance(features, Mapping) else [(None, f) for f in features]
        rows = []
        for role, f in named:
            row = {} if role is None else {"role": role}
            rows.append({**row, "feature": int(f), "|W_dec[i]|": float(self.direction(f).norm()),
                         f"scale {absolute:g} as × norm": self.relative(absolute, f),
                         f"{relative:g}× norm as scale": self.to_absolute(relative, f)})
        return rows

    @contextlib.contextmanager
    def steer(self, scales: Mapping[int, float], unit: str, mode: str = "decoder_row",
              positions: Positions | int | None = None) -> Iterator[SteeringStats]:
        """Steer with ``{feature: scale}`` in ``unit`` for the block (``steered``; hook removed
        on exit). Scales are converted before the hook is attached."""
        absolute = self.absolute(scales, unit, mode)
        with steered(self.model, self.sae, absolute, None, mode, self.hook_name,
                     positions) as stats:
            yield stats


def generate_steered(
    model: HookedTransformer, sae: Any, feature: int | Mapping[int, float],
    scale: float | None = None, cfg: SteerConfig | None = None, *, max_act: Any = None,
    hook_name: str | None = None, **settings: Any,
) -> Generation:
    """``cfg.n_samples`` texts from ``cfg.prompt`` while steering with SAE feature ``feature``
    at ``scale``, or with several features at once: ``{feature: scale, ...}`` (no ``scale``).

    Batched; sample j uses generator seed ``sample_seed(cfg.seed, j)`` (``config.seeds``) for both steered and
    unsteered runs, so they are comparable token by token. Stops at end-of-text (texts and
    tokens are cut before the first EOS). Scales are in ``cfg.scale_unit``: absolute;
    ``"relative"``, a multiple of the typical residual norm at the hook (``cfg.resid_norm``;
    measured when None); or ``"max_act"``, a multiple of each feature's max activation in a
    search, given as ``max_act=search.max_act``. ``cfg.positions="generated"`` leaves the
    prompt alone and steers every generated position. Keyword ``settings`` are shortcuts
    for ``SteerConfig`` fields. Every input is checked before any hook is attached; no hook
    is left afterwards.
    """
    if isinstance(scale, SteerConfig) and cfg is None:  # generate_steered(m, sae, {..}, cfg)
        scale, cfg = None, scale
    cfg = steer_config(cfg, **settings)
    scales = feature_scales(feature, scale, sae.cfg.d_sae)
    steerer = Steerer.for_config(model, sae, cfg, hook_name, max_act)
    prompt, seeds = _draw(model, cfg)
    scales = steerer.absolute(scales, cfg.scale_unit, cfg.mode)
    gate = _positions_gate(cfg, len(prompt))
    with steerer.steer(scales, "absolute", cfg.mode, gate) as stats:
        new = _sample(model, prompt, seeds, cfg, gate)
    out = _finish(model, prompt, new, seeds, cfg)
    out.feature, out.scale = next(iter(scales.items()))
    out.mode, out.stats, out.features = cfg.mode, stats, scales
    return out
