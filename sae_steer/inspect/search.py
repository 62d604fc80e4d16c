"""Streaming feature statistics: one pass over a text set fills every feature's state.

Batch by batch: run the model up to the SAE's hook (``lm.hook_activations``,
``stop_at_layer``), encode, and merge the batch into a bounded ``SearchState``
(``state.py``). The results class and its save/load live in ``results.py``; searches are
cached on disk by hashes of the SAE, the model and the config.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from sae_steer.config import SearchConfig, replace_config
from sae_steer.fingerprint import model_fingerprint, sae_fingerprint
from sae_steer.fsutil import cache_dir
from sae_steer.inspect.results import FeatureSearch
from sae_steer.inspect.state import SearchState
from sae_steer.lm import hook_activations, token_batches, validate_hook
from sae_steer.lm.texts import TokenCount

_SEARCH_VERSION = 2  # 2: texts longer than the context are windowed, not truncated


def search_token_batches(
    model, sae, batches: Iterable[tuple[Tensor, Tensor]], cfg: SearchConfig | None = None, *,
    hook_name: str | None = None, progress: bool = True, total: int | None = None,
    source: str | None = None, count: TokenCount | None = None,
) -> FeatureSearch:
    """Search over ``(tokens [b, pos], mask [b, pos])`` batches (see ``lm.token_batches``).

    Each row is one excerpt source (a window of a text). ``count``: the ``TokenCount`` that
    ``token_batches`` fills; then the bar counts texts, not rows, and the result's meta
    says how many texts (``n_texts``) and windows (``n_windows``) were read.
    """
    cfg = cfg or SearchConfig()
    hook = hook_name or getattr(sae.cfg, "hook_name", None)
    if hook is None:
        raise ValueError("the SAE's cfg.hook_name is not set: pass hook_name= "
                         "(the hook it was trained on)")
    validate_hook(model, hook)
    device = sae.W_dec.device
    state = SearchState(sae.W_dec.shape[0], model.cfg.d_vocab, cfg, device)
    bar = tqdm(total=total, unit="text", desc="feature search", disable=not progress)
    try:
        for tokens, mask in batches:
            with torch.no_grad():  # encode would otherwise build a graph per batch
                feats = sae.encode(hook_activations(model, tokens, hook).to(device))
            state.update(tokens.to(device), mask.to(device), feats, inplace=True)
            bar.update(tokens.shape[0] if count is None else count.texts - bar.n)
    finally:
        bar.close()
    _check_enough(state, cfg)
    meta = {"hook_name": hook, "sae_hash": sae_fingerprint(sae), "source": source,
            "model_hash": model_fingerprint(model),
            "model_name": getattr(sae.cfg, "model_name", None)}
    result = state.finish(meta)
    if count is not None:  # excerpts name their text, not the window it was read in
        result.meta.update(n_texts=count.texts, n_windows=count.windows)
        text_of = torch.tensor(count.window_text.tolist(), dtype=torch.long)
        for name in ("top_seq", "band_seq"):
            seq = result.tensors[name]
            result.tensors[name] = torch.where(seq >= 0, text_of[seq.clamp_min(0)], seq)
    return result


def _check_enough(state: SearchState, cfg: SearchConfig) -> None:
    if state.n_texts == 0 or state.n_tokens == 0:
        raise ValueError(
            f"the text set is empty ({state.n_texts} texts, {state.n_tokens} tokens after "
            "dropping BOS and padding): pass a non-empty iterable of texts")
    if state.n_texts < cfg.k:
        raise ValueError(
            f"the text set is too short: {state.n_texts} texts for top-{cfg.k} excerpts "
            f"(one excerpt per text, or per window of a text longer than context_size); "
            f"pass at least {cfg.k} texts or lower SearchConfig.k")


def search_features(
    model, sae, texts: Iterable[str], cfg: SearchConfig | None = None, *,
    hook_name: str | None = None, progress: bool = True, source: str | None = None,
    **settings: Any,
) -> FeatureSearch:
    """Scan ``texts`` (e.g. ``load_texts("toystories", split="validation")``) once.

    ``cfg`` (default ``SearchConfig()``) says how; keyword ``settings`` are shortcuts for
    its fields (``k=20, n_texts=1000``).

    Texts longer than ``cfg.context_size`` are read whole, in windows that each start
    with BOS; ``result.n_tokens`` counts every token scanned (BOS and padding not).

    Returns every feature's top excerpts, band samples, density, histogram and top
    tokens (a :class:`FeatureSearch`; ``.save(dir)`` / ``FeatureSearch.load(dir, sae=)``).
    """
    cfg = replace_config(cfg or SearchConfig(), **settings)
    if isinstance(texts, str):
        raise ValueError("texts must be an iterable of strings, not one string")
    total = cfg.n_texts or (len(texts) if hasattr(texts, "__len__") else None)
    texts = itertools.islice(iter(texts), cfg.n_texts) if cfg.n_texts else texts
    count = TokenCount()
    batches: Iterator = token_batches(model, texts, cfg.context_size, cfg.batch_size,
                                      count=count)
    return search_token_batches(model, sae, batches, cfg, hook_name=hook_name,
                                progress=progress, total=total, source=source, count=count)


def search_cache_path(model, sae, cfg: SearchConfig, source: str) -> Path:
    """``cache_dir()/searches/<sae hash>-<model+config hash>-<source>``: one per search."""
    key = json.dumps({"cfg": cfg.to_dict(), "model": model_fingerprint(model),
                      "version": _SEARCH_VERSION}, sort_keys=True)
    cfg_hash = hashlib.sha256(key.encode()).hexdigest()
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", source)
    return Path(cache_dir()) / "searches" / f"{sae_fingerprint(sae)[:16]}-{cfg_hash[:8]}-{slug}"


def load_or_search(
    model, sae, texts_fn: Callable[[], Iterable[str]], cfg: SearchConfig | None = None, *,
    source: str, path: str | os.PathLike | None = None, progress: bool = True, **settings: Any,
) -> FeatureSearch:
    """Load the saved search for (this SAE, cfg, source), or run it once and save it.

    ``cfg`` and keyword ``settings`` as ``search_features`` takes them.

    ``texts_fn`` is only called when nothing is saved, e.g.
    ``lambda: load_texts("toystories", split="validation")``. ``source`` names the text
    set (it is part of the cache key, with hashes of the SAE's and the model's weights).
    An explicit ``path`` that holds a search for another SAE or model raises a
    ValueError rather than being overwritten.
    """
    cfg = replace_config(cfg or SearchConfig(), **settings)
    path = Path(path) if path is not None else search_cache_path(model, sae, cfg, source)
    if (path / "search.json").exists():
        result = FeatureSearch.load(path, sae=sae, model=model)
        if result.cfg == cfg and result.meta.get("source") == source:
            return result
    result = search_features(model, sae, texts_fn(), cfg, progress=progress, source=source)
    result.save(path)
    return result
