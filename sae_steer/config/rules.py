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
# for more than the rule: a recommended feature must be shown, on seeds that played no part
# in choosing it, to sit far enough above the line (its *selection line*, ``retest_line``)
# that a re-test of the report's size passes with probability RETEST_POWER;
# Benjamini-Hochberg over the family tested bounds the expected share of recommended
# features for which that is false. So on fresh seeds at least RETEST_POWER x
# (1 - FALSE_DISCOVERY_RATE) of them are expected to pass the unchanged rule again
# (0.85 x 0.95 = 0.81). The rule itself does not change.

RETEST_POWER = 0.85
"""Chance a recommended feature (a true discovery) passes the rule again on a re-test."""
FALSE_DISCOVERY_RATE = 0.05
"""Expected share of recommended features that are not true discoveries (Benjamini-Hochberg)."""
PROMISE = RETEST_POWER * (1 - FALSE_DISCOVERY_RATE)
"""Expected share of recommended features that pass the rule again on fresh seeds."""
_Z95 = NormalDist().inv_cdf(0.975)  # the rule's two-sided 95 % interval


def retest_line(target: float, se_retest: float) -> float:
    """The true effect (on the measure's scale) a feature needs for a re-test whose standard
    error is ``se_retest`` to reach ``target`` with its lower bound with probability
    ``RETEST_POWER`` (normal approximation of the rule's interval)."""
    return target + (_Z95 + NormalDist().inv_cdf(RETEST_POWER)) * se_retest


def promise_p_value(estimate: float, se: float, line: float) -> float:
    """One-sided p-value of "the true effect is below ``line``" from an estimate and its
    standard error (1.0 when either is not finite: no evidence)."""
    if not (math.isfinite(estimate) and math.isfinite(se) and math.isfinite(line)) or se <= 0:
        return 1.0 if not (estimate > line and se == 0) else 0.0
    return 1.0 - NormalDist().cdf((estimate - line) / se)


def benjamini_hochberg(p_values: Sequence[float], q: float = FALSE_DISCOVERY_RATE) -> list[bool]:
    """Which hypotheses Benjamini-Hochberg rejects at false-discovery rate ``q``."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    k = max((r + 1 for r, i in enumerate(order) if p_values[i] <= q * (r + 1) / m), default=0)
    keep = set(order[:k])
    return [i in keep for i in range(m)]
