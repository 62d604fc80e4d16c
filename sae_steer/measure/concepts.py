"""``Concept``: what should appear in a text, for any model and tokenizer.

A concept turns a token sequence into one flag per token::

    danger = Concept.words(["fire", "flood", "storm"])       # whole words, any tokenizer
    quote = Concept.regex(r'said, "')                          # a pattern over the text
    ids = Concept.tokens([1234, 5678])                         # exact token ids
    mine = Concept.labeler(my_rule, name="mine")               # str tokens -> flags
    f7 = Concept.from_feature(search, 7, model)                # the words feature 7 fires on
    danger.mask(model, token_ids)                              # -> [False, True, ...]

Words and patterns are matched on the *detokenized* text and mapped back to the tokens
whose characters they cover, so a sub-word tokenizer that spells "flood" as "fl" + "ood"
labels both pieces, exactly as a word-level tokenizer labels its one token. Special
tokens (BOS, EOS, padding) are never labelled.

Scoring, sweeps and feature choice take any object with ``name`` and
``mask(model, token_ids)``; the offline world's planted concepts
(``sae_steer.planted_concepts()``) are such objects. This module knows nothing of them.
"""
from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from sae_steer.inspect import FeatureSearch
from sae_steer.lm import display_tokens, token_strings

Mask = list[bool]


class ConceptLike(Protocol):
    """What the measuring code needs of a concept."""

    name: str

    def mask(self, model: Any, token_ids: Sequence[int]) -> Mask: ...


@dataclasses.dataclass(frozen=True)
class Concept:
    """A named rule from (model, token ids) to one flag per token. Build one with the
    class methods; ``mask`` applies it."""

    name: str
    rule: Callable[[Any, list[int]], Sequence[bool]] = dataclasses.field(repr=False, compare=False)
    description: str = ""

    def mask(self, model: Any, token_ids: Sequence[int]) -> Mask:
        ids = [int(t) for t in token_ids]
        flags = [bool(f) for f in self.rule(model, ids)]
        if len(flags) != len(ids):
            raise ValueError(f"concept {self.name!r} gave {len(flags)} flags for {len(ids)} "
                             "tokens; a rule must return one flag per token")
        return flags

    # ------------------------------------------------------------ constructors

    @classmethod
    def words(cls, words: Sequence[str], *, name: str | None = None) -> Concept:
        """Any of ``words`` as a whole word (case-insensitive) in the detokenized text."""
        if isinstance(words, str) or not words:
            raise ValueError("words must be a non-empty list of strings, e.g. ['fire', 'flood']")
        clean = sorted({w.strip() for w in words if w.strip()}, key=len, reverse=True)
        if not clean:
            raise ValueError("words has no non-blank entry")
        pattern = re.compile(r"(?<!\w)(?:" + "|".join(map(re.escape, clean)) + r")(?!\w)",
                             re.IGNORECASE)
        return cls(name or "words:" + ",".join(clean), _text_rule(pattern),
                   f"whole words {clean}")

    @classmethod
    def regex(cls, pattern: str | re.Pattern, *, name: str | None = None,
              flags: int = 0) -> Concept:
        """Every match of ``pattern`` in the detokenized text (``re`` syntax)."""
        try:
            compiled = re.compile(pattern, flags) if isinstance(pattern, str) else pattern
        except re.error as e:
            raise ValueError(f"bad concept pattern {pattern!r}: {e}") from e
        return cls(name or f"regex:{compiled.pattern}", _text_rule(compiled),
                   f"pattern {compiled.pattern!r}")

    @classmethod
    def tokens(cls, token_ids: Sequence[int], *, name: str | None = None) -> Concept:
        """Exact token ids (tokenizer-specific, but needs no text at all)."""
        wanted = frozenset(int(t) for t in token_ids)
        if not wanted:
            raise ValueError("token_ids is empty: give at least one token id")
        return cls(name or f"tokens:{sorted(wanted)}",
                   lambda model, ids: [i in wanted for i in ids], f"token ids {sorted(wanted)}")

    @classmethod
    def labeler(cls, fn: Callable[[list[str]], Sequence[bool]], *,
                name: str | None = None) -> Concept:
        """Any rule from the tokenizer's string tokens (``model.to_str_tokens``) to flags."""
        if not callable(fn):
            raise TypeError(f"labeler takes a callable, got {type(fn).__name__}")
        label = name or getattr(fn, "__name__", "labeler")
        return cls(label, lambda model, ids: fn(token_strings(model, ids)), f"labeler {label}")

    @classmethod
    def from_feature(cls, search: FeatureSearch, feature: int, model: Any, *, n: int = 5,
                     name: str | None = None) -> Concept:
        """The ``n`` words on which ``feature`` fires most in ``search`` (the seed's way of
        naming a feature: "feature 6 fires on fire"). Pieces that are not whole words
        (sub-word tokens, punctuation) are matched as the exact tokens they are."""
        top = search.top_tokens(feature, model, n)
        if not top:
            raise ValueError(f"feature {feature} fires on no token in this search")
        words = [t.strip() for t, _, _ in top if t.strip().isalpha() and t[:1].isspace()]
        if len(words) == len(top):
            return cls.words(words, name=name or f"feature {feature}: {' '.join(words)}")
        ids = [int(i) for i in search.tensors["tok_id"][search.check_feature(feature)]
               if int(i) >= 0]
        shown = " ".join(t.strip() or repr(t) for t, _, _ in top)
        return cls.tokens(ids[:n] if len(ids) >= n else ids,
                          name=name or f"feature {feature}: {shown}")


