"""The scale sweep: a steering report at each scale, and the smallest scale that works.

Replaces the seed's hand-tuned "10": the suggested scale is the smallest |scale| whose
success *lower 95 % bound* reaches the target within a text-quality cost budget, so a
lucky point estimate on a few samples is not enough. Success is what a ``Target`` says
(the feature's own firing, its own words, a concept's lift), always relative to the
baseline, never an absolute fraction that a feature firing everywhere already meets. All
scales and features share one unsteered baseline (same seeds) in one measurement batch,
so differences between scales are the steering's. The selection engine's ranking stage
is this sweep (``select.py``).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

# suggest_scale is public here too (sae_steer.measure.suggest_scale): the rule's one home is
# config.rules
from sae_steer.config import (COST_BUDGET, SUCCESS_TARGETS, SteerConfig, passes, steer_config,
                              suggest_scale)
from sae_steer.measure.concepts import as_concept
from sae_steer.measure.report import SteeringReport, run_reports
from sae_steer.measure.target import THRESHOLDS, Target
from sae_steer.steer import Generation, Steerer

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
    """Point estimates of the target's first success measure, per scale."""
    success_low: list[float]
    """Their lower 95 % bounds (what the threshold is checked against)."""
    cost: list[float]
    target: float
    """The first measure's threshold (``config.rules``)."""
    cost_budget: float
    suggested: float | None
    """Smallest |scale| with success lower bound >= target and cost <= budget (None: no
    scale did)."""
    scale_unit: str = "absolute"
    strength: list[float] = dataclasses.field(default_factory=list)
    """Per scale, the target's strength (every definition: 1 passes, cost aside)."""
    best: float | None = None
    """The target's best scale (``Target.best_scale``)."""

    @property
    def feature(self) -> int:
        return self.reports[0].feature

    def best_scale(self) -> float:
        """The suggested scale; without one, the scale with the best lower bound within the
        cost budget (the smaller on ties); else the smallest |scale|: an honest failure
        (``config.rules.best_scale``, on the target's strengths)."""
        return self.best

    def table(self) -> list[dict[str, Any]]:
        return [{"scale": sc, "abs_scale": round(r.scale, 3), self.success_name: su,
                 f"{self.success_name}_lo": lo, "nll_cost": c,
                 "ok": passes(lo, c, self.target, self.cost_budget)}
                for sc, r, su, lo, c in zip(self.scales, self.reports, self.success,
                                            self.success_low, self.cost)]


def sweep_of(target: Target, feature: int, scales: Sequence[float],
             reports: Sequence[SteeringReport], cost_budget: float, unit: str) -> Sweep:
    """The sweep of ``feature`` from its reports at ``scales`` (one per scale)."""
    first = target.definitions[0]
    measure = [target.measures(r.vs_unsteered, feature).get(first) for r in reports]
    succ = [float(m.value) if m is not None else float("nan") for m in measure]
    low = [float(m.lo) if m is not None else float("nan") for m in measure]
    cost = [r.nll_cost.value for r in reports]
    cmps = [r.vs_unsteered for r in reports]
    return Sweep(list(scales), list(reports), target.success_name, succ, low, cost,
                 THRESHOLDS[first], cost_budget,
                 suggest_scale(scales, low, cost, THRESHOLDS[first], cost_budget), unit,
                 [target.strength(c, feature) for c in cmps],
                 target.best_scale(scales, cmps, feature, cost_budget))


def scale_sweep(
    model: HookedTransformer, sae: Any, feature: int, scales: Sequence[float],
    cfg: SteerConfig | None = None, *, concept: Any = None, success: str | None = None,
    cost_budget: float = COST_BUDGET, **settings: Any,
) -> Sweep:
    """``steering_report`` at each scale (one shared unsteered baseline) and a suggested scale.

    ``success``: ``"concept_lift"`` (default when ``concept`` is given) or ``"fires_gain"``
    (fire rate steered minus unsteered); its threshold is ``SUCCESS_TARGETS``'s, the cost
    budget ``COST_BUDGET``'s (``config.rules``). Relative scales use the typical residual
    norm of a ``Steerer`` (``cfg.resid_norm``, else measured once for all scales). The
    sweep's reports skip the random-direction control (they select; the measured report
    that follows a choice carries it). Several features on one baseline: ``scale_sweeps``.
    """
    return scale_sweeps(model, sae, [feature], scales, cfg, concept=concept, success=success,
                        cost_budget=cost_budget, **settings)[feature]


def scale_sweeps(
    model: HookedTransformer, sae: Any, features: Sequence[int], scales: Sequence[float],
    cfg: SteerConfig | None = None, *, concept: Any = None, success: str | None = None,
    cost_budget: float = COST_BUDGET, **settings: Any,
) -> dict[int, Sweep]:
    """``scale_sweep`` for each of ``features``: every (feature, scale) on the same seeds and
    one unsteered baseline, in one measurement batch."""
    success = success or ("concept_lift" if concept is not None else "fires_gain")
    if success not in SUCCESS:
        raise ValueError(f"success must be one of {SUCCESS}, got {success!r}")
    if success == "concept_lift" and concept is None:
        raise ValueError("success='concept_lift' needs concept=")
    target = (Target.for_concept(as_concept(concept)) if success == "concept_lift"
              else Target.own_firing())
    cfg = steer_config(cfg or SteerConfig(n_samples=SWEEP_SAMPLES), **settings)
    return run_sweeps(model, sae, features, scales, cfg, target=target, cost_budget=cost_budget)


def run_sweeps(
    model: HookedTransformer, sae: Any, features: Sequence[int], scales: Sequence[float],
    cfg: SteerConfig, *, target: Target, cost_budget: float = COST_BUDGET,
    unsteered: Generation | None = None, progress: bool = False,
) -> dict[int, Sweep]:
    """``scale_sweeps`` on resolved settings and a ``Target``: what the selection's ranking
    stage calls (``unsteered``: a baseline drawn on ``cfg``'s seeds, reused)."""
    if not scales:
        raise ValueError("scales is empty: give a list such as [0.1, 0.3, 0.5, 1.0]")
    if cfg.scale_unit == "relative":  # one norm for all scales
        cfg = cfg.replace(resid_norm=Steerer.for_config(model, sae, cfg).resid_norm)
    items = [(f, sc) for f in features for sc in scales]
    reports = run_reports(model, sae, items, cfg,
                          concept={f: target.concept_of(f) for f in features},
                          rescore_features=target.rescore, unsteered=unsteered, control=False,
                          progress=progress)
    n = len(scales)
    return {f: sweep_of(target, f, scales, reports[k * n : (k + 1) * n], cost_budget,
                        cfg.scale_unit)
            for k, f in enumerate(features)}
