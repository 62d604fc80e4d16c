"""Which feature steers toward a concept, at which scale? A measured choice.

``choose_feature`` sweeps the scale for the top predictive candidates and the on-word,
pre-word and best-aligned features (``candidates.py``) and keeps the one that reaches the
lift target at the smallest scale within the cost budget. ``steer_concept`` runs the whole
procedure and measures the choice on fresh seeds: selection and measurement never share a
sample.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sae_steer.config import (COST_BUDGET, FIRES_GAIN_TARGET, ChooseConfig, SteerConfig,
                              choose_config, passes, steer_config, within_budget)
from sae_steer.measure.candidates import ConceptCandidates, concept_candidates
from sae_steer.measure.report import Control, SteeringReport, direction_control, run_report
from sae_steer.measure.sweep import SWEEP_SAMPLES, Sweep, run_sweeps
from sae_steer.steer import Steerer

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer


@dataclasses.dataclass
class ConceptChoice:
    concept: str
    """The concept's name."""
    feature: int
    kind: str
    """``predictive``, ``on_word``, ``pre_word`` or ``aligned``."""
    scale: float | None
    """Suggested scale in the sweep's unit (None: no candidate met the target)."""
    sweep: Sweep
    sweeps: dict[int, Sweep]


def _rank(sweep: Sweep) -> tuple:
    """Prefer a met target (by lower bound) at the smallest scale; else the best lower
    bound within budget."""
    if sweep.suggested is not None:
        i = sweep.scales.index(sweep.suggested)
        return (0, abs(sweep.suggested), -sweep.success_low[i])
    ok = [lo for lo, c in zip(sweep.success_low, sweep.cost) if within_budget(c, sweep.cost_budget)]
    return (1, -(max(ok) if ok else 0.0), 0.0)


def choose_feature(
    model: HookedTransformer, sae: Any, candidates: ConceptCandidates, scales: Sequence[float],
    cfg: SteerConfig | None = None, *, n_candidates: int = 3, target: float | None = None,
    cost_budget: float = COST_BUDGET, **settings: Any,
) -> ConceptChoice:
    """Sweep the top ``n_candidates`` predictive features, the on-word and pre-word features
    and the best-aligned one (samples drawn with ``cfg``, relative scales by default); keep
    the best."""
    cfg = steer_config(cfg or SteerConfig(n_samples=SWEEP_SAMPLES, scale_unit="relative"),
                       **settings)
    return run_choice(model, sae, candidates, scales, cfg, n_candidates=n_candidates,
                      target=target, cost_budget=cost_budget)


def run_choice(
    model: HookedTransformer, sae: Any, candidates: ConceptCandidates, scales: Sequence[float],
    cfg: SteerConfig, *, n_candidates: int = 3, target: float | None = None,
    cost_budget: float = COST_BUDGET,
) -> ConceptChoice:
    """``choose_feature`` on resolved settings (no shortcuts): what ``steer_concept`` calls."""
    extra = [candidates.on_word] + ([candidates.pre_word] if candidates.pre_word >= 0 else [])
    extra += candidates.aligned[:1]
    pool = list(dict.fromkeys(candidates.predictive[:n_candidates] + extra))
    sweeps = run_sweeps(model, sae, pool, scales, cfg, concept=candidates.concept,
                        target=target, cost_budget=cost_budget)
    best = min(pool, key=lambda f: _rank(sweeps[f]))
    kind = ("predictive" if best in candidates.predictive[:n_candidates]
            else "on_word" if best == candidates.on_word
            else "pre_word" if best == candidates.pre_word else "aligned")
    return ConceptChoice(candidates.concept.name, best, kind, sweeps[best].suggested,
                         sweeps[best], sweeps)


@dataclasses.dataclass
class ConceptResult:
    """The measured answer for one concept: chosen feature, its scale and a fresh report."""

    choice: ConceptChoice
    candidates: ConceptCandidates
    report: SteeringReport
    """The report at the chosen scale, on seeds not used to choose it."""
    relative_scale: float
    config: ChooseConfig = dataclasses.field(default_factory=ChooseConfig)
    direction: Control | None = None
    """The concept's context direction (``candidates.direction``) at the same norm, same
    seeds: what a supervised vector of that size does at this hook (None: not measured)."""

    @property
    def target_met(self) -> bool:
        """The lift's lower 95 % bound reaches the target within the cost budget (``passes``)."""
        r = self.report
        return passes(r.lift.lo, r.nll_cost.value, self.config.target, self.config.cost_budget)

    def row(self) -> dict[str, Any]:
        r, c = self.report, self.candidates
        on = r.steered.fires.get(c.on_word), r.unsteered.fires.get(c.on_word)
        ctrl = r.control.vs_unsteered.lift if r.control is not None else None
        return {
            "concept": self.choice.concept, "feature": self.choice.feature,
            "kind": self.choice.kind, "scale_rel": self.relative_scale,
            "scale_abs": round(r.scale, 3), "n_samples": r.steered.n_samples,
            "rate_steered": r.steered.concept_rate.value,
            "rate_unsteered": r.unsteered.concept_rate.value,
            "lift": r.lift.value, "lift_lo": r.lift.lo, "lift_hi": r.lift.hi,
            "events": f"{r.lift.numerator} / {r.lift.denominator}",
            "nll_cost": r.nll_cost.value, "rep_cost": r.rep_cost.value,
            "control_lift_hi": ctrl.hi if ctrl is not None else math.nan,
            **_direction_row(self.direction),
            "fires_steered": r.steered.fires[r.feature].value,
            "fires_unsteered": r.unsteered.fires[r.feature].value,
            "on_word": c.on_word, "on_word_f1": round(c.on_word_f1, 3),
            "on_word_fires_steered": on[0].value, "on_word_fires_unsteered": on[1].value,
            "target_met": self.target_met,
        }


