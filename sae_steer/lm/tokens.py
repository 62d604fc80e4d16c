"""Text to token rows, and rows to one padded batch: the one way every stage does both.

Every text is read as ``BOS + its tokens``, tokenized whole (no cut at the context), and
a text longer than the context becomes several windows of ``context_size - 1`` tokens,
each starting with BOS (the SAELens / llama2.c convention the training harvest uses), so
no stage reads a text differently from the others or silently drops its end.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Bool, Int
from torch import Tensor

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer


def text_ids(model: HookedTransformer, text: str) -> list[int]:
    """``text``'s token ids without BOS, tokenized whole (ValueError without a tokenizer)."""
    if model.tokenizer is None:
        raise ValueError("this model has no tokenizer: pass token tensors")
    return list(model.tokenizer(text, add_special_tokens=False)["input_ids"])


def tokenize(model: HookedTransformer, text: str) -> Int[Tensor, " n"]:
    """``BOS + text``'s token ids as one 1-D CPU row, however long (a prompt, say)."""
    ids = text_ids(model, text)
    return torch.tensor([model.tokenizer.bos_token_id] + ids, dtype=torch.long)


def windows(bos: int, ids: list[int], context_size: int, truncate: bool = False
            ) -> list[list[int]]:
    """``ids`` as rows of at most ``context_size`` tokens, each ``BOS + a slice`` (one row
    when it fits, or with ``truncate``: then the rest is dropped)."""
    body = context_size - 1  # tokens per window after its BOS
    if body == 0 or truncate or len(ids) <= body:
        return [[bos] + ids[:body]]
    return [[bos] + ids[i:i + body] for i in range(0, len(ids), body)]


def text_rows(model: HookedTransformer, texts: Iterable[Any], context_size: int | None = None
              ) -> list[Int[Tensor, " n"]]:
    """Token rows for ``texts``: strings tokenized with BOS and windowed at ``context_size``
    (None: the model's ``n_ctx``); token ids (tensors, lists) are taken as they are."""
    size = model.cfg.n_ctx if context_size is None else context_size
    rows = []
    for t in [texts] if isinstance(texts, str) else texts:
        if isinstance(t, str):
            ids = text_ids(model, t)
            rows += [torch.tensor(w, dtype=torch.long)
                     for w in windows(model.tokenizer.bos_token_id, ids, size)]
        else:
            rows.append(torch.as_tensor(t, dtype=torch.long).flatten().cpu())
    return rows


def pad_rows(rows: Sequence[Sequence[int] | Tensor], fill: int = 0, length: int | None = None
             ) -> tuple[Int[Tensor, "n length"], Bool[Tensor, "n length"]]:
    """1-D token rows right-padded with ``fill`` to ``length`` (None: the longest row), and
    the mask of real tokens.

    Right padding is safe for every causal read: no real token attends to the padding
    after it, so a padded row's activations and NLLs equal the row's own.
    """
    width = max(len(r) for r in rows) if length is None else length
    tokens = torch.full((len(rows), width), fill, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.bool)
    for j, row in enumerate(rows):
        tokens[j, : len(row)] = torch.as_tensor(row, dtype=torch.long)
        mask[j, : len(row)] = True
    return tokens, mask
