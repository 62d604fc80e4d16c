"""The success rules: when did steering work? Stated once; every sweep, choice, screen and
bench reads them from here.

A steering run is judged on seeds shared with an unsteered baseline, by a 95 % *lower*
bound, so a lucky point estimate on few samples never passes:

- **its own firing**: the steered feature's fire rate (share of samples in which the
  unsteered model, re-scoring the text, finds it firing) minus the baseline's, paired by
  seed; it passes when the lower bound reaches ``FIRES_GAIN_TARGET``;
- **a concept** (a user's, or the feature's own top words): the concept's rate steered /
  unsteered; it passes when the lower bound reaches ``LIFT_TARGET``;
- either way only within ``COST_BUDGET``: the mean increase of the text's NLL under the
  unsteered model (nats/token, point estimate), so broken text never counts as success.

Standard library only (this is the config floor).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist

FIRES_GAIN_TARGET = 0.3
"""Lower 95 % bound the fire-rate gain (steered minus unsteered, paired) must reach."""
LIFT_TARGET = 3.0
"""Lower 95 % bound the concept's lift (steered / unsteered rate) must reach."""
COST_BUDGET = 1.5
"""Most extra NLL (nats/token, under the unsteered model) a passing run may cost."""

Z95 = 1.959964
"""The two-sided 95 % normal quantile: every interval of the rule is this many standard
errors wide on each side (``measure.stats``)."""

SUCCESS_TARGETS = {"fires_gain": FIRES_GAIN_TARGET, "concept_lift": LIFT_TARGET}
"""Each success measure's default lower-bound target."""


def within_budget(cost: float, cost_budget: float = COST_BUDGET) -> bool:
    """The cost side of the rule: at most ``cost_budget`` (NaN fails)."""
    return cost <= cost_budget


def passes(low: float, cost: float, target: float, cost_budget: float = COST_BUDGET) -> bool:
    """The rule: the success measure's lower bound reaches ``target`` at a cost within budget.

    NaN on either side fails (a measure that could not be taken is no success).
    """
    return low >= target and within_budget(cost, cost_budget)


def suggest_scale(scales: Sequence[float], low: Sequence[float], cost: Sequence[float],
                  target: float, cost_budget: float = COST_BUDGET) -> float | None:
    """The smallest |scale| that passes (None when none does)."""
    ok = [sc for sc, lo, c in zip(scales, low, cost) if passes(lo, c, target, cost_budget)]
    return min(ok, key=abs) if ok else None


def best_scale(scales: Sequence[float], low: Sequence[float], cost: Sequence[float],
               target: float, cost_budget: float = COST_BUDGET) -> float:
    """"Best scale": the suggested one; without one, the best lower bound within the cost
    budget (the smaller |scale| on ties); else the smallest |scale|, an honest failure."""
    chosen = suggest_scale(scales, low, cost, target, cost_budget)
    if chosen is not None:
        return chosen
    ok = [(lo, -abs(sc), sc) for sc, lo, c in zip(scales, low, cost)
          if within_budget(c, cost_budget)]
    return max(ok)[2] if ok else min(scales, key=abs)


# -- what "recommended" promises ------------------------------------------------------------
# A feature whose true gain sits just above the line passes a re-test only about half the
# time (docs/results.md), so choosing by "passed once" promises nothing. The selection asks
# for more than the rule. From the last confirmation round, on seeds that played no part in
# choosing its features, it gives each one a lower bound on its chance that a re-test of the
# report's size passes the unchanged rule (``retest_pass_low``: the chance at the lower
# bound of its effect), the bounds of the round holding all together at PROMISE_CONFIDENCE
# (Bonferroni over the round's features), so any set chosen from them after seeing the data
# keeps its bound. It then recommends the largest set, likeliest first, whose mean bound is
# at least PROMISE (``promise_kept``). So on fresh seeds at least PROMISE of the recommended
# are expected to pass the rule again. The rule itself does not change.

PROMISE = 0.8
"""Share of recommended features expected to pass the rule again on a fresh re-test."""
PROMISE_CONFIDENCE = 0.95
"""Confidence with which the lower bounds of one round hold together."""


def retest_pass_probability(estimate: float, se_retest: float, target: float) -> float:
    """The chance that a re-test whose standard error is ``se_retest`` has a 95 % lower bound
    of at least ``target`` when the true effect is ``estimate`` (normal approximation of
    the rule's interval; 0 when it cannot be told)."""
    if not (math.isfinite(estimate) and math.isfinite(se_retest)) or se_retest <= 0:
        return 0.0
    return NormalDist().cdf((estimate - target) / se_retest - Z95)


def retest_pass_low(estimate: float, se: float, se_retest: float, target: float,
                    n_features: int) -> float:
    """A lower bound on the re-test pass chance: the chance at the one-sided lower bound of
    the effect, at ``PROMISE_CONFIDENCE`` for all ``n_features`` of a round together."""
    if not math.isfinite(se):
        return 0.0
    z = NormalDist().inv_cdf(1 - (1 - PROMISE_CONFIDENCE) / max(n_features, 1))
    return retest_pass_probability(estimate - z * se, se_retest, target)


def promise_kept(lows: Sequence[float]) -> list[int]:
    """Which features to recommend, given each one's ``retest_pass_low``: the largest set,
    highest bound first, whose mean bound is at least ``PROMISE`` (indices, best first)."""
    keep: list[int] = []
    total = 0.0
    for i in sorted(range(len(lows)), key=lambda i: -lows[i]):
        if (total + lows[i]) / (len(keep) + 1) < PROMISE:
            break
        keep.append(i)
        total += lows[i]
    return keep
