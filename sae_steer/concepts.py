"""Which SAE feature should steer toward a concept? Two answers, then a measured choice.

- The *on-word* feature fires on the concept's tokens (best F1 against the labels). It
  reads the concept but often does not write it: steering with it rarely works (the
  seed's "quote" feature 0 failed this way).
- A *predictive* feature's decoder row raises the probability of the concept's tokens as
  the next token. We measure that directly: add ``scale * W_dec[i]`` at the hook on
  ordinary text and see how much the log-probability mass of the concept's vocabulary
  rises at the model's output -- through the rest of the model, not a logit-lens shortcut.
  A probe on the offline world found these steer far better.

``choose_feature`` then runs a small scale sweep for the top candidates and keeps the one
whose suggested scale reaches the lift target at the lowest scale within the cost budget.
The concept labels come from the world's rule-based labeler (``toystories.concept_mask``).
"""
from __future__ import annotations

import dataclasses
import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer

from sae_steer.collect import hook_activations
from sae_steer.score import Sweep, scale_sweep
from sae_steer.steer import _hooked, check_sae_matches


def concept_vocab(
    str_tokens: Sequence[Sequence[str]], token_ids: Sequence[Sequence[int]], concept: str,
    min_count: int = 3, keep: float = 0.5,
) -> dict[int, float]:
    """Token id -> weight: how characteristic each token is of ``concept`` in a corpus.

    weight = (labelled count) x (fraction of the token's occurrences that are labelled),
    keeping tokens whose fraction is at least ``keep`` x the best fraction. So ``"cloud"``
    counts for pretend lists but ``"a"`` (mostly outside lists) does not, and ``"time"``
    survives although most of its uses are "Once upon a time". Weights sum to 1.
    """
    from sae_steer.toystories.labels import concept_mask

    total, labelled = Counter(), Counter()
    for st, ids in zip(str_tokens, token_ids):
        for tok, on in zip(ids, concept_mask(st, concept)):
            total[int(tok)] += 1
            labelled[int(tok)] += bool(on)
    frac = {t: labelled[t] / total[t] for t in labelled if labelled[t] >= min_count}
    if not frac:
        raise ValueError(f"concept {concept!r} occurs fewer than {min_count} times per token "
                         "in these texts: give more texts")
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
) -> Float[Tensor, "n_features"]:
    """Mean rise of log P(concept vocab) over positions when ``scale * W_dec[i]`` is added.

    Every feature's row is added at every position of ``tokens`` (as steering does) and the
    model runs to the end; rows are scaled to unit norm so features compare fairly.
    """
    hook_name = check_sae_matches(model, sae, hook_name)
    feats = list(range(sae.cfg.d_sae)) if features is None else [int(f) for f in features]
    device = model.cfg.device
    ids = torch.tensor(list(vocab), device=device)
    log_w = torch.tensor(list(vocab.values()), device=device).log()
    tokens = tokens.to(device)
    rows = sae.W_dec.detach()
    rows = rows / rows.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    run = _runner_from_hook(model, hook_name, tokens)
    base = _log_mass(run(None), ids, log_w).mean()
    out = []
    for start in range(0, len(feats), chunk):
        part = feats[start : start + chunk]
        # one batch row per (feature, text): each text gets its feature's row added
        delta = (scale * rows[part]).to(device).repeat_interleave(len(tokens), dim=0)
        mass = _log_mass(run(delta), ids, log_w).view(len(part), -1).mean(-1)
        out.append(mass - base)
    return torch.cat(out).cpu()


