"""A rule-based concept labeler that works on ANY token sequence (corpus or generations).

The generator knows its labels; model generations do not come with any. These rules
recover the planted labels exactly on the generated corpus (tested) and apply the same
definitions to whatever a (steered) model writes, so re-scoring does not need an SAE.
Tokens may carry a leading space (GPT-2-style ``" time"``). When any token does, the
sequence is read as sub-word pieces (byte-level BPE): pieces are glued back into words
(``" earth" "quake"`` -> ``earthquake``), words are labelled, and every piece of a labelled
word is labelled. Standard library only.
"""
from __future__ import annotations

import re
from collections.abc import Sequence

from .text import SPECIAL_TOKENS, opening_quotes
from .vocab import DANGER_WORDS, LIST_ADJS, LIST_NOUNS, SIZES, THING_ADJS

CONCEPTS = ("quote", "pretend_list", "time_to", "danger")
"""The planted concepts, in a fixed order."""

_DETS = frozenset({"a", "an", "the"})
_ADJS = frozenset(LIST_ADJS + THING_ADJS + SIZES)
_NOUNS = frozenset(LIST_NOUNS)
_DANGER = frozenset(DANGER_WORDS)
# What may join two list items; at least one comma is required for a list.
_SEPARATORS = ((",", "and"), (",", "or"), (",",), ("and",), ("or",))
_PIECE = re.compile(r"\w+|[^\w\s]")  # the word-level splitting rule (text.split_words)
_WORDCHAR = re.compile(r"\w")
_SPACE_MARKS = ("Ġ", "▁")
_STORY_BREAKS = {"<|endoftext|>": "<bos>", "<s>": "<bos>", "</s>": "<eos>"}


def _is_pieces(str_tokens: Sequence[str]) -> bool:
    """Sub-word pieces (some token starts with a space or a space mark), not whole words."""
    return any(t[:1].isspace() or t[:1] in _SPACE_MARKS for t in str_tokens if t)


def _words_of_pieces(str_tokens: Sequence[str]) -> tuple[list[str], list[list[int]]]:
    """Words spelled by sub-word pieces, and for each word the indices of its pieces (a
    whitespace-only piece belongs to the next word, as its space would in ``" fire"``)."""
    words: list[str] = []
    owners: list[list[int]] = []
    glue = False  # the previous piece ended inside a word
    pending: list[int] = []  # whitespace-only pieces waiting for their word
    for i, tok in enumerate(str_tokens):
        if tok in _STORY_BREAKS or tok in SPECIAL_TOKENS:
            words.append(_STORY_BREAKS.get(tok, tok))
            owners.append([i])
            glue, pending = False, []
            continue
        text = "".join(" " if c in _SPACE_MARKS else c for c in tok)
        for m in _PIECE.finditer(text):
            if glue and m.start() == 0 and _WORDCHAR.match(m.group()):  # continues the word
                owners[-1].append(i)
                words[-1] += m.group()
            else:
                words.append(m.group())
                owners.append([*pending, i])
                pending = []
            glue = False
        if not text.strip():
            pending.append(i)
        glue = bool(text) and bool(_WORDCHAR.match(text[-1]))
    return words, owners


def _noun_phrase_end(toks: Sequence[str], i: int) -> int | None:
    """End (exclusive) of ``det adj{0,2} concrete-noun`` starting at i, else None."""
    if i >= len(toks) or toks[i] not in _DETS:
        return None
    j = i + 1
    while j < len(toks) and j - i <= 2 and toks[j] in _ADJS and toks[j] not in _NOUNS:
        j += 1
    return j + 1 if j < len(toks) and toks[j] in _NOUNS else None


def _list_end(toks: Sequence[str], i: int) -> int | None:
    """End of a list of >= 2 concrete noun phrases (with >= 1 comma) starting at i."""
    end = _noun_phrase_end(toks, i)
    if end is None:
        return None
    items, commas = 1, 0
    while True:
        for sep in _SEPARATORS:
            if tuple(toks[end:end + len(sep)]) == sep:
                nxt = _noun_phrase_end(toks, end + len(sep))
                if nxt is not None:
                    items, commas, end = items + 1, commas + (sep[0] == ","), nxt
                    break
        else:
            return end if items >= 2 and commas >= 1 else None


def _pretend_list_mask(toks: Sequence[str]) -> list[bool]:
    mask = [False] * len(toks)
    i = 0
    while i < len(toks):
        end = _list_end(toks, i)
        if end is None:
            i += 1
            continue
        mask[i:end] = [True] * (end - i)
        i = end
    return mask


def _time_to_mask(toks: Sequence[str]) -> list[bool]:
    """``time`` in ``it was/is time to/for`` (the next word may be missing at the end)."""
    def ok(i: int) -> bool:
        return (toks[i] == "time" and i >= 2 and toks[i - 1] in ("was", "is")
                and toks[i - 2] == "it" and (i + 1 == len(toks) or toks[i + 1] in ("to", "for")))
    return [ok(i) for i in range(len(toks))]


def concept_mask(str_tokens: Sequence[str], concept: str) -> list[bool]:
    """Per-token booleans: does token i belong to ``concept``? Same length as the input."""
    if concept not in CONCEPTS:
        raise ValueError(f"unknown concept {concept!r}; known concepts: {CONCEPTS}")
    if _is_pieces(str_tokens):
        words, owners = _words_of_pieces(str_tokens)
        out = [False] * len(str_tokens)
        for on, idx in zip(concept_mask(words, concept), owners):
            for i in idx:
                out[i] = out[i] or on
        return out
    toks = [t.strip().lstrip("Ġ▁") for t in str_tokens]  # GPT-2/SentencePiece space marks
    if concept == "quote":
        return opening_quotes(toks)
    low = [t.lower() for t in toks]
    if concept == "danger":
        return [t in _DANGER for t in low]
    if concept == "time_to":
        return _time_to_mask(low)
    return _pretend_list_mask(low)


def concept_count(str_tokens: Sequence[str], concept: str) -> int:
    """Occurrences of ``concept``: runs of labelled tokens (a whole list counts once)."""
    mask = concept_mask(str_tokens, concept)
    return sum(on and (i == 0 or not mask[i - 1]) for i, on in enumerate(mask))


def concept_rate(samples: Sequence[Sequence[str]], concept: str) -> float:
    """Occurrences per 100 tokens over a batch of token lists (special tokens not counted)."""
    if isinstance(samples, str) or (samples and isinstance(samples[0], str)):
        raise TypeError("concept_rate takes a list of token lists, e.g. [model.to_str_tokens(text)]")
    n_tok = sum(sum(t.strip() not in SPECIAL_TOKENS for t in s) for s in samples)
    hits = sum(concept_count(s, concept) for s in samples)
    return 100.0 * hits / n_tok if n_tok else 0.0
