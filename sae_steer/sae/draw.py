"""A seeded draw of features: the "random features" a writeup compares against.

Its own CPU generator, so the draw is the same on every device and leaves torch's global
random state alone (a notebook cell that draws does not change what the next cell samples).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor


def random_features(sae: Any, n: int, seed: int = 0, *,
                    among: Sequence[int] | Tensor | None = None) -> list[int]:
    """``n`` distinct feature indices of ``sae`` drawn with ``seed`` (same seed, same draw).

    ``among``: draw only from these features, as indices or a ``[d_sae]`` bool mask (e.g.
    the alive ones: ``search.density > 0``); None: from all of them.
    """
    d_sae = int(sae.cfg.d_sae)
    if among is None:
        pool = torch.arange(d_sae)
    else:
        pool = torch.as_tensor(among).detach().cpu().flatten()
        if pool.dtype == torch.bool:
            if pool.numel() != d_sae:
                raise ValueError(f"the mask has {pool.numel()} entries but this SAE has {d_sae} "
                                 "features")
            pool = pool.nonzero().flatten()
        pool = torch.unique(pool.long())  # sorted: the draw does not depend on the order given
        if len(pool) and (pool.min() < 0 or pool.max() >= d_sae):
            raise ValueError(f"features to draw from must be in 0..{d_sae - 1}")
    if isinstance(n, bool) or not isinstance(n, int) or not 0 < n <= len(pool):
        raise ValueError(f"n must be an integer from 1 to {len(pool)} (the features to draw "
                         f"from), got {n!r}")
    order = torch.randperm(len(pool), generator=torch.Generator().manual_seed(int(seed)))
    return pool[order[:n]].tolist()
