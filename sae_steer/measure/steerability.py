"""Steerability for every feature: does its decoder row *write* what it seems to mean?

After Arad, Mueller & Belinkov, "SAEs Are Good for Steering - If You Select the Right
Features" (EMNLP 2025), simplified to what one batched pass can measure:

- **output score**: add ``scale`` x the typical residual norm (a ``Steerer``'s: the norm
  every relative scale uses) along the feature's unit decoder row at the hook, on a few
  neutral prompts, in one forward pass that starts after the hook (``start_at_layer``);
  read the next-token distribution at each prompt's last position. The score is the mean
  over prompts of the largest probability *gain* among the feature's own top-k logit-lens
  tokens (``W_dec[i]`` through the final norm and ``W_U``).
  A feature that only *reads* a pattern (fires on "fl" + "ood") scores low; one whose
  direction makes its tokens come out scores high.
- **input score**: the share of the tokens the feature fires on most (from a
  ``FeatureSearch``) that are among its top-k logit-lens tokens: how far what it reads
  coincides with what it writes. NaN for a feature that never fired in the search.

``top_rank`` is the best rank (0 = most likely) any of those tokens reaches after the push.
``self_score`` (with a search) is the output score read on the tokens the feature *fires
on* instead of its logit-lens tokens: how much its push makes the model write what it
reads, which is what "the feature fires more in steered text" needs.
High output score, not high max activation, is how features are offered for steering.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from sae_steer.inspect import FeatureSearch, unembed_direction
from sae_steer.lm import FromHook, check_sae_fits, display_tokens, resume_layer, tokenize
from sae_steer.sae import decoder_units
from sae_steer.steer import Steerer

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer

NEUTRAL_PROMPTS = ("Once upon a time", "One day,", "The", "She said", "Then", "They went to",
                   "It was a", "He saw a")
"""Short, content-free prompts on which a feature's push is read (text models)."""


@dataclasses.dataclass
class FeatureScores:
    """Per-feature steerability, ``[d_sae]`` each, and how it was measured."""

    output_score: Tensor
    """Mean max probability gain of the feature's own top-k logit-lens tokens."""
    input_score: Tensor
    """Share of its top fired-on tokens among its top-k logit-lens tokens (NaN: no search)."""
    top_rank: Tensor
    """Best rank any of its top-k logit-lens tokens reaches after the push (0 = first)."""
    promoted: Tensor
    """``[d_sae, k]`` its top-k logit-lens token ids."""
    self_score: Tensor
    """The output score read on its top-k fired-on tokens (NaN: no search, or never fired)."""
    scale: float
    """The push, as a multiple of the typical residual norm."""
    n_prompts: int

    def top(self, n: int = 20, *, alive: Tensor | None = None, by: str = "output_score"
            ) -> list[int]:
        """The ``n`` features with the highest ``by`` score (among ``alive`` ones if given)."""
        score = torch.nan_to_num(getattr(self, by).clone(), nan=-math.inf)
        if alive is not None:
            score[~alive.bool()] = -math.inf
        order = score.argsort(descending=True)
        return [int(i) for i in order[: int((score > -math.inf).sum())][:n]]

    def rows(self, model: Any, features: Sequence[int], n_tokens: int = 5) -> list[dict]:
        """Table rows: feature, output score, input score, best rank, top promoted tokens."""
        out = []
        for f in features:
            words = display_tokens(model, self.promoted[f, :n_tokens].tolist())
            out.append({"feature": int(f), "output_score": float(self.output_score[f]),
                        "input_score": float(self.input_score[f]),
                        "self_score": float(self.self_score[f]),
                        "top_rank": int(self.top_rank[f]),
                        "promotes": " ".join(w.strip() or repr(w) for w in words)})
        return out


def _prompt_batch(model: HookedTransformer, prompts: Any) -> Tensor:
    if isinstance(prompts, Tensor):
        return prompts.long()
    if model.tokenizer is None:
        raise ValueError("this model has no tokenizer: pass prompts as a [n, pos] token tensor")
    rows = [tokenize(model, p) for p in prompts]
    length = min(len(r) for r in rows)  # same length, so the last position is the prompt's end
    return torch.stack([r[-length:] if length > 1 else r[:1] for r in rows])


def _probs(logits: Tensor) -> Tensor:
    return torch.softmax(logits.float(), dim=-1)


