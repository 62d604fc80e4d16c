"""Words <-> text for the toy world: one splitting rule, one joining rule.

The generator writes stories as word lists and joins them with :func:`detokenize`;
the tokenizer splits text with the same rule as :func:`split_words` and decodes with
:func:`detokenize`. Because both directions live here, text -> tokens -> text is exact
for every generated story. Standard library only.
"""
from __future__ import annotations

import re
from collections.abc import Sequence

# WhitespaceSplit + Punctuation("isolated") in `tokenizers`: runs of word characters
# stay together, every punctuation mark becomes its own token.
_WORD_OR_PUNCT = re.compile(r"\w+|[^\w\s]")

SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>", "<unk>")
"""Padding, begin/end of story, unknown word: ids 0..3 in every toy vocabulary."""

SPEECH_VERBS = frozenset(
    {"said", "asked", "shouted", "yelled", "whispered", "replied", "called", "cried", "exclaimed"}
)
"""A speech verb followed by a comma opens a quotation (``Mom said, "Hi``)."""

# No space before these (they lean on the previous word).
_ATTACH_LEFT = frozenset({",", ".", "!", "?", ";", ":", ")", "”"})
# No space after these (they lean on the next word).
_ATTACH_RIGHT = frozenset({"(", "“"})


def split_words(text: str) -> list[str]:
    """Split text the way the toy tokenizer's pre-tokenizer does."""
    return _WORD_OR_PUNCT.findall(text)


def opening_quotes(tokens: Sequence[str]) -> list[bool]:
    """Which tokens are an opening quotation mark (the start of someone talking).

    A straight ``"`` is ambiguous, so we decide by context: right after
    ``<speech verb> ,`` it always opens; otherwise quotes alternate open/close,
    restarting at each story boundary (``<bos>``/``<eos>``). Curly ``“`` always opens.
    Model generations can contain unbalanced quotes; the speech-verb rule resyncs them.
    """
    out: list[bool] = []
    inside = False
    for i, tok in enumerate(tokens):
        if tok in ("<bos>", "<eos>"):
            inside = False
        if tok == "“":
            inside = True
            out.append(True)
            continue
        if tok == "”":
            inside = False
        if tok != '"':
            out.append(False)
            continue
        after_speech = i >= 2 and tokens[i - 1] in (",", ":") and tokens[i - 2].lower() in SPEECH_VERBS
        is_open = after_speech or not inside
        inside = is_open
        out.append(is_open)
    return out


def detokenize(tokens: Sequence[str]) -> str:
    """Join word tokens into natural text: ``Hi , "Tom` -> ``Hi, "Tom``; ``Let ' s`` -> ``Let's``."""
    opens = opening_quotes(tokens)
    pieces: list[str] = []
    glue_next = True  # no space before the first token
    for tok, is_open in zip(tokens, opens):
        closing_quote = tok == '"' and not is_open
        attach_left = tok in _ATTACH_LEFT or tok == "'" or closing_quote
        if pieces and not glue_next and not attach_left:
            pieces.append(" ")
        pieces.append(tok)
        # An apostrophe glues both sides (didn't, Lily's); an opening quote glues right.
        glue_next = tok == "'" or tok in _ATTACH_RIGHT or (tok == '"' and is_open)
    return "".join(pieces)
