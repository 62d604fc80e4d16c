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
from typing import TYPE_CHECKING, Any

# suggest_scale is public here too (sae_steer.measure.suggest_scale): the rule's one home is
# config.rules
from sae_steer.config import (COST_BUDGET, SUCCESS_TARGETS, SteerConfig, best_scale, passes,
                              steer_config, suggest_scale)
from sae_steer.measure.report import SteeringReport, run_reports
from sae_steer.steer import Steerer, generate_unsteered

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer

SWEEP_SAMPLES = 16
"""Samples per scale of a sweep when the caller's settings do not say."""
SUCCESS = tuple(SUCCESS_TARGETS)
"""The success measures (``fires_gain``, ``concept_lift``); targets in ``config.rules``."""


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
        cost budget (the smaller on ties); else the smallest |scale|: an honest failure
        (``config.rules.best_scale``)."""
        return best_scale(self.scales, self.success_low, self.cost, self.target, self.cost_budget)

    def table(self) -> list[dict[str, Any]]:
        return [{"scale": sc, "abs_scale": round(r.scale, 3), self.success_name: su,
                 f"{self.success_name}_lo": lo, "nll_cost": c,
                 "ok": passes(lo, c, self.target, self.cost_budget)}
                for sc, r, su, lo, c in zip(self.scales, self.reports, self.success,
                                            self.success_low, self.cost)]


def success_of(report: SteeringReport, name: str) -> tuple[float, float]:
    """``(estimate, lower 95 % bound)`` of success measure ``name`` in ``report``."""
    est = report.lift if name == "concept_lift" else report.fires_gain[report.feature]
    return float(est.value), float(est.lo)


def scale_sweep(
    model: HookedTransformer, sae: Any, feature: int, scales: Sequence[float],
    cfg: SteerConfig | None = None, *, concept: Any = None, success: str | None = None,
    target: float | None = None, cost_budget: float = COST_BUDGET, **settings: Any,
) -> Sweep:
    """``steering_report`` at each scale (one shared unsteered baseline) and a suggested scale.

    ``success``: ``"concept_lift"`` (default when ``concept`` is given) or ``"fires_gain"``
    (fire rate steered minus unsteered); ``target`` defaults to that measure's
    ``SUCCESS_TARGETS`` entry, ``cost_budget`` to ``COST_BUDGET`` (``config.rules``).
    Relative scales use the typical residual norm of a ``Steerer`` (``cfg.resid_norm``, else
    measured once for all scales). The sweep's reports skip the random-direction control
    (they select; the measured report that follows a choice carries it). Several features
    on one baseline, in shared batches: ``scale_sweeps``.
    """
    return run_sweeps(model, sae, [feature], scales, sweep_config(cfg, **settings),
                      concept=concept, success=success, target=target,
                      cost_budget=cost_budget)[feature]


def scale_sweeps(
    model: HookedTransformer, sae: Any, features: Sequence[int], scales: Sequence[float],
    cfg: SteerConfig | None = None, *, concept: Any = None, success: str | None = None,
    target: float | None = None, cost_budget: float = COST_BUDGET, **settings: Any,
) -> dict[int, Sweep]:
    """``scale_sweep`` for each of ``features``: every (feature, scale) on the same seeds and
    one unsteered baseline, all rows generated in shared batches (``steering_reports``)."""
    return run_sweeps(model, sae, features, scales, sweep_config(cfg, **settings),
                      concept=concept, success=success, target=target, cost_budget=cost_budget)


def sweep_config(cfg: SteerConfig | None = None, **settings: Any) -> SteerConfig:
    """The settings a sweep samples with: ``cfg`` (default ``SteerConfig(n_samples=
    SWEEP_SAMPLES)``) with the keyword shortcuts applied, resolved once here."""
    return steer_config(cfg or SteerConfig(n_samples=SWEEP_SAMPLES), **settings)


def run_sweeps(
    model: HookedTransformer, sae: Any, features: Sequence[int], scales: Sequence[float],
    cfg: SteerConfig, *, concept: Any = None, success: str | None = None,
    target: float | None = None, cost_budget: float = COST_BUDGET,
) -> dict[int, Sweep]:
    """``scale_sweeps`` on resolved settings (no shortcuts): what a choice calls."""
    success = success or ("concept_lift" if concept is not None else "fires_gain")
    if success not in SUCCESS:
        raise ValueError(f"success must be one of {SUCCESS}, got {success!r}")
    if success == "concept_lift" and concept is None:
        raise ValueError("success='concept_lift' needs concept=")
    if not scales:
        raise ValueError("scales is empty: give a list such as [0.1, 0.3, 0.5, 1.0]")
    target = target if target is not None else SUCCESS_TARGETS[success]
    if cfg.scale_unit == "relative":  # one norm for all scales
        cfg = cfg.replace(resid_norm=Steerer.for_config(model, sae, cfg).resid_norm)
    base = generate_unsteered(model, cfg)
    reports = run_reports(model, sae, [(f, sc) for f in features for sc in scales], cfg,
                          concept=concept, unsteered=base, control=False)
    out = {}
    for k, f in enumerate(features):
        mine = reports[k * len(scales) : (k + 1) * len(scales)]
        succ, low = zip(*(success_of(r, success) for r in mine))
        cost = [r.nll_cost.value for r in mine]
        out[f] = Sweep(list(scales), mine, success, list(succ), list(low), cost, target,
                       cost_budget, suggest_scale(scales, low, cost, target, cost_budget),
                       cfg.scale_unit)
    return out