def _runner_from_hook(model: HookedTransformer, hook_name: str, tokens: Tensor):
    """``run(delta)`` -> logits with ``delta [n * batch, d]`` added at the hook (None: clean).

    For ``blocks.L.hook_resid_post`` the clean activation is computed once and only the
    blocks after the hook run per chunk (``start_at_layer``); other hooks rerun the model.
    """
    match = re.fullmatch(r"blocks\.(\d+)\.hook_resid_post", hook_name)
    if match is not None:
        resid = hook_activations(model, tokens, hook_name)
        start = int(match.group(1)) + 1

        def run(delta: Tensor | None) -> Tensor:
            if delta is None:
                return model(resid, start_at_layer=start)
            x = resid.repeat(len(delta) // len(resid), 1, 1) + delta[:, None, :].to(resid.dtype)
            return model(x, start_at_layer=start)
        return run

    def run_hooked(delta: Tensor | None) -> Tensor:
        if delta is None:
            return model(tokens)

        def add(act: Tensor, hook: Any) -> Tensor:
            return act + delta[:, None, :].to(act.dtype)

        with _hooked(model, hook_name, add):
            return model(tokens.repeat(len(delta) // len(tokens), 1))
    return run_hooked


def on_word_f1(
    acts: Float[Tensor, "n_tok d_sae"], mask: Tensor, threshold: float = 0.0,
) -> Float[Tensor, "d_sae"]:
    """F1 of "feature fires" against the concept labels, for every feature at once."""
    fires = (acts > threshold).float()
    y = mask.to(fires.device).float()[:, None]
    tp = (fires * y).sum(0)
    return 2 * tp / (fires.sum(0) + y.sum()).clamp(min=1)


@dataclasses.dataclass
class ConceptCandidates:
    concept: str
    vocab: dict[int, float]
    predictive: list[int]
    """Features ranked by ``logit_effect`` (best first)."""
    effect: Tensor
    on_word: int
    on_word_f1: float
    pre_word: int = -1
    """Feature that fires on the token right *before* the concept starts (its context)."""
    pre_word_f1: float = 0.0


@torch.no_grad()
def concept_candidates(
    model: HookedTransformer, sae: Any, texts: Sequence[str], concept: str, *,
    relative_scale: float = 0.5, resid_norm: float | None = None, top_k: int = 5,
    n_effect_texts: int = 8, hook_name: str | None = None,
) -> ConceptCandidates:
    """Rank features for ``concept`` on ``texts`` (tokenized with BOS, labelled by rule)."""
    from sae_steer.steer import typical_resid_norm
    from sae_steer.toystories.labels import concept_mask

    hook_name = check_sae_matches(model, sae, hook_name)
    rows = [model.to_tokens(t)[0, : model.cfg.n_ctx].cpu() for t in texts]
    str_toks = [list(model.to_str_tokens(r)) for r in rows]
    vocab = concept_vocab(str_toks, [r.tolist() for r in rows], concept)
    length = min(min(len(r) for r in rows[:n_effect_texts]), 48)
    batch = torch.stack([r[:length] for r in rows[:n_effect_texts]])
    norm = resid_norm if resid_norm is not None else typical_resid_norm(model, hook_name, batch)
    effect = logit_effect(model, sae, vocab, batch, relative_scale * norm, hook_name)
    acts, labels = [], []
    for start in range(0, len(rows), 64):  # batches of right-padded texts; pads dropped
        part = rows[start : start + 64]
        padded = torch.nn.utils.rnn.pad_sequence(part, batch_first=True)
        feats = sae.encode(hook_activations(model, padded, hook_name).to(sae.W_dec.device))
        acts += [feats[j, : len(r)].cpu() for j, r in enumerate(part)]
    labels, before = [], []
    for st in str_toks:
        mask = concept_mask(st, concept)
        labels += mask
        before += before_starts(mask)
    acts_all = torch.cat(acts)
    f1 = on_word_f1(acts_all, torch.tensor(labels))
    pre = on_word_f1(acts_all, torch.tensor(before))
    return ConceptCandidates(concept, vocab, effect.argsort(descending=True)[:top_k].tolist(),
                             effect, int(f1.argmax()), float(f1.max()), int(pre.argmax()),
                             float(pre.max()))


def before_starts(mask: Sequence[bool]) -> list[bool]:
    """Marks the token just before each run of labelled tokens (the concept's context:
    ``said ,`` before a quote, ``it was`` before "time", ``a big`` before a danger word)."""
    return [i + 1 < len(mask) and bool(mask[i + 1]) and not mask[i] for i in range(len(mask))]


@dataclasses.dataclass
class ConceptChoice:
    concept: str
    feature: int
    kind: str
    """``predictive``, ``on_word`` or ``pre_word``."""
    scale: float | None
    """Suggested scale in the sweep's unit (None: no candidate met the target)."""
    sweep: Sweep
    sweeps: dict[int, Sweep]


def _rank(sweep: Sweep) -> tuple:
    """Prefer a met target at the smallest scale; else the best lift within budget."""
    if sweep.suggested is not None:
        i = sweep.scales.index(sweep.suggested)
        return (0, abs(sweep.suggested), -sweep.success[i])
    ok = [s for s, c in zip(sweep.success, sweep.cost) if c <= sweep.cost_budget]
    return (1, -(max(ok) if ok else 0.0), 0.0)


def choose_feature(
    model: HookedTransformer, sae: Any, candidates: ConceptCandidates, scales: Sequence[float],
    *, n_candidates: int = 3, scale_unit: str = "relative", **sweep_kw: Any,
) -> ConceptChoice:
    """Sweep the top predictive candidates and the on-word feature; keep the best."""
    extra = [candidates.on_word] + ([candidates.pre_word] if candidates.pre_word >= 0 else [])
    pool = list(dict.fromkeys(candidates.predictive[:n_candidates] + extra))
    sweeps = {f: scale_sweep(model, sae, f, scales, concept=candidates.concept,
                             scale_unit=scale_unit, **sweep_kw) for f in pool}
    best = min(pool, key=lambda f: _rank(sweeps[f]))
    kind = ("predictive" if best in candidates.predictive[:n_candidates]
            else "on_word" if best == candidates.on_word else "pre_word")
    return ConceptChoice(candidates.concept, best, kind, sweeps[best].suggested, sweeps[best],
                         sweeps)


@dataclasses.dataclass
class ConceptResult:
    """The measured answer for one concept: chosen feature, its scale and a fresh report."""

    choice: ConceptChoice
    candidates: ConceptCandidates
    report: Any
    """``SteeringReport`` at the chosen scale, on seeds not used to choose it."""
    relative_scale: float

    def row(self) -> dict[str, Any]:
        r, c = self.report, self.candidates
        on = r.steered.fires.get(c.on_word), r.unsteered.fires.get(c.on_word)
        return {
            "concept": self.choice.concept, "feature": self.choice.feature,
            "kind": self.choice.kind, "scale_rel": self.relative_scale,
            "scale_abs": round(r.scale, 3),
            "rate_steered": r.steered.concept_rate.value,
            "rate_unsteered": r.unsteered.concept_rate.value, "lift": r.concept_lift,
            "nll_cost": r.nll_cost.value,
            "fires_steered": r.steered.fires[r.feature].value,
            "fires_unsteered": r.unsteered.fires[r.feature].value,
            "on_word": c.on_word, "on_word_f1": round(c.on_word_f1, 3),
            "on_word_fires_steered": on[0].value, "on_word_fires_unsteered": on[1].value,
            "target_met": r.concept_lift >= 5.0 and r.nll_cost.value <= 1.5,
        }


def steer_concept(
    model: HookedTransformer, sae: Any, texts: Sequence[str], concept: str, *,
    scales: Sequence[float] = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8), n_candidates: int = 5,
    n_select: int = 16, n_final: int = 32, max_new_tokens: int = 100,
    prompt: str = "Once upon a time", resid_norm: float | None = None,
    select_seed: int = 0, final_seed: int = 1000, cost_budget: float = 1.5,
    target: float = 5.0, select_margin: float = 1.5,
) -> ConceptResult:
    """Candidates -> sweep (seeds from ``select_seed``) -> report on held-out seeds.

    The scale is chosen on one set of seeds and measured on another (``final_seed``), so
    the reported lift is not inflated by picking the luckiest scale. The first scale to
    cross the target on a few seeds tends to fall short on fresh ones (winner's curse), so
    selection aims ``select_margin`` x higher than ``target``. When no scale meets that,
    the report uses the scale with the best lift within the cost budget.
    """
    from sae_steer.score import steering_report
    from sae_steer.steer import typical_resid_norm

    hook_name = check_sae_matches(model, sae)
    norm = resid_norm if resid_norm is not None else typical_resid_norm(model, hook_name)
    cands = concept_candidates(model, sae, texts, concept, resid_norm=norm)
    choice = choose_feature(model, sae, cands, scales, n_candidates=n_candidates,
                            resid_norm=norm, n_samples=n_select, max_new_tokens=max_new_tokens,
                            prompt=prompt, seed=select_seed, cost_budget=cost_budget,
                            target=target * select_margin)
    rel = choice.scale
    if rel is None:  # best lift within budget (else the smallest scale): an honest failure
        sw = choice.sweep
        ok = [(su, sc) for sc, su, c in zip(sw.scales, sw.success, sw.cost) if c <= cost_budget]
        rel = max(ok)[1] if ok else min(sw.scales, key=abs)
    report = steering_report(model, sae, choice.feature, rel, n_samples=n_final, prompt=prompt,
                             max_new_tokens=max_new_tokens, seed=final_seed, concept=concept,
                             scale_unit="relative", resid_norm=norm,
                             rescore_features=[cands.on_word])
    return ConceptResult(choice, cands, report, rel)
