"""The offline world's planted concepts, shown: which features match them, and their excerpts.

``planted_concepts_report`` is what ``python -m sae_steer demo`` prints in its third stage:
per planted concept, the feature whose firing best agrees with the world's labels (F1,
precision, recall, AUROC) and its top excerpts in the seed's block format.
``mark_concepts`` marks where the labeler finds the concepts in a story.
"""
from __future__ import annotations

from collections.abc import Sequence

from sae_steer.inspect import concept_matches, load_or_search
from sae_steer.lm import load_texts
from sae_steer.toystories import CONCEPTS, concept_mask, detokenize, planted_concepts
from sae_steer.ui.views import concept_feature_report


def planted_concepts_report(model, sae, *, preset: str = "small", n_texts: int = 300,
                            n_excerpts: int = 3, progress: bool = True) -> str:
    """Match the planted concepts on the offline world's validation split and show each
    match's top excerpts in blocks. The search over the validation split is cached."""

    def texts():
        return load_texts("toystories", split="validation", preset=preset)

    search = load_or_search(model, sae, texts, source=f"toystories/{preset}/validation",
                            progress=progress)
    matches = concept_matches(model, sae, texts(), list(planted_concepts().values()),
                              n_texts=n_texts)
    return concept_feature_report(model, sae, search, matches, n_excerpts=n_excerpts)


def mark_concepts(str_tokens: Sequence[str]) -> str:
    """Story text with each planted concept's tokens marked as ``[tokens]{concept}``.

    Shows, in plain text, where the toy world's rule-based labeler finds the planted
    concepts in a generation (the block format is reserved for SAE features).
    """
    masks = {c: concept_mask(str_tokens, c) for c in CONCEPTS}
    labels = [next((c for c in CONCEPTS if masks[c][i]), None) for i in range(len(str_tokens))]
    pieces: list[str] = []
    i = 0
    while i < len(str_tokens):
        j = i
        while j < len(str_tokens) and labels[j] == labels[i]:
            j += 1
        words = detokenize(list(str_tokens[i:j]))
        pieces.append(f"[{words}]{{{labels[i]}}}" if labels[i] else words)
        i = j
    text = ""
    for piece in filter(None, pieces):  # no space before closing punctuation
        text += piece if not text or piece[0] in ".,!?;:)" else " " + piece
    return text
