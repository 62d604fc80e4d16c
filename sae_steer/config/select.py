"""Config of selecting features by measuring them (``SelectConfig``): one for every preset.

The screen of every feature, the choice of a feature for a concept and one feature's scale
are the same question asked of different pools and targets (``measure.select``). Its stages,
each on seeds no other stage draws (``config.seeds``):

1. **rank**: every candidate at each of ``scales`` on ``n_rank`` samples against one shared
   unsteered baseline (seeds from ``rank_seed``);
2. **confirm**: the ``n_confirm`` best again on fresh seeds (``confirm_seed``), in rounds of
   ``confirm_rounds`` samples per side, each round on seeds of its own: after a round, the
   ``confirm_keep`` likeliest to pass a re-test go on (power where it decides), and the
   last round's figures alone decide what is recommended (``config.rules``: the promise);
3. **report**: the recommended on ``n_report`` further fresh samples per side
   (``report_seed``), with the baselines (a random direction of the same norm, prompting):
   the figures a user is shown, never inflated by the choice.
"""
from __future__ import annotations

import dataclasses

from sae_steer.config.base import (StageConfig, check_number, require, require_integers,
                                   require_positive_integers)
from sae_steer.config.rules import COST_BUDGET
from sae_steer.config.steer import SteerConfig


@dataclasses.dataclass
class SelectConfig(StageConfig):
    """How features are ranked, confirmed and reported (see the module docstring).

    Defaults are the screen's; ``SelectConfig.for_concept()`` gives the concept search's.
    Sampling settings (prompt, length, temperature, positions) come from the
    ``SteerConfig`` passed beside this one; scales are relative to the typical residual norm.
    """

    scales: tuple[float, ...] = (0.35, 0.5)
    """Ranking scales, relative to the typical residual norm at the hook. Measured on the
    small offline world and a sub-word TinyStories model: the features that steer do so at
    0.3-0.5; from about 0.7 the text's NLL cost leaves the budget."""
    n_rank: int = 8
    """Ranking samples per (feature, scale), and of the shared baseline. Eight only ranks:
    its intervals are wide, which is why confirmation exists."""
    rank_seed: int = 0
    """Seed of the ranking samples (baseline and steered rows share it)."""
    n_confirm: int = 24
    """How many of the best-ranked candidates the first confirmation round measures."""
    confirm_rounds: tuple[int, ...] = (128, 2048)
    """Samples per side of each confirmation round, each on fresh seeds. Telling a feature
    that keeps the promise from one just short of it takes about two thousand."""
    confirm_keep: int = 4
    """Features that go on to the next round (at most): the last round's family, whose
    bounds hold together (fewer: each bound is tighter)."""
    confirm_seed: int = 1000
    """Seed of the confirmation samples."""
    n_report: int = 128
    """Samples per side of the report stage: the figures shown, and the re-test size the
    promise (``config.rules``) is stated for."""
    report_seed: int = 3000
    """Seed of the report samples."""
    n_words: int = 5
    """A feature's "own words": the ``n_words`` tokens it fires on most in the search."""
    cost_budget: float = COST_BUDGET
    """Most text-quality cost (mean NLL increase, nats/token) a passing run may have."""
    n_candidates: int = 5
    """Concept search: predictive candidates kept (besides the on-word, pre-word and
    best-aligned features)."""
    candidate_scale: float = 0.5
    """Concept search: relative scale at which candidates' effect on the concept's
    next-token mass is read."""
    n_effect_texts: int = 8
    """Concept search: texts on which that effect is measured."""

    def __post_init__(self) -> None:
        self.scales = tuple(check_number(x, "scale") for x in self.scales)
        require(len(self.scales) > 0, "scales is empty: give relative scales such as [0.35, 0.5]")
        require(all(s > 0 for s in self.scales),
                f"scales must be positive multiples of the residual norm, got {self.scales}")
        self.confirm_rounds = tuple(self.confirm_rounds)
        require(len(self.confirm_rounds) > 0 and all(
            isinstance(n, int) and n > 0 for n in self.confirm_rounds),
            f"confirm_rounds must be positive sample counts, got {self.confirm_rounds}")
        require_positive_integers(self, ("n_rank", "n_confirm", "confirm_keep", "n_report",
                                         "n_words", "n_candidates", "n_effect_texts"))
        require_integers(self, ("rank_seed", "confirm_seed", "report_seed"))
        seeds = (self.rank_seed, self.confirm_seed, self.report_seed)
        require(len(set(seeds)) == 3 and min(seeds) >= 0,
                f"rank_seed, confirm_seed and report_seed must be distinct non-negative "
                f"integers (each stage uses fresh seeds), got {seeds}")
        for name in ("cost_budget", "candidate_scale"):
            check_number(getattr(self, name), name)

    @classmethod
    def for_concept(cls, **changes) -> SelectConfig:
        """The concept search's preset: six scales on 16 samples each (a concept's
        candidates are few), the 3 best confirmed in one round of 64 samples per side,
        reports on 32."""
        return cls(scales=(0.3, 0.4, 0.5, 0.6, 0.7, 0.8), n_rank=16, n_confirm=3,
                   confirm_rounds=(64,), confirm_keep=3, n_report=32).replace(**changes)

    def stage_steer(self, steer: SteerConfig, stage: str) -> SteerConfig:
        """The caller's ``SteerConfig`` as ``stage`` (``rank``, ``confirm`` or ``report``)
        samples it: that stage's seed and size (confirmation: every round's samples, which
        the rounds share out in order), at relative scales."""
        seed, n = {"rank": (self.rank_seed, self.n_rank),
                   "confirm": (self.confirm_seed, sum(self.confirm_rounds)),
                   "report": (self.report_seed, self.n_report)}[stage]
        return steer.replace(seed=seed, n_samples=n, scale_unit="relative")
