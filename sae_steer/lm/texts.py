"""Text sources, token batches, and token ids back to display strings.

``load_texts("toystories")`` is the offline world's corpus (the exact stories the toy
model trained on, then fresh ones from the same generator); ``load_texts("tinystories")``
streams the real ``roneneldan/TinyStories`` data set through ``datasets`` (or a local
JSON-lines file with the same ``{"text": ...}`` schema via ``data_files=``).
"""
from __future__ import annotations

import dataclasses
import functools
import itertools
import os
from array import array
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Bool, Int
from torch import Tensor
from tqdm.auto import tqdm
from transformer_lens import HookedTransformer

from sae_steer.lm.tokens import pad_rows, windows
from sae_steer.toystories.grammar import Story, generate_stories
from sae_steer.toystories.lm import world_config

TOY_SOURCE = "toystories"
REAL_SOURCE = "tinystories"
REAL_DATASET = "roneneldan/TinyStories"
_REAL_ALIASES = {REAL_SOURCE, REAL_DATASET, "TinyStories"}
SPLITS = ("train", "validation")


class DataDownloadError(ConnectionError):
    """The real data set could not be fetched (no network, or the hub refused)."""


def load_texts(source: str = TOY_SOURCE, split: str = "train", n: int | None = None, *,
               preset: str = "small", data_files: str | os.PathLike | list | dict | None = None,
               progress: bool = True) -> Iterable[str]:
    """Story texts from ``source``: a list for the toy world, a lazy stream for TinyStories.

    ``n=None`` means the whole split: the preset's training or validation corpus for the
    toy world (asking for more than the training corpus continues the same stream with
    stories the model never saw), every row for TinyStories, streamed in batches of rows
    through ``datasets`` with a progress bar counted in texts (``progress=False``: none).
    """
    _check_split_n(split, n)
    if data_files is not None:  # a local file of TinyStories' schema, whatever the default source
        if source not in _REAL_ALIASES | {TOY_SOURCE}:
            raise ValueError(f"data_files= reads a local JSON file of TinyStories' schema; "
                             f"it does not combine with source={source!r}")
        return _real_texts(split, n, data_files, progress)
    if source == TOY_SOURCE or source.startswith(TOY_SOURCE + "/"):
        preset = source.split("/", 1)[1] if "/" in source else preset
        return _toy_texts(split, n, preset)
    if source in _REAL_ALIASES:
        return _real_texts(split, n, None, progress)
    raise ValueError(f"unknown text source {source!r}; known sources: '{TOY_SOURCE}' (offline), "
                     f"'{REAL_SOURCE}' ({REAL_DATASET}; or pass data_files= for a local JSON file)")


def load_stories(split: str = "train", n: int | None = None, *, preset: str = "small",
                 ) -> list[Story]:
    """The toy world's stories with their planted per-token labels (``toystories.Story``).

    Same stories, in the same order, as ``load_texts("toystories", split, n, preset=preset)``.
    """
    _check_split_n(split, n)
    cfg = world_config(preset)
    if n is None:
        n = cfg.n_train_stories if split == "train" else cfg.n_val_stories
    return generate_stories(n, cfg.seed, split)


def _check_split_n(split: str, n: int | None) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if n is not None and (not isinstance(n, int) or n <= 0):
        raise ValueError(f"n must be None or a positive integer, got {n!r}")


def _toy_texts(split: str, n: int | None, preset: str) -> list[str]:
    return [s.text for s in load_stories(split, n, preset=preset)]


def _real_texts(split: str, n: int | None, data_files, progress: bool) -> Iterator[str]:
    import datasets  # heavy (pyarrow, ~1 s): only the real data set needs it
    if data_files is not None:
        _check_local_files(data_files)
        # A dict of files names its own splits; a single file or list is all "train".
        ds_split = split if isinstance(data_files, dict) else "train"
        where = f"data_files={str(data_files)!r}"
        try:
            ds = datasets.load_dataset("json", data_files=_as_str(data_files), split=ds_split, streaming=True)
        except StopIteration as e:  # datasets' way of saying "the file has no rows"
            raise ValueError(f"no texts in {where}") from e
    else:
        try:
            ds = datasets.load_dataset(REAL_DATASET, split=split, streaming=True)
        except Exception as e:  # the hub raises many types: ConnectionError, OSError, HfHubHTTPError...
            raise DataDownloadError(
                f"could not load {REAL_DATASET} from the HuggingFace hub ({type(e).__name__}); "
                f"without network use the offline stories: load_texts('{TOY_SOURCE}')"
            ) from e
        where, ds_split = f"{REAL_DATASET} ({split})", split
    batches = ds.iter(batch_size=_ROWS_PER_READ)  # datasets streams Arrow batches of rows
    first = next(batches, None)  # fail now (not mid-training) on an empty or mis-shaped source
    if first is None or not any(len(v) for v in first.values()):
        raise ValueError(f"no texts in {where}")
    if "text" not in first:
        raise ValueError(f"rows of {where} have no 'text' field (fields: {sorted(first)})")
    texts = itertools.chain.from_iterable(b["text"] for b in itertools.chain([first], batches))
    texts = itertools.islice(texts, n) if n is not None else texts
    return _counted(texts, n if n is not None else _split_rows(ds, ds_split), where, progress)


