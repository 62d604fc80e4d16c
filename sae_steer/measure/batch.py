"""One measurement batch: generate once, score once, read every side from it.

A batch is a set of *arms* on one set of seeds: each arm adds its steering vector at the
hook (or nothing, with its own prompt: the prompting baseline) to one sample per seed.
Every arm's rows are generated together (``steer.batch``), the unsteered baseline once for
the whole batch (not once per arm), and every row is re-scored by the unsteered model in
batched passes (``lm.score_rows``), reading only the features each arm asks for. Each arm
is then measured against the shared baseline, paired by seed (``sides``). Reports,
controls, sweeps and every stage of a selection go through here; a clamped arm, which is not
a vector, is the one generated on its own.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float
from torch import Tensor

from sae_steer.config import SteerConfig, sample_seeds
from sae_steer.lm import check_sae_fits, score_rows
from sae_steer.measure.rescore import Measured, require_clean
from sae_steer.measure.sides import Comparison, SideStats, compare, side_stats
from sae_steer.steer import Generation, generate_steered
from sae_steer.steer.batch import generate_rows

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer


@dataclasses.dataclass
class Arm:
    """One side of a batch: ``vector`` added at the hook on every seed of the batch."""

    vector: Float[Tensor, " d_model"] | None
    """Added at every steered position (absolute; None: no steering)."""
    features: tuple[int, ...]
    """Features re-scored on this arm and on the baseline (the steered one first)."""
    concept: Any = None
    """A concept to count on this arm and on the baseline (None: none)."""
    prompt: Any = None
    """The arm's own prompt (text or token ids; None: the batch's). Only unsteered arms
    take one: the prompting baseline."""
    clamp: tuple[int, float] | None = None
    """``(feature, value)``: clamp that SAE feature instead of adding a vector. Not a fixed
    vector, so such an arm is generated on its own (the exception to one shared batch)."""


@dataclasses.dataclass
class ArmResult:
    """One arm measured against the batch's unsteered baseline (same seeds)."""

    side: SideStats
    base: SideStats
    """The baseline, read for this arm's features and concept."""
    vs_base: Comparison
    generation: Generation


@dataclasses.dataclass
class Batch:
    """What a batch measured: one result per arm, and the baseline's samples."""

    arms: list[ArmResult]
    baseline: Generation


def _gather(sae: Any, index: Tensor):
    """``read`` for ``score_rows``: row j keeps the SAE activations of ``index[j]``."""
    def read(act: Tensor, rows: range) -> Tensor:
        feats = sae.encode(act.to(sae.W_dec.device))  # [b, pos, d_sae]
        idx = index[rows.start : rows.stop].to(feats.device)[:, None, :]
        return feats.gather(-1, idx.expand(-1, feats.shape[1], -1))
    return read


def _score(model: HookedTransformer, sae: Any, hook: str, rows: Sequence[Tensor],
           features: Sequence[Sequence[int]]) -> Measured:
    """Re-score ``rows``, row j reading ``features[j]`` (padded to the longest list)."""
    width = max((len(f) for f in features), default=1)
    index = torch.tensor([list(f) + [f[0]] * (width - len(f)) for f in features],
                         dtype=torch.long)
    scored = score_rows(model, rows, hook, _gather(sae, index))
    return Measured(scored.reads, scored.nll)


def _columns(m: Measured, lo: int, hi: int, cols: Sequence[int]) -> Measured:
    return Measured([a[:, list(cols)] for a in m.acts[lo:hi]], m.nll[lo:hi])


def measure_batch(
    model: HookedTransformer, sae: Any, arms: Sequence[Arm], cfg: SteerConfig, *,
    seeds: Sequence[int] | None = None, baseline: Generation | None = None,
    hook_name: str | None = None, progress: bool = False,
) -> Batch:
    """Generate every arm and the baseline on ``seeds`` (default: ``cfg.seed``'s
    ``cfg.n_samples``), re-score every row once, and measure each arm against the baseline.

    ``cfg``: prompt, length, temperature, positions and the fire threshold (its ``mode`` and
    ``scale_unit`` are not read: arms carry absolute vectors). ``baseline``: unsteered
    samples already drawn on these seeds with ``cfg`` (reused, so a long screen draws its
    baseline once); it is re-scored here for the features this batch asks about.
    """
    require_clean(model)
    hook = check_sae_fits(model, sae.cfg, hook_name)
    seeds = list(seeds) if seeds is not None else sample_seeds(cfg.seed, cfg.n_samples)
    n = len(seeds)
    if baseline is None:
        baseline = generate_rows(model, hook, None, seeds, cfg)
    elif baseline.seeds != seeds:
        raise ValueError("the unsteered baseline was sampled with other seeds/n_samples")
    pushed = [k for k, a in enumerate(arms) if a.prompt is None and a.clamp is None]
    gens: dict[int, Generation] = {}
    if pushed:
        zero = torch.zeros(sae.W_dec.shape[1])
        vectors = torch.stack([zero if arms[k].vector is None else arms[k].vector.detach().float().cpu()
                               for k in pushed])
        rows = generate_rows(model, hook, vectors.repeat_interleave(n, 0), seeds * len(pushed), cfg,
                             progress=progress)
        gens = {k: rows.part(i * n, (i + 1) * n) for i, k in enumerate(pushed)}
    for k, a in enumerate(arms):
        if a.prompt is not None:
            if a.vector is not None:
                raise ValueError("an arm with its own prompt is the prompting baseline: no vector")
            gens[k] = generate_rows(model, hook, None, seeds, cfg.replace(prompt=a.prompt))
        elif a.clamp is not None:
            if seeds != sample_seeds(cfg.seed, cfg.n_samples):
                raise ValueError("a clamped arm draws cfg's own seeds: pass seeds=None")
            gens[k] = generate_steered(model, sae, a.clamp[0], a.clamp[1],
                                       cfg.replace(mode="clamp", scale_unit="absolute"),
                                       hook_name=hook)
    # the baseline reads every feature any arm asks about; each arm row only its own
    union = list(dict.fromkeys(f for a in arms for f in a.features))
    base_m = _score(model, sae, hook, baseline.tokens, [union] * n) if union else None
    arm_rows = [t for k in range(len(arms)) for t in gens[k].tokens]
    arm_feats = [list(a.features) for a in arms for _ in range(n)]
    arm_m = _score(model, sae, hook, arm_rows, arm_feats) if arm_rows else None
    out = []
    for k, a in enumerate(arms):
        cols = [union.index(f) for f in a.features]
        base = side_stats(model, sae, baseline, a.features, a.concept, cfg.fire_threshold,
                          measured=_columns(base_m, 0, n, cols))
        side = side_stats(model, sae, gens[k], a.features, a.concept, cfg.fire_threshold,
                          measured=_columns(arm_m, k * n, (k + 1) * n, range(len(a.features))))
        out.append(ArmResult(side, base, compare(side, base), gens[k]))
    return Batch(out, baseline)
