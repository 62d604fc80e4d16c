"""Config of the steerability screen (``ScreenConfig``): which features steer, measured."""
from __future__ import annotations

import dataclasses

from sae_steer.config.base import (StageConfig, check_number, require, require_integers,
                                   require_positive_integers)
from sae_steer.config.steer import SteerConfig


@dataclasses.dataclass
class ScreenConfig(StageConfig):
    """How ``screen_features`` measures every candidate feature, then confirms the best.

    Stage 1 steers each candidate at each of ``scales`` on ``n_samples`` samples against
    one shared unsteered baseline (the same seeds); stage 2 measures the ``n_confirm`` best
    again on ``n_final`` fresh samples per side, seeds disjoint from stage 1's, with the
    random-direction control. Sampling settings (prompt, length, temperature, positions)
    come from the ``SteerConfig`` passed beside this one.
    """

    scales: tuple[float, ...] = (0.35, 0.5)
    """Stage-1 scales, relative to the typical residual norm at the hook. Measured on the
    small offline world and a sub-word TinyStories model: the features that steer do so at
    0.3-0.5; from about 0.7 the text's NLL cost leaves the budget."""
    n_samples: int = 8
    """Stage-1 samples per (feature, scale), and of the shared baseline. Eight only ranks:
    its intervals are wide, which is why stage 2 exists."""
    seed: int = 0
    """Seed of stage 1 (baseline and steered rows share it)."""
    n_confirm: int = 24
    """How many of the best stage-1 candidates are measured again."""
    n_final: int = 128
    """Stage-2 samples per side. With the fire-gain rule, a true gain near 0.5 needs about
    this many for its lower bound to clear 0.3."""
    confirm_seed: int = 1000
    """Seed of stage 2: its samples never repeat stage 1's (``config.seeds``: the scheme)."""
    n_words: int = 5
    """A feature's "own words": the ``n_words`` tokens it fires on most in the search."""

    def __post_init__(self) -> None:
        self.scales = tuple(check_number(x, "scale") for x in self.scales)
        require(len(self.scales) > 0, "scales is empty: give relative scales such as [0.35, 0.5]")
        require(all(s > 0 for s in self.scales),
                f"scales must be positive multiples of the residual norm, got {self.scales}")
        require_positive_integers(self, ("n_samples", "n_confirm", "n_final", "n_words"))
        require_integers(self, ("seed", "confirm_seed"))
        require(self.seed != self.confirm_seed,
                "seed and confirm_seed must differ: confirmation uses fresh seeds")

    def stage1_steer(self, steer: SteerConfig) -> SteerConfig:
        """The caller's ``SteerConfig`` as stage 1 samples it: ``n_samples`` from ``seed``."""
        return steer.replace(n_samples=self.n_samples, seed=self.seed)

    def confirm_steer(self, steer: SteerConfig) -> SteerConfig:
        """The caller's ``SteerConfig`` as stage 2 samples it: ``n_final`` from
        ``confirm_seed``, at relative scales (stage 1's unit)."""
        return steer.replace(seed=self.confirm_seed, n_samples=self.n_final, scale_unit="relative")