_ROWS_PER_READ = 1000


def _split_rows(ds, split: str) -> int | None:
    """Rows in the split when the data set's card says (the hub's TinyStories does)."""
    try:
        return int(ds.info.splits[split].num_examples) or None
    except (AttributeError, KeyError, TypeError):
        return None


def _counted(texts: Iterator[str], total: int | None, where: str, progress: bool
             ) -> Iterator[str]:
    """``texts`` with a progress bar counted in texts (tokens are not known before a
    tokenizer sees them; ``token_batches(progress=True)`` counts those)."""
    with tqdm(texts, total=total, unit="text", unit_scale=True, desc="stream texts",
              disable=not progress) as bar:
        yield from bar


def _as_str(data_files):
    if isinstance(data_files, dict):
        return {k: _as_str(v) for k, v in data_files.items()}
    if isinstance(data_files, (list, tuple)):
        return [str(f) for f in data_files]
    return str(data_files)


def _check_local_files(data_files) -> None:
    files = list(data_files.values()) if isinstance(data_files, dict) else [data_files]
    for f in itertools.chain.from_iterable(x if isinstance(x, (list, tuple)) else [x] for x in files):
        if "://" not in str(f) and not any(c in str(f) for c in "*?[") and not Path(f).exists():
            raise FileNotFoundError(f"data file {f} does not exist")


LONG_TEXTS = ("window", "truncate")


@dataclasses.dataclass
class TokenCount:
    """What ``token_batches`` has read so far (updated as its batches are consumed)."""

    texts: int = 0
    """Texts read from the source."""
    windows: int = 0
    """Rows produced: one per text, more for texts longer than the context."""
    tokens: int = 0
    """Real tokens in those rows, BOS included (padding not)."""
    truncated: int = 0
    """Tokens cut off and never batched (only with ``long_texts="truncate"``)."""
    window_text: array = dataclasses.field(default_factory=lambda: array("q"), repr=False)
    """For each row produced so far, the index of its text in the stream."""

    def as_dict(self) -> dict[str, int]:
        return {"texts": self.texts, "windows": self.windows, "tokens": self.tokens,
                "truncated": self.truncated}


def token_batches(model: HookedTransformer, texts: Iterable[str], context_size: int, batch_size: int,
                  *, long_texts: str = "window", count: TokenCount | None = None,
                  progress: bool = False,
                  ) -> Iterator[tuple[Int[Tensor, "batch ctx"], Bool[Tensor, "batch ctx"]]]:
    """Batches of ``(tokens [b, ctx], mask [b, ctx])`` on the model's device.

    Each text becomes ``BOS + tokens``. A text longer than ``context_size`` is split into
    windows of ``context_size - 1`` tokens, each starting with BOS (the SAELens / llama2.c
    convention), so no text is lost; ``long_texts="truncate"`` keeps only the first window
    (and counts what it cut in ``count.truncated``). Rows are right-padded; ``mask`` marks
    real tokens (BOS included). A batch holds ``batch_size`` rows, the last may be smaller.
    ``count`` (a :class:`TokenCount`) is filled in as batches go out; ``progress`` shows a
    bar counted in tokens.
    """
    tokenizer = model.tokenizer
    if tokenizer is None:
        raise ValueError("token_batches needs a model with a tokenizer (load_model() gives one)")
    if not isinstance(context_size, int) or not 1 <= context_size <= model.cfg.n_ctx:
        raise ValueError(f"context_size must be in 1..{model.cfg.n_ctx} (the model's n_ctx), "
                         f"got {context_size!r}")
    if not isinstance(batch_size, int) or batch_size <= 0:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if isinstance(texts, str):
        raise ValueError("texts must be an iterable of strings, not one string; wrap it in a list")
    if long_texts not in LONG_TEXTS:
        raise ValueError(f"long_texts must be one of {LONG_TEXTS}, got {long_texts!r}")
    pad_id = next(i for i in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0) if i is not None)
    count = count if count is not None else TokenCount()
    bar = tqdm(unit="tok", unit_scale=True, desc="read texts", disable=not progress)
    it, pending = iter(texts), []
    try:
        while chunk := list(itertools.islice(it, batch_size)):
            for i, seq in enumerate(tokenizer(chunk, add_special_tokens=False)["input_ids"]):
                windows = _windows(tokenizer.bos_token_id, list(seq), context_size, long_texts,
                                   count)
                pending.extend(windows)
                count.window_text.extend([count.texts + i] * len(windows))
            count.texts += len(chunk)
            while len(pending) >= batch_size:
                rows, pending = pending[:batch_size], pending[batch_size:]
                yield _pad(rows, context_size, pad_id, model.cfg.device, count, bar)
        if pending:
            yield _pad(pending, context_size, pad_id, model.cfg.device, count, bar)
    finally:
        bar.close()
    if count.texts == 0:
        raise ValueError("token_batches got no texts")


