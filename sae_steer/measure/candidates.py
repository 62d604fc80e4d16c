"""Which SAE features might steer toward a concept? Four kinds of candidate.

- The *on-word* feature fires on the concept's tokens (best F1 against the concept's
  labels). It reads the concept but often does not write it: steering with it rarely
  works (the seed's "quote" feature 0 failed this way).
- The *pre-word* feature fires on the token just before the concept starts (its context).
- A *predictive* feature's decoder row raises the probability of the concept's tokens as
  the next token. We measure that directly: add ``scale * W_dec[i]`` at the hook on
  ordinary text and see how much the log-probability mass of the concept's vocabulary
  rises at the model's output -- through the rest of the model, not a logit-lens shortcut.
- An *aligned* feature's decoder row points along the concept's *context direction*: the
  mean residual on the token just before the concept starts minus the mean residual over
  all tokens (a difference of means, the usual supervised steering vector). The direction
  itself is kept as a reference: when even it cannot make the concept appear at a given
  push, the hook is the limit, not the choice of feature.

Works for any concept object (``name`` + ``mask(model, token_ids)``) and any model.
"""
from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from sae_steer.config import SelectConfig, replace_config
from sae_steer.lm import FromHook, check_sae_fits, row_activations, text_rows
from sae_steer.measure.concepts import as_concept
from sae_steer.sae import decoder_units
from sae_steer.steer import Steerer

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer


def concept_vocab(model: Any, rows: Sequence[Sequence[int]], concept: Any, min_count: int = 3,
                  keep: float = 0.5) -> dict[int, float]:
    """Token id -> weight: how characteristic each token is of ``concept`` in a corpus.

    weight = (labelled count) x (fraction of the token's occurrences that are labelled),
    keeping tokens whose fraction is at least ``keep`` x the best fraction. So ``"cloud"``
    counts for pretend lists but ``"a"`` (mostly outside lists) does not, and ``"time"``
    survives although most of its uses are "Once upon a time". Weights sum to 1.
    """
    total, labelled = Counter(), Counter()
    for ids in rows:
        for tok, on in zip(ids, concept.mask(model, ids)):
            total[int(tok)] += 1
            labelled[int(tok)] += bool(on)
    frac = {t: labelled[t] / total[t] for t in labelled if labelled[t] >= min_count}
    if not frac:
        raise ValueError(f"concept {concept.name!r} occurs fewer than {min_count} times per "
                         "token in these texts: give more texts")
    best = max(frac.values())
    weights = {t: labelled[t] * f for t, f in frac.items() if f >= keep * best}
    norm = sum(weights.values())
    return {t: w / norm for t, w in sorted(weights.items(), key=lambda kv: -kv[1])}


def _log_mass(logits: Float[Tensor, "... vocab"], ids: Tensor, log_w: Tensor) -> Tensor:
    """log sum_v w_v p(v): the weighted probability of the concept's vocabulary."""
    logp = torch.log_softmax(logits.float(), dim=-1)[..., ids]
    return torch.logsumexp(logp + log_w, dim=-1)


@torch.no_grad()
def logit_effect(
    model: HookedTransformer, sae: Any, vocab: dict[int, float], tokens: Int[Tensor, "batch pos"],
    scale: float, hook_name: str | None = None, features: Sequence[int] | None = None,
    chunk: int = 32,
) -> Float[Tensor, " n_features"]:
    """Mean rise of log P(concept vocab) over positions when ``scale * W_dec[i]`` is added.

    Every feature's row is added at every position of ``tokens`` (as steering does) and the
    model runs to the end (``lm.FromHook``); rows are scaled to unit norm so features
    compare fairly.
    """
    hook_name = check_sae_fits(model, sae.cfg, hook_name)
    feats = list(range(sae.cfg.d_sae)) if features is None else [int(f) for f in features]
    device = model.cfg.device
    ids = torch.tensor(list(vocab), device=device)
    log_w = torch.tensor(list(vocab.values()), device=device).log()
    rows = decoder_units(sae)
    run = FromHook(model, tokens, hook_name)
    base = _log_mass(run.logits(), ids, log_w).mean()
    out = []
    for start in range(0, len(feats), chunk):
        part = feats[start : start + chunk]
        # one batch row per (feature, text): each text gets its feature's row added
        mass = _log_mass(run.logits(scale * rows[part]), ids, log_w).view(len(part), -1).mean(-1)
        out.append(mass - base)
    return torch.cat(out).cpu()


def on_word_f1(
    acts: Float[Tensor, "n_tok d_sae"], mask: Tensor, threshold: float = 0.0,
) -> Float[Tensor, " d_sae"]:
    """F1 of "feature fires" against the concept labels, for every feature at once."""
    fires = (acts > threshold).float()
    y = mask.to(fires.device).float()[:, None]
    tp = (fires * y).sum(0)
    return 2 * tp / (fires.sum(0) + y.sum()).clamp(min=1)


