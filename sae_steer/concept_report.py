"""Offline world: which SAE features match the planted concepts, and what they fire on.

The world's rule-based labeler (``toystories.labels.concept_mask``) marks every token of
a text that belongs to a concept; ``groundtruth.match_concepts`` picks, per concept, the
feature whose firing best agrees with those labels (F1, precision, recall, AUROC).
``concept_feature_report`` prints each match's top excerpts in the seed's block format
(what ``python -m sae_steer demo`` shows).
"""
from __future__ import annotations

import itertools
from collections.abc import Iterable

from sae_steer.render import render_blocks
from sae_steer.search_results import FeatureSearch


def concept_matches(model, sae, texts: Iterable[str], *, n_texts: int = 200,
                    hook_name: str | None = None, context_size: int = 128,
                    batch_size: int = 32) -> dict:
    """``{concept: ConceptMatch}``: the best-F1 feature per planted concept on n_texts.

    Builds the dense ``[n_tok, d_sae]`` activations that ``match_concepts`` takes (the
    streaming search never does), so keep ``n_texts`` modest.
    """
    from sae_steer.groundtruth import acts_and_labels, match_concepts

    texts = itertools.islice(iter(texts), n_texts)
    feats, labels = acts_and_labels(model, sae.encode, texts, hook_name or sae.cfg.hook_name,
                                    context_size=context_size, batch_size=batch_size)
    if len(feats) == 0:
        raise ValueError("no texts to label: pass a non-empty iterable of texts")
    return match_concepts(feats, labels)


def match_rows(matches: dict) -> list[dict]:
    """Table rows: concept, feature, F1, precision, recall, AUROC."""
    rows = []
    for concept, m in matches.items():
        row = {"concept": concept, "feature": int(m.feature)}
        for name in ("f1", "precision", "recall", "auroc"):
            if hasattr(m, name):
                row[name] = round(float(getattr(m, name)), 3)
        rows.append(row)
    return rows


def concept_feature_report(model, sae, search: FeatureSearch, matches: dict, *,
                           n_excerpts: int = 3) -> str:
    """Per planted concept: its best feature, the match scores, top excerpts in blocks."""
    lines = []
    for row in match_rows(matches):
        f = row["feature"]
        scores = ", ".join(f"{k} {v:.2f}" for k, v in row.items()
                           if k not in ("concept", "feature"))
        lines.append(f'Concept "{row["concept"]}": feature {f} ({scores})')
        try:
            excerpts = search.top_excerpts(f, model)[:n_excerpts]
        except ValueError as e:  # e.g. the feature never fired on the search's text set
            lines += [f"  ({e})", ""]
            continue
        max_act = float(search.max_act[f])
        for n, ex in enumerate(excerpts, 1):
            lines.append(f"Excerpt {n} (max {ex.peak_act:.2f}):")
            lines.append(render_blocks(ex.str_tokens, ex.acts, max_act))
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def planted_concepts_report(model, sae, *, preset: str = "small", n_texts: int = 300,
                            n_excerpts: int = 3, progress: bool = True) -> str:
    """One call for ``python -m sae_steer demo``: match the planted concepts on the
    offline world's validation split and print each match's top excerpts in blocks.

    The search over the validation split is cached (``search.load_or_search``).
    """
    from sae_steer.data import load_texts
    from sae_steer.search import load_or_search

    def texts():
        return load_texts("toystories", split="validation", preset=preset)

    search = load_or_search(model, sae, texts, source=f"toystories/{preset}/validation",
                            progress=progress)
    matches = concept_matches(model, sae, texts(), n_texts=n_texts)
    return concept_feature_report(model, sae, search, matches, n_excerpts=n_excerpts)
