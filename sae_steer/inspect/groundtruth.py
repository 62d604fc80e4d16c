"""Which SAE feature matches each concept, and how well.

Given per-token feature activations and per-token concept labels, we pick for each
concept the feature with the best F1 (or AUROC) and report precision, recall, F1 (a
feature "fires" when its activation exceeds ``threshold``) and AUROC (rank-based, so
it judges the ordering of activations without any threshold; ties get average ranks).
Only torch tensors come in; :func:`acts_and_labels` builds them from a model, any
``encode`` callable (an SAE's), texts and concepts: any objects with ``name`` and
``mask(model, token_ids)`` (``sae_steer.measure.Concept``, or the offline world's planted ones).
"""
from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from sae_steer.lm import TokenCount, hook_activations, token_batches


@dataclasses.dataclass(frozen=True)
class ConceptMatch:
    """The feature that best matches one concept, with its scores."""

    concept: str
    feature: int
    precision: float
    recall: float
    f1: float
    auroc: float
    n_positive: int
    """Tokens labelled with the concept."""
    n_tokens: int
    threshold: float


def _f1_stats(fires: Bool[Tensor, "n_tok d_sae"], y: Bool[Tensor, " n_tok"]) -> tuple[Tensor, Tensor, Tensor]:
    """Per-feature precision, recall, F1 (0 where undefined: a feature that never fires)."""
    fires_f, y_f = fires.float(), y.float()
    tp = y_f @ fires_f  # [d_sae]
    n_fire = fires_f.sum(0)
    n_pos = y_f.sum()
    precision = torch.where(n_fire > 0, tp / n_fire.clamp(min=1), torch.zeros_like(tp))
    recall = tp / n_pos
    f1 = 2 * tp / (n_fire + n_pos)
    return precision, recall, f1