def _special_ids(model: Any) -> frozenset[int]:
    tok = getattr(model, "tokenizer", None)
    return frozenset(getattr(tok, "all_special_ids", ()) or ()) if tok is not None else frozenset()


def _text_rule(pattern: re.Pattern) -> Callable[[Any, list[int]], list[bool]]:
    """Match ``pattern`` on the text the tokens spell; flag every token a match overlaps."""

    def rule(model: Any, ids: list[int]) -> list[bool]:
        if getattr(model, "tokenizer", None) is None:
            return [False] * len(ids)  # bare ids spell no text
        special = _special_ids(model)
        text, ends = _text_and_ends(model.tokenizer, ids, special)
        flags = [False] * len(ids)
        for m in pattern.finditer(text):
            if m.end() == m.start():
                continue
            start = 0
            for k, end in enumerate(ends):
                # a token that completes no character (one byte of "é") belongs to the next
                if max(end, start + 1) > m.start() and start < m.end() and ids[k] not in special:
                    flags[k] = True
                start = end
        return flags

    return rule


def _text_and_ends(tokenizer: Any, ids: list[int], special: frozenset[int]
                   ) -> tuple[str, list[int]]:
    """The text ``ids`` spell and where each token ends in it. Special tokens become a
    blank, so "<bos>" never matches and words do not join across it. A token ends where
    the text decoded up to it still agrees with the whole run's text, so the bytes of a
    character split over several tokens (byte-level BPE: "é", "日") end at the character."""
    text, ends, k = "", [], 0
    while k < len(ids):
        if ids[k] in special:
            text += " "
            ends.append(len(text))
            k += 1
            continue
        stop = next((j for j in range(k, len(ids)) if ids[j] in special), len(ids))
        run = tokenizer.decode(ids[k:stop], clean_up_tokenization_spaces=False)
        agreed = 0
        for j in range(k + 1, stop + 1):
            prefix = tokenizer.decode(ids[k:j], clean_up_tokenization_spaces=False)
            agreed = max(agreed, len(os.path.commonprefix([prefix, run])))
            ends.append(len(text) + (agreed if j < stop else len(run)))
        text += run
        k = stop
    return text, ends


def as_concept(concept: Any) -> ConceptLike:
    """``concept`` if it has ``name`` and ``mask``; a TypeError that says what to pass."""
    if isinstance(concept, str) or not (hasattr(concept, "mask") and hasattr(concept, "name")):
        raise TypeError(
            f"concept must be a Concept (e.g. Concept.words(['fire', 'flood'])) or another "
            f"object with name and mask(model, token_ids), got {type(concept).__name__} "
            f"{concept!r}; the offline world's are sae_steer.planted_concepts()[name]")
    return concept


def occurrences(mask: Sequence[bool], start: int = 0,
                pieces: Sequence[str] | None = None) -> int:
    """How many times a concept occurs in one text, by two documented rules.

    1. A run of labelled tokens counts once (a whole list, a word in sub-word pieces); a
       run that begins before ``start`` (in the prompt) is not the model's and is not
       counted.
    2. With ``pieces`` (each token's display string), an immediate repeat counts once: a
       run whose text equals the previous run's (case-insensitive) with only punctuation
       or nothing between them ("fire. fire. fire!") adds nothing, so a degenerate loop
       cannot inflate the rate.
    """
    count, prev_text, prev_end = 0, None, None
    i, n = 0, len(mask)
    while i < n:
        if not mask[i]:
            i += 1
            continue
        j = i
        while j < n and mask[j]:
            j += 1
        text = "".join(pieces[i:j]).strip().lower() if pieces is not None else None
        between = "".join(pieces[prev_end:i]) if pieces is not None and prev_end is not None else None
        repeat = (text is not None and text == prev_text and between is not None
                  and not any(ch.isalnum() for ch in between))
        if i >= start and not repeat:
            count += 1
        prev_text, prev_end = text, j
        i = j
    return count


def count_in(model: Any, concept: ConceptLike, token_ids: Sequence[int], start: int = 0) -> int:
    """``occurrences`` of ``concept`` in one text, reading display strings only when the
    repeat rule can apply (two runs or more): the same count, without decoding every
    prefix of texts where the concept occurs once or not at all."""
    ids = [int(t) for t in token_ids]
    mask = concept.mask(model, ids)
    runs = sum(1 for k, flag in enumerate(mask) if flag and (k == 0 or not mask[k - 1]))
    return occurrences(mask, start, display_tokens(model, ids) if runs > 1 else None)
