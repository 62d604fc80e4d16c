"""The seeding scheme: which random numbers every steering run and measurement draws.

One scheme, stated here; everything that samples or draws a control imports it.

- **A run** (``SteerConfig.seed = s``, ``n_samples = n``) draws sample j from its own CPU
  generator seeded ``sample_seed(s, j)``, so ``n = 4`` extends ``n = 2`` and batching or the
  device never reshuffles the numbers.
- **Its baseline** (the unsteered run) uses the same ``s``: sample j steered and sample j
  unsteered share one random stream, so their difference is the steering's, not noise.
- **Its control** (a random direction at the steering vector's norm) samples with the
  same seeds too; the direction itself comes from ``control_seed(s, feature)``, fixed per
  (seed, feature), so every report of a feature on those seeds meets the same direction.
- **A selection** (``SelectConfig``: the screen, a concept's feature) ranks on seeds from
  ``rank_seed``, confirms on ``confirm_seed``'s and reports on ``report_seed``'s: three
  stages that never share a sample, so picking the luckiest feature or scale does not
  inflate the figure reported (the config refuses equal seeds).
- **The typical residual norm** (what relative scales multiply) is measured on the
  model's own unsteered samples from seed ``NORM_SEED``.

``SelectConfig.stage_steer`` derives the ``SteerConfig`` of each stage from the caller's, in
one place.
"""
from __future__ import annotations

NORM_SEED = 12345
"""Seed of the unsteered samples the typical residual norm is measured on."""


def sample_seed(seed: int, j: int) -> int:
    """Sample j of a run with ``seed`` draws from this generator seed (so n=4 extends n=2)."""
    return (int(seed) * 1_000_003 + j) % (2**63 - 1)


def sample_seeds(seed: int, n: int) -> list[int]:
    """The generator seeds of a run's ``n`` samples: ``sample_seed(seed, j)`` for each j."""
    return [sample_seed(seed, j) for j in range(n)]


def control_seed(seed: int, feature: int) -> int:
    """The random control's direction seed for ``feature`` in a run with ``seed``."""
    return int(seed) * 7919 + int(feature)
