"""Did steering work? Steered vs unsteered samples with the same seeds, measured.

How often the feature fires on the generated tokens (re-scored by the unsteered model),
how strongly, what it costs in text quality (mean NLL of the generated tokens under the
unsteered model, paired by seed) and, given a concept, how often it occurs. Every figure
is an ``Estimate`` with its 95 % interval (``stats.py``).
"""
from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from transformer_lens import HookedTransformer

from sae_steer.config import SteerConfig, steer_config
from sae_steer.fsutil import write_json_atomic
from sae_steer.measure.concepts import as_concept, occurrences
from sae_steer.measure.rescore import measure
from sae_steer.measure.stats import Estimate, normal_mean, pooled_rate, wilson
from sae_steer.steer import Generation, generate_steered, generate_unsteered


@dataclasses.dataclass
class SideStats:
    """Measures over the generated tokens of one set of samples (steered or unsteered)."""

    fires: dict[int, Estimate]
    """Per re-scored feature: fraction of samples in which it fires on a generated token."""
    max_act: dict[int, Estimate]
    mean_act: dict[int, Estimate]
    nll: Estimate
    """Mean NLL (nats/token) of the generated tokens under the unsteered model."""
    concept_rate: Estimate | None
    """The concept's occurrences per 100 generated tokens (when a concept was given)."""
    n_tokens: int
    nll_per_sample: list[float]
    concept_counts: list[int]


def _side(model, sae, gen: Generation, features: Sequence[int], concept: Any,
          threshold: float) -> SideStats:
    m = measure(model, sae, gen.tokens, features)
    p = gen.prompt_len
    new_acts = [a[p:] for a in m.acts]
    nll = [float(x[p - 1 :].mean()) if len(x) >= p else math.nan for x in m.nll]
    nll = [v if len(a) else math.nan for v, a in zip(nll, new_acts)]
    fires, max_act, mean_act = {}, {}, {}
    for k, f in enumerate(features):
        col = [a[:, k] for a in new_acts]
        fires[f] = wilson(sum(bool((c > threshold).any()) for c in col), len(col))
        max_act[f] = normal_mean([float(c.max()) if len(c) else 0.0 for c in col])
        mean_act[f] = normal_mean([float(c.mean()) if len(c) else math.nan for c in col])
    counts, rate = [], None
    if concept is not None:
        counts = [occurrences(concept.mask(model, row.tolist()), p) for row in gen.tokens]
        rate = pooled_rate(counts, [len(a) for a in new_acts])
    return SideStats(fires, max_act, mean_act, normal_mean(nll), rate,
                     sum(len(a) for a in new_acts), nll, counts)


@dataclasses.dataclass
class SteeringReport:
    feature: int
    scale: float
    """Absolute scale applied (clamp mode: the clamp value)."""
    mode: str
    concept: str | None
    """The concept's name (when one was given)."""
    steered: SideStats
    unsteered: SideStats
    nll_cost: Estimate
    """Steered minus unsteered mean NLL, paired by seed."""
    concept_lift: float | None
    """Steered / unsteered concept rate; a zero unsteered count is floored at 0.5 occurrences."""
    generations: tuple[Generation, Generation]
    config: SteerConfig = dataclasses.field(default_factory=SteerConfig)
    """The settings both sides were sampled with."""

    def row(self, feature: int | None = None) -> dict[str, Any]:
        """One flat summary row for tables (acts for ``feature``, default the steered one)."""
        f = self.feature if feature is None else feature
        s, u = self.steered, self.unsteered
        out = {"feature": self.feature, "scale": round(self.scale, 3), "mode": self.mode,
               "fires_steered": s.fires[f].value, "fires_unsteered": u.fires[f].value,
               "max_act_steered": s.max_act[f].value, "max_act_unsteered": u.max_act[f].value,
               "nll_steered": s.nll.value, "nll_unsteered": u.nll.value,
               "nll_cost": self.nll_cost.value}
        if self.concept is not None:
            out.update(concept=self.concept, rate_steered=s.concept_rate.value,
                       rate_unsteered=u.concept_rate.value, lift=self.concept_lift)
        return out


    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``report.json`` (the summary row) beside ``steer_config.json``."""
        directory = Path(directory)
        self.config.save_json(directory / "steer_config.json")
        write_json_atomic(directory / "report.json", self.row())
        return directory


def _lift(s: SideStats, u: SideStats) -> float:
    floor = 100 * 0.5 / max(u.n_tokens, 1)
    return s.concept_rate.value / max(u.concept_rate.value, floor)


def steering_report(
    model: HookedTransformer, sae: Any, feature: int, scale: float,
    cfg: SteerConfig | None = None, *, concept: Any = None,
    rescore_features: Sequence[int] | None = None, unsteered: Generation | None = None,
    **settings: Any,
) -> SteeringReport:
    """Steered vs unsteered samples with the same seeds, measured on the generated tokens.

    ``cfg`` holds the sampling settings (default ``SteerConfig(n_samples=32)``; keyword
    ``settings`` are shortcuts for its fields, e.g. ``n_samples=64``). ``concept`` (a ``Concept``) adds its rate per 100
    tokens and the lift. ``rescore_features`` (default: the steered feature) are re-scored
    on both sides, e.g. add the concept's on-word feature. Pass ``unsteered`` to reuse a
    baseline drawn with the same prompt, length, seed and n_samples.
    """
    cfg = steer_config(cfg or SteerConfig(n_samples=32), **settings)
    concept = as_concept(concept) if concept is not None else None
    gen = generate_steered(model, sae, feature, scale, cfg)
    base = unsteered if unsteered is not None else generate_unsteered(model, cfg)
    if base.seeds != gen.seeds:
        raise ValueError("the unsteered baseline was sampled with other seeds/n_samples")
    features = list(dict.fromkeys([gen.feature, *(rescore_features or [])]))
    s = _side(model, sae, gen, features, concept, cfg.fire_threshold)
    u = _side(model, sae, base, features, concept, cfg.fire_threshold)
    cost = normal_mean([a - b for a, b in zip(s.nll_per_sample, u.nll_per_sample)])
    lift = _lift(s, u) if concept is not None else None
    return SteeringReport(gen.feature, gen.scale, cfg.mode,
                          concept.name if concept is not None else None, s, u, cost, lift,
                          (gen, base), cfg)
