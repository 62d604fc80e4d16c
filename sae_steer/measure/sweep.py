"""The scale sweep: a steering report at each scale, and the smallest scale that works.

Replaces the seed's hand-tuned "10": the suggested scale is the smallest |scale| whose
success reaches the target within a text-quality cost budget. All scales share one
unsteered baseline (same seeds), so differences between scales are the steering's.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from transformer_lens import HookedTransformer

from sae_steer.config import SteerConfig, steer_config
from sae_steer.lm import check_sae_fits
from sae_steer.measure.report import SteeringReport, steering_report
from sae_steer.steer import generate_unsteered, typical_resid_norm

SUCCESS = ("fires", "concept_lift")


@dataclasses.dataclass
class Sweep:
    scales: list[float]
    """The scales as given (in ``scale_unit``)."""
    reports: list[SteeringReport]
    success_name: str
    success: list[float]
    cost: list[float]
    target: float
    cost_budget: float
    suggested: float | None
    """Smallest |scale| with success >= target and cost <= budget (None: no scale did)."""
    scale_unit: str = "absolute"

    def table(self) -> list[dict[str, Any]]:
        return [{"scale": sc, "abs_scale": round(r.scale, 3), self.success_name: su,
                 "nll_cost": c, "ok": su >= self.target and c <= self.cost_budget}
                for sc, r, su, c in zip(self.scales, self.reports, self.success, self.cost)]


def _success(report: SteeringReport, name: str) -> float:
    if name == "concept_lift":
        return float(report.concept_lift)
    return report.steered.fires[report.feature].value


def suggest_scale(scales: Sequence[float], success: Sequence[float], cost: Sequence[float],
                  target: float, cost_budget: float) -> float | None:
    """The smallest |scale| whose success reaches ``target`` at a cost within ``cost_budget``."""
    ok = [sc for sc, su, c in zip(scales, success, cost) if su >= target and c <= cost_budget]
    return min(ok, key=abs) if ok else None


def scale_sweep(
    model: HookedTransformer, sae: Any, feature: int, scales: Sequence[float],
    cfg: SteerConfig | None = None, *, concept: Any = None, success: str | None = None,
    target: float | None = None, cost_budget: float = 1.5, **settings: Any,
) -> Sweep:
    """``steering_report`` at each scale (one shared unsteered baseline) and a suggested scale.

    ``success``: ``"concept_lift"`` (default when ``concept`` is given; target 5x) or
    ``"fires"`` (fraction of samples where the feature fires; target 0.8).
    """
    cfg = steer_config(cfg or SteerConfig(n_samples=16), **settings)
    success = success or ("concept_lift" if concept is not None else "fires")
    if success not in SUCCESS:
        raise ValueError(f"success must be one of {SUCCESS}, got {success!r}")
    if success == "concept_lift" and concept is None:
        raise ValueError("success='concept_lift' needs concept=")
    if not scales:
        raise ValueError("scales is empty: give a list such as [0.1, 0.3, 0.5, 1.0]")
    target = target if target is not None else (5.0 if success == "concept_lift" else 0.8)
    if cfg.scale_unit == "relative" and cfg.resid_norm is None:  # measure once for all scales
        norm = typical_resid_norm(model, check_sae_fits(model, sae.cfg))
        cfg = steer_config(cfg, resid_norm=norm)
    base = generate_unsteered(model, cfg)
    reports = [steering_report(model, sae, feature, sc, cfg, concept=concept, unsteered=base)
               for sc in scales]
    succ = [_success(r, success) for r in reports]
    cost = [r.nll_cost.value for r in reports]
    return Sweep(list(scales), reports, success, succ, cost, target, cost_budget,
                 suggest_scale(scales, succ, cost, target, cost_budget), cfg.scale_unit)
