"""What one training step needs from the other processes, as one object.

``loop._step`` and ``loop._log`` are the only training step and metrics row, and they take
a ``Collectives`` (nanoGPT's ``if ddp``, sparsify's ``maybe_all_reduce``, made one object).
This base class is one process: every reduction is the identity and the forward is the
SAE's own, so each figure is the plain one-process expression, the same floats bit for
bit. ``distributed.py`` subclasses it with torch.distributed's reductions and the forward
through DDP (which averages the gradients). Ranks hold equal shards of the global batch, so
the global batch's mean is the mean of the ranks' means.
"""
from __future__ import annotations

from typing import Any

from torch import Tensor

from sae_steer.sae import SAE, TrainStepOutput


class Collectives:
    """One process: nothing to reduce, nothing to gather."""

    world: int = 1

    def forward(self, sae: SAE, x: Tensor, **kwargs: Any) -> TrainStepOutput:
        """``sae.training_forward(x, **kwargs)``; across ranks, through DDP."""
        return sae.training_forward(x, **kwargs)

    def all_sum(self, t: Tensor) -> Tensor:
        """``t`` summed over the ranks (possibly in place): every rank gets the sum."""
        return t

    def gather(self, x: Tensor) -> Tensor:
        """The ranks' ``x`` concatenated along dim 0, in rank order."""
        return x

    def mean(self, t: Tensor) -> Tensor:
        """The mean over the ranks; in one process ``t / 1``, which is ``t`` exactly."""
        return self.all_sum(t) / self.world


ONE_PROCESS = Collectives()
"""The collectives of a single process (``loop.train``'s)."""
