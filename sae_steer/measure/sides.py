"""One side of a steering comparison, measured: what the unsteered model reads in a set of
samples (fire rates, activations, NLL, repetition, a concept's rate), and one side against
a baseline drawn with the same seeds (paired differences and the lift, with intervals).
``report.py`` builds steering reports from these.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any


from sae_steer.measure.concepts import count_in
from sae_steer.measure.rescore import Measured, measure
from sae_steer.measure.stats import (Estimate, Ratio, normal_mean, paired_difference, paired_rate_ratio,
                                     pooled_rate, repeated_ngram_fraction, wilson)
from sae_steer.steer import Generation

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer


@dataclasses.dataclass
class SideStats:
    """Measures over the generated tokens of one set of samples (steered or unsteered)."""

    fires: dict[int, Estimate]
    """Per re-scored feature: fraction of samples in which it fires on a generated token."""
    fired: dict[int, list[bool]]
    """Per re-scored feature, per sample: did it fire (what ``fires`` counts)."""
    max_act: dict[int, Estimate]
    mean_act: dict[int, Estimate]
    nll: Estimate
    """Mean NLL (nats/token) of the generated tokens under the unsteered model."""
    repetition: Estimate
    """Mean share of repeated 3-grams in the generated tokens (0: none)."""
    concept_rate: Estimate | None
    """The concept's occurrences per 100 generated tokens (when a concept was given)."""
    concept_samples: Estimate | None
    """Fraction of samples with at least one occurrence (when a concept was given)."""
    n_tokens: int
    n_samples: int
    nll_per_sample: list[float]
    rep_per_sample: list[float]
    concept_counts: list[int]
    tokens_per_sample: list[int] = dataclasses.field(default_factory=list)
    """Generated tokens of each sample (the rates' exposures)."""


def side_stats(model: HookedTransformer, sae: Any, gen: Generation, features: Sequence[int],
               concept: Any = None, threshold: float = 0.0, *,
               measured: Measured | None = None) -> SideStats:
    """Measure one set of samples on its generated tokens (see ``SideStats``).

    ``measured``: the rows' re-scoring (``features``' activations and token NLLs) when the
    caller already has it from a larger batch; else it is run here.
    """
    m = measured if measured is not None else measure(model, sae, gen.tokens, features)
    p = gen.prompt_len
    # the concept's occurrences first, then every statistic of the side
    counts = ([count_in(model, concept, row.tolist(), p) for row in gen.tokens]
              if concept is not None else [])
    new_acts = [a[p:] for a in m.acts]
    nll = [float(x[p - 1 :].mean()) if len(x) >= p and len(a) else math.nan
           for x, a in zip(m.nll, new_acts)]
    rep = [repeated_ngram_fraction(row[p:].tolist()) for row in gen.tokens]
    fires, fired, max_act, mean_act = {}, {}, {}, {}
    for k, f in enumerate(features):
        col = [a[:, k] for a in new_acts]
        fired[f] = [bool((c > threshold).any()) for c in col]
        fires[f] = wilson(sum(fired[f]), len(col))
        max_act[f] = normal_mean([float(c.max()) if len(c) else 0.0 for c in col])
        mean_act[f] = normal_mean([float(c.mean()) if len(c) else math.nan for c in col])
    rate, share = None, None
    if concept is not None:
        rate = pooled_rate(counts, [len(a) for a in new_acts])
        share = wilson(sum(c > 0 for c in counts), len(counts))
    return SideStats(fires, fired, max_act, mean_act, normal_mean(nll), normal_mean(rep), rate,
                     share, sum(len(a) for a in new_acts), len(gen.tokens), nll, rep, counts,
                     [len(a) for a in new_acts])


@dataclasses.dataclass
class Comparison:
    """One side against the unsteered baseline, sample by sample (same seeds)."""

    fires_gain: dict[int, Estimate]
    """Per re-scored feature: fire rate minus the baseline's (paired difference)."""
    nll_cost: Estimate
    """Mean NLL minus the baseline's, paired by seed (nats/token)."""
    rep_cost: Estimate
    """Share of repeated 3-grams minus the baseline's, paired by seed."""
    lift: Ratio | None
    """Concept rate / the baseline's (when a concept was given); interval: the wider of the
    exact Poisson ratio and a paired bootstrap over samples (``stats.paired_rate_ratio``)."""
    paired_fired: dict[int, list[int]] = dataclasses.field(default_factory=dict)
    """Per re-scored feature, per seed: fired here minus fired in the baseline (-1, 0, 1)."""
    wrong_way: dict[int, Estimate] = dataclasses.field(default_factory=dict)
    """Per re-scored feature: the share of seeds on which the baseline fired and this side
    did not (steering that turns the feature *off*), with its Wilson interval."""


def compare(side: SideStats, base: SideStats) -> Comparison:
    gains = {f: paired_difference(side.fired[f], base.fired[f]) for f in side.fired}
    paired = {f: [int(a) - int(b) for a, b in zip(side.fired[f], base.fired[f])]
              for f in side.fired}
    wrong = {f: wilson(sum(d < 0 for d in paired[f]), len(paired[f])) for f in side.fired}
    cost = normal_mean([a - b for a, b in zip(side.nll_per_sample, base.nll_per_sample)])
    rep = normal_mean([a - b for a, b in zip(side.rep_per_sample, base.rep_per_sample)])
    lift = None
    if side.concept_rate is not None:
        lift = paired_rate_ratio(side.concept_counts, side.tokens_per_sample,
                                 base.concept_counts, base.tokens_per_sample)
    return Comparison(gains, cost, rep, lift, paired, wrong)
