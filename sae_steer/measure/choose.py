"""Which feature steers toward a concept, at which scale? The selection engine's concept preset.

``steer_concept`` ranks features on texts (``candidates.py``: the top predictive ones, the
on-word, pre-word and best-aligned features), then hands that pool to the selection
engine (``select.py``) with the concept as its target: swept on one set of seeds,
confirmed on another, and reported on a third beside a random direction, prompting (the
concept's most characteristic token written into the prompt) and the concept's context
direction, all at the same norm and on the same seeds.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

from sae_steer.config import SelectConfig, SteerConfig, passes, replace_config
from sae_steer.measure.candidates import ConceptCandidates, concept_candidates
from sae_steer.measure.report import Control, SteeringReport
from sae_steer.measure.screen_results import SteerabilityScreen
from sae_steer.measure.select import select_features
from sae_steer.measure.sweep import Sweep
from sae_steer.measure.target import THRESHOLDS, Target
from sae_steer.steer import Steerer
from sae_steer.steer.generate import prompt_tokens


@dataclasses.dataclass
class ConceptChoice:
    concept: str
    """The concept's name."""
    feature: int
    kind: str
    """``predictive``, ``on_word``, ``pre_word`` or ``aligned``."""
    scale: float | None
    """Suggested scale in the sweep's unit (None: no scale passed while ranking)."""
    sweep: Sweep
    sweeps: dict[int, Sweep]
    selection: SteerabilityScreen | None = None
    """The whole selection (ranking, confirmation, report rows)."""


@dataclasses.dataclass
class ConceptResult:
    """The measured answer for one concept: chosen feature, its scale and a fresh report."""

    choice: ConceptChoice
    candidates: ConceptCandidates
    report: SteeringReport
    """The report at the chosen scale, on seeds used neither to rank nor to confirm it."""
    relative_scale: float
    config: SelectConfig = dataclasses.field(default_factory=SelectConfig.for_concept)

    @property
    def direction(self) -> Control | None:
        """The concept's context direction (``candidates.direction``) at the same norm, same
        seeds: what a supervised vector of that size does at this hook (None: not measured)."""
        return self.report.reference

    @property
    def recommended(self) -> bool:
        """The selection recommended this feature (its promise: ``config.rules``)."""
        sel = self.choice.selection
        return sel is not None and self.choice.feature in sel.confirmed

    @property
    def target_met(self) -> bool:
        """The report's lift lower bound reaches ``LIFT_TARGET`` within the cost budget."""
        r = self.report
        return passes(r.lift.lo, r.nll_cost.value, THRESHOLDS["concept"], self.config.cost_budget)

    def row(self) -> dict[str, Any]:
        r, c = self.report, self.candidates
        on = r.steered.fires.get(c.on_word), r.unsteered.fires.get(c.on_word)
        ctrl = r.control.vs_unsteered.lift if r.control is not None else None
        prompt = r.prompted.vs_unsteered.lift if r.prompted is not None else None
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
            "prompt_lift": prompt.value if prompt is not None else math.nan,
            "prompt_lift_lo": prompt.lo if prompt is not None else math.nan,
            **_direction_row(self.direction),
            "fires_steered": r.steered.fires[r.feature].value,
            "fires_unsteered": r.unsteered.fires[r.feature].value,
            "on_word": c.on_word, "on_word_f1": round(c.on_word_f1, 3),
            "on_word_fires_steered": on[0].value, "on_word_fires_unsteered": on[1].value,
            "recommended": self.recommended, "target_met": self.target_met,
        }

    def summary_row(self) -> dict[str, Any]:
        """The writeup's summary of ``row()``: the pick, its lift and cost, and what a random
        direction, the context direction and the on-word feature did beside it."""
        r, d = self.report, self.direction
        return {"concept": self.choice.concept, "feature": self.choice.feature,
                "kind": self.choice.kind, "scale (× norm)": self.relative_scale,
                "lift": r.lift.value, "lift 95% low": r.lift.lo,
                "events (steered / unsteered)": f"{r.lift.numerator} / {r.lift.denominator}",
                "NLL cost": r.nll_cost.value,
                "random direction: lift 95% high": (r.control.vs_unsteered.lift.hi
                                                    if r.control is not None else math.nan),
                "context direction: lift": d.vs_unsteered.lift.value if d is not None else math.nan,
                "context direction: lift 95% low": (d.vs_unsteered.lift.lo if d is not None
                                                    else math.nan),
                "on-word feature fire-rate gain (95% low)": r.fires_gain[self.candidates.on_word].lo,
                "target met": self.target_met}


def _direction_row(direction: Control | None) -> dict[str, Any]:
    lift = direction.vs_unsteered.lift if direction is not None else None
    if lift is None:
        return {"direction_lift": math.nan, "direction_lift_lo": math.nan,
                "direction_nll_cost": math.nan}
    return {"direction_lift": lift.value, "direction_lift_lo": lift.lo,
            "direction_nll_cost": direction.vs_unsteered.nll_cost.value}


def concept_pool(cands: ConceptCandidates, n_candidates: int) -> dict[int, str]:
    """The features a concept's selection ranks, each with its kind (first kind wins)."""
    pool = {f: "predictive" for f in cands.predictive[:n_candidates]}
    pool.setdefault(cands.on_word, "on_word")
    if cands.pre_word >= 0:
        pool.setdefault(cands.pre_word, "pre_word")
    for f in cands.aligned[:1]:
        pool.setdefault(f, "aligned")
    return pool


def steer_concept(
    model: Any, sae: Any, texts: Sequence[str], concept: Any,
    cfg: SelectConfig | None = None, steer: SteerConfig | None = None, *,
    progress: bool = False, **settings: Any,
) -> ConceptResult:
    """Candidates -> rank (seeds from ``cfg.rank_seed``) -> confirm (``confirm_seed``) ->
    report (``report_seed``): selection and the figures shown never share a sample.

    ``cfg`` says how to select (default ``SelectConfig.for_concept()``; keyword ``settings``
    are shortcuts for its fields); ``steer`` how to sample (prompt, length, temperature).
    The report shows the recommended feature, or, when none is, the nearest miss, honestly
    marked (``ConceptResult.recommended``), beside a random direction, prompting and the
    concept's context direction at the same norm on the same seeds.
    """
    cfg = replace_config(cfg if cfg is not None else SelectConfig.for_concept(), **settings)
    steer = steer or SteerConfig(scale_unit="relative")
    # candidates and every stage push with one norm
    steer = steer.replace(resid_norm=Steerer.for_config(model, sae, steer).resid_norm)
    cands = concept_candidates(model, sae, texts, concept, cfg, resid_norm=steer.resid_norm)
    pool = concept_pool(cands, cfg.n_candidates)
    ask = max(cands.vocab, key=cands.vocab.get) if cands.vocab else None
    prompt = prompt_tokens(model, steer.prompt).tolist() + [ask] if ask is not None else None
    target = Target.for_concept(cands.concept, rescore=[cands.on_word], prompt=prompt)
    refs = {f: cands.direction for f in pool} if cands.direction is not None else None
    sel = select_features(model, sae, list(pool), target, cfg, steer, report_limit=1,
                          report_at_least=1,
                          references=refs, progress=progress, keep_sweeps=True)
    best = next(iter(sel.report_objects))
    report = sel.report_objects[best]
    choice = ConceptChoice(cands.concept.name, best, pool[best], sel.sweeps[best].suggested,
                           sel.sweeps[best], sel.sweeps, sel)
    return ConceptResult(choice, cands, report, float(sel.confirmations[best]["scale"]), cfg)
