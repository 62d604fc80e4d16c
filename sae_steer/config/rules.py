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

from collections.abc import Sequence

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
