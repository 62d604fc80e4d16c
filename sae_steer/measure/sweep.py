"""The scale sweep: a steering report at each scale, and the smallest scale that works.

Replaces the seed's hand-tuned "10": the suggested scale is the smallest |scale| whose
success *lower 95 % bound* reaches the target within a text-quality cost budget, so a
lucky point estimate on a few samples is not enough. Success is the concept's lift
(steered / unsteered rate) or the fire-rate gain (steered minus unsteered fire rate of the
feature, paired by seed): both relative to the baseline, never an absolute fraction that
a feature firing everywhere already meets. All scales share one unsteered baseline (same
seeds), so differences between scales are the steering's.
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

SUCCESS = ("fires_gain", "concept_lift")
DEFAULT_TARGET = {"fires_gain": 0.3, "concept_lift": 3.0}
"""Lower-bound targets: fire rate +0.3 over the baseline; 3x the baseline's concept rate."""


@dataclasses.dataclass
class Sweep:
    scales: list[float]
    """The scales as given (in ``scale_unit``)."""
    reports: list[SteeringReport]
    success_name: str
    success: list[float]
    """Point estimates of the success measure, per scale."""
    success_low: list[float]
    """Their lower 95 % bounds (what the target is checked against)."""
    cost: list[float]
    target: float
    cost_budget: float
    suggested: float | None
    """Smallest |scale| with success lower bound >= target and cost <= budget (None: no
    scale did)."""
    scale_unit: str = "absolute"

    def best_scale(self) -> float:
        """The suggested scale; without one, the scale with the best lower bound within the
        cost budget (the smaller on ties); else the smallest |scale|: an honest failure."""
        if self.suggested is not None:
            return self.suggested
        ok = [(lo, -abs(sc), sc) for sc, lo, c in zip(self.scales, self.success_low, self.cost)
              if c <= self.cost_budget]
        return max(ok)[2] if ok else min(self.scales, key=abs)

    def table(self) -> list[dict[str, Any]]:
        return [{"scale": sc, "abs_scale": round(r.scale, 3), self.success_name: su,
                 f"{self.success_name}_lo": lo, "nll_cost": c,
                 "ok": lo >= self.target and c <= self.cost_budget}
                for sc, r, su, lo, c in zip(self.scales, self.reports, self.success,
                                            self.success_low, self.cost)]


def success_of(report: SteeringReport, name: str) -> tuple[float, float]:
    """``(estimate, lower 95 % bound)`` of success measure ``name`` in ``report``."""
    est = report.lift if name == "concept_lift" else report.fires_gain[report.feature]
    return float(est.value), float(est.lo)


def suggest_scale(scales: Sequence[float], success_low: Sequence[float], cost: Sequence[float],
                  target: float, cost_budget: float) -> float | None:
    """The smallest |scale| whose success lower bound reaches ``target`` at a cost (point
    estimate of the NLL increase) within ``cost_budget``."""
    ok = [sc for sc, lo, c in zip(scales, success_low, cost) if lo >= target and c <= cost_budget]
    return min(ok, key=abs) if ok else None


def scale_sweep(
    model: HookedTransformer, sae: Any, feature: int, scales: Sequence[float],
    cfg: SteerConfig | None = None, *, concept: Any = None, success: str | None = None,
    target: float | None = None, cost_budget: float = 1.5, **settings: Any,
) -> Sweep:
    """``steering_report`` at each scale (one shared unsteered baseline) and a suggested scale.

    ``success``: ``"concept_lift"`` (default when ``concept`` is given; target: lower bound
    3x) or ``"fires_gain"`` (fire rate steered minus unsteered; target: lower bound +0.3).
    The sweep's reports skip the random-direction control (they select; the measured report
    that follows a choice carries it).
    """
    cfg = steer_config(cfg or SteerConfig(n_samples=16), **settings)
    success = success or ("concept_lift" if concept is not None else "fires_gain")
    if success not in SUCCESS:
        raise ValueError(f"success must be one of {SUCCESS}, got {success!r}")
    if success == "concept_lift" and concept is None:
        raise ValueError("success='concept_lift' needs concept=")
    if not scales:
        raise ValueError("scales is empty: give a list such as [0.1, 0.3, 0.5, 1.0]")
    target = target if target is not None else DEFAULT_TARGET[success]
    if cfg.scale_unit == "relative" and cfg.resid_norm is None:  # measure once for all scales
        norm = typical_resid_norm(model, check_sae_fits(model, sae.cfg))
        cfg = steer_config(cfg, resid_norm=norm)
    base = generate_unsteered(model, cfg)
    reports = [steering_report(model, sae, feature, sc, cfg, concept=concept, unsteered=base,
                               control=False) for sc in scales]
    succ, low = zip(*(success_of(r, success) for r in reports))
    cost = [r.nll_cost.value for r in reports]
    return Sweep(list(scales), reports, success, list(succ), list(low), cost, target,
                 cost_budget, suggest_scale(scales, low, cost, target, cost_budget),
                 cfg.scale_unit)