def _direction_row(direction: Control | None) -> dict[str, Any]:
    lift = direction.vs_unsteered.lift if direction is not None else None
    if lift is None:
        return {"direction_lift": math.nan, "direction_lift_lo": math.nan,
                "direction_nll_cost": math.nan}
    return {"direction_lift": lift.value, "direction_lift_lo": lift.lo,
            "direction_nll_cost": direction.vs_unsteered.nll_cost.value}


def steer_concept(
    model: HookedTransformer, sae: Any, texts: Sequence[str], concept: Any,
    cfg: ChooseConfig | None = None, steer: SteerConfig | None = None, **settings: Any,
) -> ConceptResult:
    """Candidates -> sweep (seeds from ``cfg.select_seed``) -> report on held-out seeds.

    ``cfg`` says how to choose (keyword ``settings`` are shortcuts for its fields);
    ``steer`` how to sample (prompt, length, temperature; default: relative scales). The
    scale is chosen on one set of seeds and measured on another (``cfg.final_seed``), so
    the reported lift is not inflated by picking the luckiest scale. The first scale to
    cross the target on a few seeds tends to fall short on fresh ones (winner's curse), so
    selection aims ``cfg.select_margin`` x higher than ``cfg.target``. When no scale meets
    that, the report uses the scale with the best lift within the cost budget. Beside it,
    the concept's context direction at the same norm on the same seeds
    (``ConceptResult.direction``) shows whether any such vector could do better.
    """
    cfg = choose_config(cfg, **settings)
    steer = steer or SteerConfig(scale_unit="relative")
    # candidates, sweeps and the report push with one norm (also for absolute scales: the
    # candidates' effect is read at a relative scale)
    steer = steer.replace(resid_norm=Steerer.for_config(model, sae, steer).resid_norm)
    cands = concept_candidates(model, sae, texts, concept, cfg, resid_norm=steer.resid_norm)
    # selection and measurement: the seeds and sizes config.seeds names, derived once
    choice = run_choice(model, sae, cands, cfg.scales, cfg.select_steer(steer),
                        n_candidates=cfg.n_candidates, target=cfg.target * cfg.select_margin,
                        cost_budget=cfg.cost_budget)
    rel = choice.sweep.best_scale()
    report = run_report(model, sae, choice.feature, rel, cfg.final_steer(steer),
                        concept=cands.concept, rescore_features=[cands.on_word])
    direction = None
    if cands.direction is not None and report.config.mode != "clamp":
        gen, _ = report.generations
        direction = direction_control(model, sae, gen, report.config, list(report.steered.fires),
                                      cands.concept, report.unsteered, cands.direction)
    return ConceptResult(choice, cands, report, rel, cfg, direction)


@dataclasses.dataclass
class FeatureResult:
    """One feature steered on its own: the scale chosen on select seeds, measured on fresh ones."""

    feature: int
    scale: float
    """The chosen scale, in the steering config's unit."""
    sweep: Sweep
    report: SteeringReport
    config: ChooseConfig

    @property
    def steers(self) -> bool:
        """The fire-rate gain's lower 95 % bound reaches ``FIRES_GAIN_TARGET`` within the
        budget (``passes``, the rule the sweep selects by)."""
        gain = self.report.fires_gain[self.feature]
        return passes(gain.lo, self.report.nll_cost.value, FIRES_GAIN_TARGET,
                      self.config.cost_budget)

    def row(self) -> dict[str, Any]:
        r, gain = self.report, self.report.fires_gain[self.feature]
        return {"feature": self.feature, "scale": self.scale, "n_samples": r.steered.n_samples,
                "fires_steered": r.steered.fires[self.feature].value,
                "fires_unsteered": r.unsteered.fires[self.feature].value,
                "fires_gain": gain.value, "fires_gain_lo": gain.lo,
                "nll_cost": r.nll_cost.value, "steers": self.steers}


def steer_feature(model: HookedTransformer, sae: Any, feature: int,
                  cfg: ChooseConfig | None = None, steer: SteerConfig | None = None,
                  **settings: Any) -> FeatureResult:
    """Does steering with ``feature`` make it fire in the generated text (re-scored by the
    unsteered model)? The scale is swept on ``cfg.n_select`` samples (success: the fire-rate
    gain's lower bound), then measured on ``cfg.n_final`` fresh ones with the control."""
    cfg = choose_config(cfg, **settings)
    steer = steer or SteerConfig(scale_unit="relative")
    if steer.scale_unit == "relative":  # the sweep and the report push with one norm
        steer = steer.replace(resid_norm=Steerer.for_config(model, sae, steer).resid_norm)
    sweep = run_sweeps(model, sae, [feature], cfg.scales, cfg.select_steer(steer),
                       success="fires_gain", target=FIRES_GAIN_TARGET,
                       cost_budget=cfg.cost_budget)[feature]
    scale = sweep.best_scale()
    report = run_report(model, sae, feature, scale, cfg.final_steer(steer))
    return FeatureResult(feature, scale, sweep, report, cfg)
