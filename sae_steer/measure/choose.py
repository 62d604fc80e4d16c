"""Which feature steers toward a concept, at which scale? A measured choice.

``choose_feature`` sweeps the scale for the top predictive candidates and the on-word and
pre-word features (``candidates.py``) and keeps the one that reaches the lift target at
the smallest scale within the cost budget. ``steer_concept`` runs the whole procedure and
measures the choice on fresh seeds: selection and measurement never share a sample.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from transformer_lens import HookedTransformer

from sae_steer.config import ChooseConfig, SteerConfig, choose_config, steer_config
from sae_steer.lm import check_sae_fits
from sae_steer.measure.candidates import ConceptCandidates, concept_candidates
from sae_steer.measure.report import SteeringReport, steering_report
from sae_steer.measure.sweep import Sweep, scale_sweep
from sae_steer.steer import typical_resid_norm


@dataclasses.dataclass
class ConceptChoice:
    concept: str
    """The concept's name."""
    feature: int
    kind: str
    """``predictive``, ``on_word`` or ``pre_word``."""
    scale: float | None
    """Suggested scale in the sweep's unit (None: no candidate met the target)."""
    sweep: Sweep
    sweeps: dict[int, Sweep]


def _rank(sweep: Sweep) -> tuple:
    """Prefer a met target at the smallest scale; else the best lift within budget."""
    if sweep.suggested is not None:
        i = sweep.scales.index(sweep.suggested)
        return (0, abs(sweep.suggested), -sweep.success[i])
    ok = [s for s, c in zip(sweep.success, sweep.cost) if c <= sweep.cost_budget]
    return (1, -(max(ok) if ok else 0.0), 0.0)


def choose_feature(
    model: HookedTransformer, sae: Any, candidates: ConceptCandidates, scales: Sequence[float],
    cfg: SteerConfig | None = None, *, n_candidates: int = 3, target: float | None = None,
    cost_budget: float = 1.5, **settings: Any,
) -> ConceptChoice:
    """Sweep the top ``n_candidates`` predictive features and the on-word and pre-word
    features (samples drawn with ``cfg``, relative scales by default); keep the best."""
    cfg = steer_config(cfg or SteerConfig(n_samples=16, scale_unit="relative"), **settings)
    extra = [candidates.on_word] + ([candidates.pre_word] if candidates.pre_word >= 0 else [])
    pool = list(dict.fromkeys(candidates.predictive[:n_candidates] + extra))
    sweeps = {f: scale_sweep(model, sae, f, scales, cfg, concept=candidates.concept,
                             target=target, cost_budget=cost_budget) for f in pool}
    best = min(pool, key=lambda f: _rank(sweeps[f]))
    kind = ("predictive" if best in candidates.predictive[:n_candidates]
            else "on_word" if best == candidates.on_word else "pre_word")
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

    def row(self) -> dict[str, Any]:
        r, c = self.report, self.candidates
        on = r.steered.fires.get(c.on_word), r.unsteered.fires.get(c.on_word)
        return {
            "concept": self.choice.concept, "feature": self.choice.feature,
            "kind": self.choice.kind, "scale_rel": self.relative_scale,
            "scale_abs": round(r.scale, 3),
            "rate_steered": r.steered.concept_rate.value,
            "rate_unsteered": r.unsteered.concept_rate.value, "lift": r.concept_lift,
            "nll_cost": r.nll_cost.value,
            "fires_steered": r.steered.fires[r.feature].value,
            "fires_unsteered": r.unsteered.fires[r.feature].value,
            "on_word": c.on_word, "on_word_f1": round(c.on_word_f1, 3),
            "on_word_fires_steered": on[0].value, "on_word_fires_unsteered": on[1].value,
            "target_met": (r.concept_lift >= self.config.target
                           and r.nll_cost.value <= self.config.cost_budget),
        }


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
    that, the report uses the scale with the best lift within the cost budget.
    """
    cfg = choose_config(cfg, **settings)
    steer = steer or SteerConfig(scale_unit="relative")
    if steer.resid_norm is None:
        steer = steer.replace(resid_norm=typical_resid_norm(model, check_sae_fits(model, sae.cfg)))
    cands = concept_candidates(model, sae, texts, concept, cfg, resid_norm=steer.resid_norm)
    choice = choose_feature(model, sae, cands, cfg.scales, steer, n_candidates=cfg.n_candidates,
                            target=cfg.target * cfg.select_margin, cost_budget=cfg.cost_budget,
                            n_samples=cfg.n_select, seed=cfg.select_seed)
    rel = choice.scale
    if rel is None:  # best lift within budget (else the smallest scale): an honest failure
        sw = choice.sweep
        ok = [(su, sc) for sc, su, c in zip(sw.scales, sw.success, sw.cost)
              if c <= cfg.cost_budget]
        rel = max(ok)[1] if ok else min(sw.scales, key=abs)
    report = steering_report(model, sae, choice.feature, rel, steer, concept=cands.concept,
                             rescore_features=[cands.on_word], n_samples=cfg.n_final,
                             seed=cfg.final_seed)
    return ConceptResult(choice, cands, report, rel, cfg)
