"""What success means when a feature is steered: the ``Target`` of a selection.

A target names its definitions of success (``DEFINITIONS``): the feature's **own firing**
(its fire rate rises, paired by seed), its **own words** (its top words in a search appear
more) or a user's **concept**. Each definition carries its measure and its threshold from
``config.rules``; the target gives a run's *strength* (how far the best definition's lower
bound reaches toward its threshold: 1 passes, cost aside), its *pass test* (the rule), and
what confirmation needs to promise a re-test (the measure's estimate and standard error on
a scale where a normal approximation holds: the lift on a log scale). Every preset of the
selection engine (``select.py``) asks its target; nothing else re-applies the rule.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

from sae_steer.config import COST_BUDGET, FIRES_GAIN_TARGET, LIFT_TARGET, Z95, best_scale, passes
from sae_steer.measure.sides import Comparison

DEFINITIONS = ("own firing", "own words", "concept")
"""How a steered feature can succeed (``Target.definitions`` is a subset)."""
THRESHOLDS = {"own firing": FIRES_GAIN_TARGET, "own words": LIFT_TARGET, "concept": LIFT_TARGET}
"""Each definition's lower-bound threshold (``config.rules``)."""


@dataclasses.dataclass
class Target:
    """What a selection asks of a steered feature (build one with the class methods)."""

    definitions: tuple[str, ...]
    """Subset of ``DEFINITIONS``; a run succeeds by any of them."""
    concept: Any = None
    """``concept``: the user's concept (a ``Concept``)."""
    words: Mapping[int, Any] = dataclasses.field(default_factory=dict)
    """``own words``: per feature, the concept of its top words (None: it has none)."""
    rescore: tuple[int, ...] = ()
    """Features re-scored beside the steered one (the concept's on-word feature)."""
    prompts: Mapping[int, Any] = dataclasses.field(default_factory=dict)
    """The prompting baseline: per feature (key -1: every feature), the prompt that asks
    for what steering should bring (a word written into the prompt, no steering)."""

    @classmethod
    def own_firing(cls) -> Target:
        """The feature's own fire rate must rise (re-scored by the unsteered model)."""
        return cls(("own firing",))

    @classmethod
    def steerability(cls, words: Mapping[int, Any], prompts: Mapping[int, Any] | None = None
                     ) -> Target:
        """The screen's: the feature's own firing or its own words (``words[f]``)."""
        return cls(("own firing", "own words"), words=dict(words), prompts=dict(prompts or {}))

    @classmethod
    def for_concept(cls, concept: Any, rescore: Sequence[int] = (), prompt: Any = None) -> Target:
        """A user's concept must appear more (its lift)."""
        return cls(("concept",), concept=concept, rescore=tuple(int(f) for f in rescore),
                   prompts={-1: prompt} if prompt is not None else {})

    def __post_init__(self) -> None:
        bad = [d for d in self.definitions if d not in DEFINITIONS]
        if bad or not self.definitions:
            raise ValueError(f"unknown success definition(s) {bad}; choose from {DEFINITIONS}")
        if "concept" in self.definitions and ("own words" in self.definitions
                                              or self.concept is None):
            raise ValueError("a concept target needs concept= and cannot also count own words")

    @property
    def success_name(self) -> str:
        """The first definition's measure as sweeps name it (``fires_gain``, ``concept_lift``)."""
        return "fires_gain" if self.definitions[0] == "own firing" else "concept_lift"

    def concept_of(self, feature: int) -> Any:
        """What to count on a run of ``feature`` (None: nothing)."""
        return self.concept if "concept" in self.definitions else self.words.get(feature)

    def features_of(self, feature: int) -> tuple[int, ...]:
        """Features re-scored on a run of ``feature``: itself first."""
        return tuple(dict.fromkeys((int(feature), *self.rescore)))

    def prompt_of(self, feature: int) -> Any:
        """The prompting baseline's prompt for ``feature`` (None: no such baseline)."""
        return self.prompts.get(feature, self.prompts.get(-1))

    def measures(self, cmp: Comparison, feature: int) -> dict[str, Any]:
        """Each definition's measure in ``cmp`` (an ``Estimate`` or a ``Ratio``); a definition
        that could not be measured (no words) is left out."""
        out: dict[str, Any] = {}
        for d in self.definitions:
            m = cmp.fires_gain[feature] if d == "own firing" else cmp.lift
            if m is not None and m.lo == m.lo:  # NaN: no samples
                out[d] = m
        return out

    def strength(self, cmp: Comparison, feature: int) -> float:
        """The best definition's lower bound over its threshold (>= 1: it passes, cost
        aside): ranks by what the rule asks, not by point estimates."""
        return max((m.lo / THRESHOLDS[d] for d, m in self.measures(cmp, feature).items()),
                   default=-math.inf)

    def passed(self, cmp: Comparison, feature: int, cost_budget: float = COST_BUDGET) -> list[str]:
        """The definitions by which this run passes the rule (``config.rules.passes``)."""
        return [d for d, m in self.measures(cmp, feature).items()
                if passes(m.lo, cmp.nll_cost.value, THRESHOLDS[d], cost_budget)]

    def best_scale(self, scales: Sequence[float], cmps: Sequence[Comparison], feature: int,
                   cost_budget: float = COST_BUDGET) -> float:
        """``config.rules.best_scale`` on strengths (a strength of 1 is the threshold)."""
        return best_scale(list(scales), [self.strength(c, feature) for c in cmps],
                          [c.nll_cost.value for c in cmps], 1.0, cost_budget)

    def best_definition(self, cmp: Comparison, feature: int) -> str:
        """The definition whose lower bound reaches furthest toward its threshold (the one
        a later, independent measurement tests)."""
        measures = self.measures(cmp, feature)
        return max(measures, key=lambda d: measures[d].lo / THRESHOLDS[d],
                   default=self.definitions[0])

    def evidence(self, cmp: Comparison, feature: int, definition: str, n: int,
                 n_retest: int) -> dict[str, float]:
        """What the promise needs from ``definition`` measured on ``n`` samples: the
        estimate and its standard error on the test scale (the lift's logarithm), the
        standard error a re-test on ``n_retest`` samples would have, and the threshold on
        that scale; NaN where the definition could not be measured."""
        m = self.measures(cmp, feature).get(definition)
        est, se = _test_scale(definition, m, cmp, feature) if m is not None else (math.nan,) * 2
        target = THRESHOLDS[definition]
        return {"estimate": est, "se": se, "se_retest": se * math.sqrt(n / n_retest),
                "target": target if definition == "own firing" else math.log(target)}


def _test_scale(definition: str, m: Any, cmp: Comparison, feature: int) -> tuple[float, float]:
    """(estimate, standard error): the paired fire-rate difference's own spread, or the
    log lift with the standard error its 95 % interval implies."""
    if definition == "own firing":
        d = cmp.paired_fired.get(feature)
        if not d:
            return math.nan, math.nan
        mean = sum(d) / len(d)
        var = sum((x - mean) ** 2 for x in d) / max(len(d) - 1, 1)
        # never below a single discordant pair's spread: zero observed spread is no proof
        return mean, max(math.sqrt(var / len(d)), 1 / len(d))
    if not (m.value > 0 and m.lo > 0 and math.isfinite(m.value)):
        return math.nan, math.nan
    return math.log(m.value), (math.log(m.value) - math.log(m.lo)) / Z95