@dataclasses.dataclass
class ConceptCandidates:
    concept: Any
    """The concept (an object with ``name`` and ``mask``)."""
    vocab: dict[int, float]
    predictive: list[int]
    """Features ranked by ``logit_effect`` (best first)."""
    effect: Tensor
    on_word: int
    on_word_f1: float
    pre_word: int = -1
    """Feature that fires on the token right *before* the concept starts (its context)."""
    pre_word_f1: float = 0.0
    aligned: list[int] = dataclasses.field(default_factory=list)
    """Features ranked by the cosine of their decoder row with ``direction`` (best first)."""
    direction: Tensor | None = None
    """``[d_model]`` the concept's context direction at the hook, unit norm (None: the
    texts hold no concept start)."""

    def best(self) -> dict[str, int]:
        """The two features a reader compares first, by role: the one that fires on the
        concept's words and the one whose decoder row best predicts them."""
        return {"fires on it": self.on_word, "predicts it": self.predictive[0]}


@torch.no_grad()
def concept_candidates(
    model: HookedTransformer, sae: Any, texts: Sequence[str], concept: Any,
    cfg: SelectConfig | None = None, *, resid_norm: float | None = None, **settings: Any,
) -> ConceptCandidates:
    """Rank features for ``concept`` on ``texts`` (tokenized with BOS and windowed at the
    context like every stage's, labelled by the concept).

    ``cfg.candidate_scale`` (x the typical residual norm: ``resid_norm``, else a
    ``Steerer``'s, measured on the model's own samples) is the push at which the predictive
    effect is read, on ``cfg.n_effect_texts`` texts; ``cfg.n_candidates`` are kept.
    """
    cfg = replace_config(cfg if cfg is not None else SelectConfig.for_concept(), **settings)
    concept = as_concept(concept)
    hook_name = check_sae_fits(model, sae.cfg)
    rows = text_rows(model, texts)  # a text longer than the context: several windows
    id_rows = [r.tolist() for r in rows]
    vocab = concept_vocab(model, id_rows, concept)
    length = min(min(len(r) for r in rows[:cfg.n_effect_texts]), 48)
    batch = torch.stack([r[:length] for r in rows[:cfg.n_effect_texts]])
    norm = Steerer(model, sae, hook_name, resid_norm=resid_norm).resid_norm
    effect = logit_effect(model, sae, vocab, batch, cfg.candidate_scale * norm, hook_name)
    labels, befores = [], []  # befores: per text, the token before each concept start
    for ids in id_rows:
        mask = concept.mask(model, ids)
        labels += mask
        befores.append(before_starts(mask))
    acts, context = [], _ContextMeans()
    for start, resid in row_activations(model, rows, hook_name):  # padding dropped below
        feats = sae.encode(resid.to(sae.W_dec.device))
        for j, r in enumerate(rows[start : start + len(resid)]):
            acts.append(feats[j, : len(r)].cpu())
            context.add(resid[j, : len(r)], befores[start + j])
    acts_all = torch.cat(acts)
    f1 = on_word_f1(acts_all, torch.tensor(labels))
    pre = on_word_f1(acts_all, torch.tensor([b for row in befores for b in row]))
    direction = context.direction()
    aligned = [] if direction is None else decoder_alignment(sae, direction).argsort(
        descending=True)[:cfg.n_candidates].tolist()
    return ConceptCandidates(concept, vocab,
                             effect.argsort(descending=True)[:cfg.n_candidates].tolist(),
                             effect, int(f1.argmax()), float(f1.max()), int(pre.argmax()),
                             float(pre.max()), aligned, direction)


class _ContextMeans:
    """Running sums for the context direction: residuals before a concept start vs all
    (BOS left out: its outsized norm would dominate the overall mean)."""

    def __init__(self) -> None:
        self.total = self.before = None
        self.n_total = self.n_before = 0

    def add(self, resid: Float[Tensor, "pos d_model"], before: Sequence[bool]) -> None:
        body = resid[1:].float()  # summed where the model runs: no copy of the residuals
        flags = torch.tensor(list(before[1:]), dtype=torch.bool, device=body.device)
        if self.total is None:
            self.total, self.before = body.new_zeros(body.shape[-1]), body.new_zeros(body.shape[-1])
        self.total += body.sum(0)
        self.before += body[flags].sum(0)
        self.n_total += len(body)
        self.n_before += int(flags.sum())

    def direction(self) -> Tensor | None:
        if not self.n_before:
            return None
        d = self.before / self.n_before - self.total / self.n_total
        return (d / d.norm().clamp(min=1e-12)).cpu()


def decoder_alignment(sae: Any, direction: Float[Tensor, " d_model"]) -> Float[Tensor, " d_sae"]:
    """Cosine of every decoder row ``W_dec[i]`` with ``direction``."""
    units = decoder_units(sae).float()
    d = direction.to(units.device).float()
    return (units @ (d / d.norm().clamp(min=1e-12))).cpu()


def before_starts(mask: Sequence[bool]) -> list[bool]:
    """Marks the token just before each run of labelled tokens (the concept's context:
    ``said ,`` before a quote, ``it was`` before "time", ``a big`` before a danger word)."""
    return [i + 1 < len(mask) and bool(mask[i + 1]) and not mask[i] for i in range(len(mask))]