@torch.no_grad()
def feature_scores(
    model: HookedTransformer, sae: Any, prompts: Any = NEUTRAL_PROMPTS, *,
    search: FeatureSearch | None = None, scale: float = 0.5, k: int = 10,
    resid_norm: float | None = None, progress: bool = True,
) -> FeatureScores:
    """Output and input scores of every feature of ``sae`` (batched, with a progress bar).

    ``prompts``: texts (cut to a common length) or a ``[n, pos]`` token tensor. ``scale``:
    the push as a multiple of the typical residual norm at the hook (``resid_norm``; None:
    the ``Steerer``'s, measured on the model's own samples like every relative scale's).
    ``search`` adds the input score.
    """
    if (prompts.numel() if isinstance(prompts, Tensor) else len(prompts)) == 0:  # else min() fails later
        raise ValueError(f"prompts is empty: pass at least one prompt, or leave it out for the default "
                         f"NEUTRAL_PROMPTS ({', '.join(map(repr, NEUTRAL_PROMPTS[:3]))}, ...)")
    hook = check_sae_fits(model, sae.cfg)
    if resume_layer(hook) is None:
        raise ValueError(f"feature_scores needs a residual-stream hook 'blocks.L.hook_resid_post', "
                         f"got {hook!r}")
    tokens = _prompt_batch(model, prompts)
    run = FromHook(model, tokens, hook)  # the clean residuals, computed once
    resid_norm = Steerer(model, sae, hook, resid_norm=resid_norm).resid_norm
    base = _probs(run.logits(last=True))  # [n, vocab]
    W_dec, units = sae.W_dec.detach(), decoder_units(sae)
    d_sae, n = W_dec.shape[0], tokens.shape[0]
    promoted = torch.stack([unembed_direction(model, W_dec[f]).topk(k).indices.cpu()
                            for f in range(d_sae)])  # [d_sae, k]
    fired_on = _fired_on(search, d_sae, k)  # [d_sae, k], -1 where unknown
    output, self_out = torch.zeros(d_sae), torch.full((d_sae,), math.nan)
    rank = torch.zeros(d_sae, dtype=torch.long)
    chunk = max(1, 256 // n)  # rows x vocabulary probabilities per pass stay ~50 MB
    for lo in tqdm(range(0, d_sae, chunk), desc="feature scores", unit="chunk",
                   disable=not progress):
        feats = list(range(lo, min(lo + chunk, d_sae)))
        delta = scale * resid_norm * units[feats]  # [c, d_model]
        probs = _probs(run.logits(delta, last=True)).view(len(feats), n, -1)
        after = probs.gather(2, promoted[feats].to(probs.device)[:, None, :].expand(-1, n, -1))
        output[feats] = _gain(probs, base, promoted[feats]).cpu()
        if fired_on is not None:
            own = fired_on[feats]
            known = (own >= 0).any(dim=1)
            gain = _gain(probs, base, own.clamp_min(0), valid=own >= 0).cpu()
            self_out[feats] = torch.where(known, gain, torch.full_like(gain, math.nan))
        ascending = probs.sort(dim=2).values  # rank of p = how many tokens are more likely
        ranks = probs.shape[2] - torch.searchsorted(ascending, after.contiguous(), right=True)
        rank[feats] = ranks.min(dim=2).values.float().mean(dim=1).round().long().cpu()
    return FeatureScores(output, _input_scores(fired_on, promoted), rank, promoted, self_out,
                         float(scale), n)


def _gain(probs: Tensor, base: Tensor, ids: Tensor, valid: Tensor | None = None) -> Tensor:
    """Mean over prompts of the largest probability gain among ``ids [c, k]`` per feature."""
    c, n, _ = probs.shape
    idx = ids.to(probs.device)[:, None, :].expand(-1, n, -1)
    gain = probs.gather(2, idx) - base[None].expand(c, -1, -1).gather(2, idx)  # [c, n, k]
    if valid is not None:
        gain = gain.masked_fill(~valid.to(gain.device)[:, None, :], -math.inf)
    return gain.max(dim=2).values.mean(dim=1)


def _fired_on(search: FeatureSearch | None, d_sae: int, k: int) -> Tensor | None:
    """``[d_sae, k]`` the tokens each feature fires on most (by summed activation), or None."""
    if search is None:
        return None
    if search.d_sae != d_sae:
        raise ValueError(f"the search covers {search.d_sae} features, the SAE has {d_sae}")
    sums, ids = search.tensors["tok_sum"], search.tensors["tok_id"]
    order = sums.argsort(dim=1, descending=True)[:, :k]
    return ids.gather(1, order)


def _input_scores(fired_on: Tensor | None, promoted: Tensor) -> Tensor:
    out = torch.full((promoted.shape[0],), math.nan)
    if fired_on is None:
        return out
    for f in range(promoted.shape[0]):
        ids = {int(t) for t in fired_on[f] if int(t) >= 0}
        if ids:
            out[f] = len(ids & set(promoted[f].tolist())) / len(ids)
    return out
