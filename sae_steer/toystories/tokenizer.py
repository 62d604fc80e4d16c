"""A word-level tokenizer for the toy world, usable by ``HookedTransformer``.

Built offline with ``tokenizers`` (WordLevel model, WhitespaceSplit + isolated
punctuation) and wrapped as a ``transformers.PreTrainedTokenizerFast`` so that
``to_tokens``, ``to_string``, ``to_str_tokens`` and ``generate`` all work. Two pitfalls:
the plain ``Whitespace`` pre-tokenizer glues ``."`` into one token, and TransformerLens
needs ``name_or_path`` and ``add_bos_token=True`` in the wrapper's init kwargs (it
re-creates the tokenizer from them otherwise, and crashes with ``KeyError``).
Saved as ``tokenizer.json`` (plain JSON, no pickle) beside the model.
"""
from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from .text import SPECIAL_TOKENS, detokenize

NAME = "toystories"
TOKENIZER_FILE = "tokenizer.json"


class ToyTokenizer(PreTrainedTokenizerFast):
    """PreTrainedTokenizerFast whose decoding follows the world's spacing rules.

    A `tokenizers` decoder cannot tell an opening quote from a closing one, so we decode
    in Python with :func:`detokenize` (the rule the generator used to write the text).
    """

    def _decode(self, token_ids, skip_special_tokens: bool = False,
                clean_up_tokenization_spaces: bool | None = None, **kwargs) -> str:
        if isinstance(token_ids, int):
            token_ids = [token_ids]
        if isinstance(token_ids, dict):
            token_ids = token_ids["input_ids"]
        tokens = self.convert_ids_to_tokens(list(token_ids), skip_special_tokens=skip_special_tokens)
        return detokenize(tokens)

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        return detokenize(tokens)


def build_vocab(token_lists: Iterable[Sequence[str]]) -> list[str]:
    """Special tokens, then every word seen, most frequent first (ties alphabetical)."""
    counts = Counter(tok for toks in token_lists for tok in toks)
    words = sorted((w for w in counts if w not in SPECIAL_TOKENS), key=lambda w: (-counts[w], w))
    return list(SPECIAL_TOKENS) + words


def _wrap(backend: Tokenizer) -> ToyTokenizer:
    return ToyTokenizer(
        tokenizer_object=backend, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
        unk_token="<unk>", name_or_path=NAME, add_bos_token=True, add_eos_token=False,
        padding_side="right", model_max_length=1_000_000,
    )


def build_tokenizer(vocab: Sequence[str]) -> ToyTokenizer:
    """A tokenizer whose id ``i`` is ``vocab[i]``; ``vocab`` must start with SPECIAL_TOKENS."""
    if tuple(vocab[:len(SPECIAL_TOKENS)]) != SPECIAL_TOKENS:
        raise ValueError(f"vocab must start with the special tokens {SPECIAL_TOKENS}")
    if len(set(vocab)) != len(vocab):
        raise ValueError("vocab has duplicate entries")
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(vocab)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation("isolated")]
    )
    return _wrap(backend)


def save_tokenizer(tokenizer: PreTrainedTokenizerFast, directory: str | os.PathLike) -> Path:
    """Write ``tokenizer.json`` into ``directory`` (the backend's own JSON format)."""
    path = Path(directory) / TOKENIZER_FILE
    tokenizer.backend_tokenizer.save(str(path))
    return path


def load_tokenizer(directory: str | os.PathLike) -> ToyTokenizer:
    """Load the ``tokenizer.json`` written by :func:`save_tokenizer`."""
    path = Path(directory) / TOKENIZER_FILE
    if not path.exists():
        raise FileNotFoundError(f"no toy tokenizer at {path}; build the world with load_model('toystories')")
    return _wrap(Tokenizer.from_file(str(path)))