def auroc(scores: Float[Tensor, "n_tok *d"], y: Bool[Tensor, " n_tok"],  # noqa: F821 (a jaxtyping shape)
          chunk: int = 256) -> Float[Tensor, "*d"]:
    """AUROC of each column of ``scores`` for labels ``y`` (Mann-Whitney U, ties averaged).

    Accepts a 1-D ``scores [n_tok]`` too (returns a 0-d tensor). NaN when ``y`` is all
    True or all False.
    """
    one_d = scores.ndim == 1
    cols = scores.reshape(len(scores), -1).T.double()  # [d, n_tok]: one sorted row per feature
    y = y.to(cols.device).bool()
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        out = torch.full((cols.shape[0],), float("nan"), dtype=torch.float64)
        return out[0] if one_d else out
    parts = []
    for block in cols.split(chunk):
        srt = block.sort(dim=1).values.contiguous()
        low = torch.searchsorted(srt, block.contiguous())
        high = torch.searchsorted(srt, block.contiguous(), right=True)
        ranks = (low + high + 1).double() / 2  # average 1-based rank of each value's tie group
        rank_sum = ranks[:, y].sum(1)
        parts.append((rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
    out = torch.cat(parts).cpu()
    return out[0] if one_d else out


def match_concepts(feature_acts: Float[Tensor, "n_tok d_sae"], labels: dict[str, Tensor], *,
                   threshold: float = 0.0, by: str = "f1") -> dict[str, ConceptMatch]:
    """Best-matching feature per concept (highest F1, or highest AUROC with ``by="auroc"``)."""
    if feature_acts.ndim != 2:
        raise ValueError(f"feature_acts must be [n_tok, d_sae], got shape {tuple(feature_acts.shape)}")
    if by not in ("f1", "auroc"):
        raise ValueError(f"by must be 'f1' or 'auroc', got {by!r}")
    n_tok = feature_acts.shape[0]
    fires = feature_acts > threshold
    out = {}
    for concept, y in labels.items():
        y = torch.as_tensor(y, device=feature_acts.device).bool()
        if y.shape != (n_tok,):
            raise ValueError(f"labels[{concept!r}] has shape {tuple(y.shape)}; expected ({n_tok},)")
        if not y.any():
            raise ValueError(f"concept {concept!r} has no labelled tokens here; use more text")
        precision, recall, f1 = _f1_stats(fires, y)
        if by == "f1":
            best = int(f1.argmax())
            area = float(auroc(feature_acts[:, best], y))
        else:
            areas = auroc(feature_acts, y)
            best = int(torch.nan_to_num(areas, nan=-1.0).argmax())
            area = float(areas[best])
        out[concept] = ConceptMatch(concept, best, float(precision[best]), float(recall[best]),
                                    float(f1[best]), area, int(y.sum()), n_tok, threshold)
    return out


@torch.no_grad()
def acts_and_labels(model, encode: Callable[[Tensor], Tensor], texts: Iterable[str], hook_name: str,
                    concepts: Sequence[Any], *, context_size: int = 128, batch_size: int = 32,
                    ) -> tuple[Float[Tensor, "n_tok d_sae"], dict[str, Bool[Tensor, " n_tok"]]]:
    """Feature activations and concept labels for the real tokens of ``texts``.

    ``encode`` maps ``[batch, pos, d_model]`` activations at ``hook_name`` to features
    (e.g. ``sae.encode``). A text longer than ``context_size`` is read whole, in windows
    (``lm.token_batches``); each window's BOS and padding are dropped. Labels come from
    each concept's ``mask(model, token_ids)`` on the *whole* text (BOS + all its tokens),
    then cut to the windows, so a rule that needs context (inside a quote, after "time")
    sees the text before a window's start, not only the window.
    """
    count = TokenCount()
    feats, labels = [], {c.name: [] for c in concepts}
    text, text_ids = None, []  # the text being read, its tokens gathered from its windows

    def label_text(ids: list[int]) -> None:  # a text's windows are consecutive: label it whole
        whole = [model.tokenizer.bos_token_id] + ids
        for c in concepts:
            labels[c.name] += list(c.mask(model, whole))[1:]

    for tokens, mask in token_batches(model, texts, context_size, batch_size, count=count):
        f = encode(hook_activations(model, tokens, hook_name))  # [batch, pos, d_sae]
        keep = mask.clone()
        keep[:, 0] = False  # BOS
        feats.append(f[keep.to(f.device)].cpu())
        first = count.windows - len(tokens)
        for r, (row, n_real) in enumerate(zip(tokens.tolist(), mask.sum(1).tolist())):
            if count.window_text[first + r] != text:
                if text is not None:
                    label_text(text_ids)
                text, text_ids = count.window_text[first + r], []
            text_ids += row[1:n_real]
    if text is not None:
        label_text(text_ids)
    return torch.cat(feats), {c: torch.tensor(v, dtype=torch.bool) for c, v in labels.items()}


def concept_matches(model, sae, texts: Iterable[str], concepts: Sequence[Any], *,
                    n_texts: int = 200, hook_name: str | None = None, context_size: int = 128,
                    batch_size: int = 32) -> dict[str, ConceptMatch]:
    """``{concept name: ConceptMatch}``: the best-F1 feature per concept on ``n_texts``.

    Builds the dense ``[n_tok, d_sae]`` activations that ``match_concepts`` takes (the
    streaming search never does), so keep ``n_texts`` modest.
    """
    texts = itertools.islice(iter(texts), n_texts)
    feats, labels = acts_and_labels(model, sae.encode, texts, hook_name or sae.cfg.hook_name,
                                    concepts, context_size=context_size, batch_size=batch_size)
    if len(feats) == 0:
        raise ValueError("no texts to label: pass a non-empty iterable of texts")
    return match_concepts(feats, labels)


def match_rows(matches: dict[str, ConceptMatch]) -> list[dict]:
    """Table rows: concept, feature, F1, precision, recall, AUROC."""
    rows = []
    for concept, m in matches.items():
        row = {"concept": concept, "feature": int(m.feature)}
        for name in ("f1", "precision", "recall", "auroc"):
            row[name] = round(float(getattr(m, name)), 3)
        rows.append(row)
    return rows