def _windows(bos: int, seq: list[int], context_size: int, long_texts: str,
             count: TokenCount) -> list[list[int]]:
    truncate = long_texts == "truncate"
    if truncate or context_size == 1:
        count.truncated += max(len(seq) - (context_size - 1), 0)
    return windows(bos, seq, context_size, truncate)


def _pad(rows: list[list[int]], context_size: int, pad_id: int, device, count: TokenCount,
         bar) -> tuple[Tensor, Tensor]:
    tokens, mask = pad_rows(rows, pad_id, context_size)
    n_real = int(mask.sum())
    count.windows += len(rows)
    count.tokens += n_real
    bar.update(n_real)
    return tokens.to(device), mask.to(device)


def display_tokens(model: Any, token_ids: Sequence[int]) -> list[str]:
    """Token strings whose concatenation reads like the decoded text: the one way from
    token ids to what a reader sees, for excerpts, re-scored text and decoder-row tokens.

    Each token's string is what it adds to the decoded prefix, so a word-level
    tokenizer that inserts spaces when decoding gives ``" upon"`` (the seed's
    ``Once ▁ upon ▁``) and a byte-level BPE tokenizer gives its own ``" upon"`` and
    sub-word pieces (``" fl"``, ``"ood"``). Models without a tokenizer give ``"<id>"``.
    """
    token_ids = [int(t) for t in token_ids]
    tok = getattr(model, "tokenizer", None)
    if tok is None:
        return [f"<{i}>" for i in token_ids]
    return list(_display_tokens(tok, tuple(token_ids)))


@functools.lru_cache(maxsize=4096)
def _display_tokens(tok: Any, token_ids: tuple[int, ...]) -> tuple[str, ...]:
    # Decoding every prefix costs O(len^2); measurements re-read the same texts (one
    # baseline against many steered features), so each text is decoded once.
    out, prev = [], ""
    for n in range(1, len(token_ids) + 1):
        text = tok.decode(token_ids[:n], clean_up_tokenization_spaces=False)
        if text.startswith(prev):
            out.append(text[len(prev):])
        else:  # decoding is not prefix-stable here: fall back to the token alone
            out.append(tok.decode(token_ids[n - 1:n], clean_up_tokenization_spaces=False))
        prev = text
    return tuple(out)


def to_text(model: Any, token_ids: Sequence[int]) -> str:
    """The text of ``token_ids`` without special tokens (ids joined by spaces without a
    tokenizer)."""
    token_ids = [int(t) for t in token_ids]
    if getattr(model, "tokenizer", None) is None:
        return " ".join(str(t) for t in token_ids)
    return model.tokenizer.decode(token_ids, skip_special_tokens=True)


def token_strings(model: Any, token_ids: Sequence[int]) -> list[str]:
    """The tokenizer's own string for each token (``model.to_str_tokens``): what a
    rule-based labeler matches, one string per position (``str(id)`` without a tokenizer)."""
    token_ids = [int(t) for t in token_ids]
    if getattr(model, "tokenizer", None) is None:
        return [str(t) for t in token_ids]
    return list(model.to_str_tokens(torch.tensor(token_ids, dtype=torch.long)))
