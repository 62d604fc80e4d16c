"""Which features steer? The screen: the selection engine over every alive feature.

A proxy cannot tell which features steer on small models (the output score's top features
passed the seed's test 0 times out of 12 on a real TinyStories model), so the screen runs
the test itself, on every candidate: the selection engine (``select.py``) with the
steerability target (a feature succeeds by its own firing or its own top words,
``target.py``), candidates in output-score order, and the feature's top token written into
the prompt as the prompting baseline. A screen is saved (default: in the cache, keyed by
everything it depends on) as it goes, so an interrupted one resumes.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sae_steer.config import SelectConfig, SteerConfig, steer_config
from sae_steer.config.base import is_integer
from sae_steer.fingerprint import model_fingerprint, sae_fingerprint
from sae_steer.fsutil import cache_dir
from sae_steer.inspect import FeatureSearch
from sae_steer.lm import model_name
from sae_steer.measure.concepts import Concept
from sae_steer.measure.screen_results import SteerabilityScreen
from sae_steer.measure.select import select_features
from sae_steer.measure.steerability import feature_scores
from sae_steer.measure.target import Target
from sae_steer.steer import Steerer
from sae_steer.steer.generate import prompt_tokens

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer

_SCREEN_VERSION = 2  # bump when a screen's figures would change for the same inputs


def own_words(search: FeatureSearch, feature: int, model: Any, n: int) -> Concept | None:
    """The concept of ``feature``'s top ``n`` words in ``search`` (None: it never fired)."""
    try:
        return Concept.from_feature(search, feature, model, n=n)
    except ValueError:  # never fired in the search: no words to look for
        return None


def steerability_target(model: HookedTransformer, search: FeatureSearch,
                        features: Sequence[int], steer: SteerConfig, n_words: int) -> Target:
    """The screen's target for ``features``: own firing or own words; the prompting
    baseline writes each feature's top token after the prompt."""
    prompt = prompt_tokens(model, steer.prompt).tolist()
    words, prompts = {}, {}
    for f in features:
        words[f] = own_words(search, f, model, n_words)
        top = search.top_token_ids(f, 1)
        if top:
            prompts[f] = prompt + top
    return Target.steerability(words, prompts)


def screen_cache_path(model: HookedTransformer, sae: Any, search: FeatureSearch,
                      cfg: SelectConfig, steer: SteerConfig, candidates: Sequence[int]) -> Path:
    """``cache_dir()/screens/<sae hash>-<hash of everything else>``: one per screen."""
    key = json.dumps({"cfg": cfg.to_dict(), "steer": steer.to_dict(),
                      "model": model_fingerprint(model), "candidates": list(candidates),
                      "search": [search.n_tokens, search.meta.get("source"), search.cfg.to_dict()],
                      "version": _SCREEN_VERSION}, sort_keys=True, default=str)
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return Path(cache_dir()) / "screens" / f"{sae_fingerprint(sae)[:16]}-{digest}"


def _candidates(model: HookedTransformer, sae: Any, search: FeatureSearch, features: Any,
                scores: Any, norm: float, progress: bool) -> tuple[list[int], Any]:
    """The features to screen in output-score order, and the scores that ordered them."""
    count = is_integer(features)
    if count and features < 1:
        raise ValueError(f"features must be feature indices or a positive count, got {features!r}")
    pool = search.alive() if features is None or count else list(dict.fromkeys(int(f) for f in features))
    for f in pool if features is not None and not count else ():
        search.check_feature(f)  # before any scoring: a bad index fails at once
    if not pool:
        raise ValueError("no feature to screen: the search saw none fire")
    if scores is None:
        scores = feature_scores(model, sae, search=search, resid_norm=norm, progress=progress)
    if count:  # the top ones by output score among the alive
        pool = scores.top(int(features), alive=search.density > 0)
    out = scores.output_score
    return sorted(pool, key=lambda f: (-float(out[f]), f)), scores


def screen_features(
    model: HookedTransformer, sae: Any, search: FeatureSearch, cfg: SelectConfig | None = None,
    steer: SteerConfig | None = None, *, features: Sequence[int] | int | None = None,
    scores: Any = None, path: str | os.PathLike | None = None, progress: bool = True,
) -> SteerabilityScreen:
    """Screen the alive features of ``search`` (or ``features``) for steering: rank them,
    confirm the best on fresh seeds, report the recommended on further fresh seeds beside
    a random direction and prompting (``select.py``). Returns a ``SteerabilityScreen``:
    ``.recommended(n)`` lists recommended features, ``.scale(f)`` their relative scale,
    ``.promise`` what recommended means. ``features``: feature indices, or a count n (the
    top n alive features by output score); None: every alive feature.

    ``cfg``: how much to measure (``SelectConfig``); ``steer``: how samples are drawn
    (prompt, length, temperature, positions; scales are always relative to the typical
    residual norm, ``steer.resid_norm`` or measured once). ``scores``: a ``FeatureScores``
    to order the candidates by (computed when None). The screen is saved under ``path``
    (default: the cache) as it goes, and a second call resumes or loads it.
    """
    cfg = cfg or SelectConfig()
    search.check_sae(sae, "the search")
    search.check_model(model, "the search")
    steerer = Steerer.for_config(model, sae, steer_config(steer))
    steer = steer_config(steer, scale_unit="relative", resid_norm=steerer.resid_norm,
                         mode="decoder_row")
    candidates, scores = _candidates(model, sae, search, features, scores, steerer.resid_norm,
                                     progress)
    path = Path(path) if path is not None else screen_cache_path(model, sae, search, cfg, steer,
                                                                 candidates)
    target = steerability_target(model, search, candidates, steer, cfg.n_words)
    screen = select_features(model, sae, candidates, target, cfg, steer, path=path,
                             extra={f: {"output_score": float(scores.output_score[f])}
                                    for f in candidates},
                             progress=progress)
    screen.meta["model"] = model_name(model)
    screen.scores = scores
    return screen
