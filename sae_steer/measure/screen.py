"""Which features steer? Measure every candidate, then confirm the best on fresh seeds.

A proxy cannot tell which features steer on small models (the output score's top features
passed the seed's test 0 times out of 12 on a real TinyStories model), so the screen runs
the test itself, on every candidate:

1. **Stage 1** steers each candidate at each of ``ScreenConfig.scales`` (relative to the
   typical residual norm) on ``n_samples`` samples against one shared unsteered baseline
   (same seeds), hundreds of rows per batch (``steer.batch``), and re-scores every row with
   the unsteered model (``lm.score_rows``). Per feature: its fire-rate gain, the lift of
   its own top words (``Concept.from_feature``), NLL and repetition costs, each with its
   interval, and its best scale. Eight samples rank; they do not decide.
2. **Stage 2** measures the ``n_confirm`` best again on ``n_final`` fresh samples per side
   (seeds disjoint from stage 1's), as a full ``SteeringReport`` with the random-direction
   control. A feature is *confirmed* when it passes the rule of ``config.rules`` there, by
   its own firing, its own words, or both; the screen records which.

Stage 1 is written to disk after every batch, so an interrupted screen resumes where it
stopped. Everything here works for any model and tokenizer.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from tqdm.auto import tqdm

from sae_steer.config import (COST_BUDGET, FIRES_GAIN_TARGET, LIFT_TARGET, ScreenConfig,
                              SteerConfig, best_scale, passes, sample_seeds, steer_config)
from sae_steer.fingerprint import model_fingerprint, sae_fingerprint
from sae_steer.fsutil import cache_dir
from sae_steer.inspect import FeatureSearch
from sae_steer.lm import model_name, score_rows
from sae_steer.measure.concepts import Concept
from sae_steer.measure.report import SteeringReport, run_reports
from sae_steer.measure.sides import Comparison, SideStats, compare, side_stats
from sae_steer.measure.rescore import Measured, require_clean
from sae_steer.measure.screen_results import DEFINITIONS, SteerabilityScreen
from sae_steer.measure.steerability import feature_scores
from sae_steer.steer import Generation, Steerer
from sae_steer.steer.batch import generate_rows, generation_rows

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer

_SCREEN_VERSION = 1  # bump when stage-1 figures would change for the same inputs


def _own_words(search: FeatureSearch, feature: int, model: Any, n: int) -> Concept | None:
    try:
        return Concept.from_feature(search, feature, model, n=n)
    except ValueError:  # never fired in the search: no words to look for
        return None


def strength(comparison: Comparison, feature: int) -> float:
    """How far the better definition's lower bound reaches toward its target (>= 1: it
    passes, cost aside): ranks candidates by what the rule asks, not by point estimates."""
    out = -math.inf
    gain = comparison.fires_gain[feature].lo
    if gain == gain:  # NaN: no samples
        out = gain / FIRES_GAIN_TARGET
    if comparison.lift is not None and comparison.lift.lo == comparison.lift.lo:
        out = max(out, comparison.lift.lo / LIFT_TARGET)
    return out


def passed(comparison: Comparison, feature: int) -> list[str]:
    """The definitions (``DEFINITIONS``) by which this run passes the rule."""
    cost, out = comparison.nll_cost.value, []
    if passes(comparison.fires_gain[feature].lo, cost, FIRES_GAIN_TARGET):
        out.append(DEFINITIONS[0])
    if comparison.lift is not None and passes(comparison.lift.lo, cost, LIFT_TARGET):
        out.append(DEFINITIONS[1])
    return out


def _row(feature: int, scale: float, side: SideStats, base: SideStats, cmp: Comparison,
         words: Concept | None) -> dict[str, Any]:
    gain, lift = cmp.fires_gain[feature], cmp.lift
    nan = math.nan
    return {"feature": feature, "scale": scale, "n_samples": side.n_samples,
            "fires_steered": side.fires[feature].value,
            "fires_unsteered": base.fires[feature].value, "fires_gain": gain.value,
            "fires_gain_lo": gain.lo, "fires_gain_hi": gain.hi,
            "words": words.name if words is not None else "",
            "lift": lift.value if lift else nan, "lift_lo": lift.lo if lift else nan,
            "lift_hi": lift.hi if lift else nan,
            "events_steered": lift.numerator if lift else 0,
            "events_unsteered": lift.denominator if lift else 0,
            "nll_cost": cmp.nll_cost.value, "nll_cost_hi": cmp.nll_cost.hi,
            "rep_cost": cmp.rep_cost.value, "strength": strength(cmp, feature),
            "passed": passed(cmp, feature)}


def _columns(m: Measured, lo: int, hi: int, cols: Sequence[int]) -> Measured:
    return Measured([a[:, list(cols)] for a in m.acts[lo:hi]], m.nll[lo:hi])


def _rescore_own(model: HookedTransformer, sae: Any, hook: str, gen: Generation,
                 own: Sequence[int]) -> Measured:
    """Re-score every row of ``gen`` with the unsteered model, keeping only the activation
    of its own feature ``own[j]`` (one batched pass for rows steered with many features)."""
    require_clean(model)
    own_t = torch.as_tensor(list(own), dtype=torch.long, device=sae.W_dec.device)

    def read(act: torch.Tensor, rows: range) -> torch.Tensor:
        feats = sae.encode(act.to(sae.W_dec.device))  # [b, pos, d_sae]
        idx = own_t[rows.start : rows.stop][:, None, None].expand(-1, feats.shape[1], 1)
        return feats.gather(-1, idx)

    scored = score_rows(model, gen.tokens, hook, read)
    return Measured(scored.reads, scored.nll)


def _baseline(model: HookedTransformer, sae: Any, steer: SteerConfig, hook: str, seed: int,
              n: int, features: Sequence[int]) -> tuple[Generation, Measured]:
    """The shared unsteered samples and their re-scoring for every feature in ``features``."""
    require_clean(model)
    gen = generate_rows(model, hook, None, sample_seeds(seed, n), steer)
    feats = torch.as_tensor(list(features), dtype=torch.long, device=sae.W_dec.device)
    scored = score_rows(model, gen.tokens, hook,
                        lambda act, rows: sae.encode(act.to(sae.W_dec.device))[..., feats])
    return gen, Measured(scored.reads, scored.nll)


def _stage1_chunk(model: HookedTransformer, sae: Any, steerer: Steerer, chunk: Sequence[int],
                  cfg: ScreenConfig, steer: SteerConfig, base: tuple[Generation, Measured],
                  column: dict[int, int], words: dict[int, Concept | None]
                  ) -> dict[int, dict[str, Any]]:
    """Stage 1 for the features in ``chunk``: every (feature, scale) on the baseline's seeds."""
    base_gen, base_m = base
    n, thr = len(base_gen.seeds), steer.fire_threshold
    groups = [(f, sc) for f in chunk for sc in cfg.scales]
    deltas = torch.stack([steerer.vector({f: sc}) for f, sc in groups]).repeat_interleave(n, 0)
    gen = generate_rows(model, steerer.hook_name, deltas, base_gen.seeds * len(groups), steer)
    own = _rescore_own(model, sae, steerer.hook_name, gen,
                       [f for f, _ in groups for _ in range(n)])
    out: dict[int, dict[str, Any]] = {}
    for f in chunk:
        u = side_stats(model, sae, base_gen, [f], words[f], thr,
                       measured=_columns(base_m, 0, n, [column[f]]))
        by_scale = []
        for sc in cfg.scales:
            g = groups.index((f, sc))
            s = side_stats(model, sae, gen.part(g * n, (g + 1) * n), [f], words[f], thr,
                           measured=_columns(own, g * n, (g + 1) * n, [0]))
            by_scale.append(_row(f, sc, s, u, compare(s, u), words[f]))
        best = best_scale(list(cfg.scales), [r["strength"] for r in by_scale],
                          [r["nll_cost"] for r in by_scale], 1.0, COST_BUDGET)
        row = dict(by_scale[list(cfg.scales).index(best)])
        row["by_scale"] = [{k: r[k] for k in ("scale", "fires_gain", "fires_gain_lo", "lift",
                                              "lift_lo", "nll_cost", "strength")}
                           for r in by_scale]
        out[f] = row
    return out


def confirm(model: HookedTransformer, sae: Any, picks: Sequence[tuple[int, float]],
            words: dict[int, Concept | None], cfg: ScreenConfig, steer: SteerConfig, *,
            control: bool = True) -> dict[int, SteeringReport]:
    """Stage 2: a full ``SteeringReport`` per (feature, relative scale) in ``picks``, on
    ``cfg.n_final`` seeds from ``cfg.confirm_seed``, with the random-direction control
    (``control=False``: without), all rows in shared batches (``report.run_reports``)."""
    fresh = cfg.confirm_steer(steer)
    reports = run_reports(model, sae, picks, fresh, concept=words, control=control)
    return {f: r for (f, _), r in zip(picks, reports)}


def _confirmation_row(report: SteeringReport, rel: float) -> dict[str, Any]:
    f = report.feature
    row = _row(f, rel, report.steered, report.unsteered, report.vs_unsteered, None)
    row["words"] = report.concept or ""
    row["scale_abs"] = report.scale
    if report.control is not None:
        ctrl = report.control.vs_unsteered
        row.update(control_fires_gain=ctrl.fires_gain[f].value,
                   control_fires_gain_hi=ctrl.fires_gain[f].hi,
                   control_lift_hi=ctrl.lift.hi if ctrl.lift is not None else math.nan)
    return row


def screen_cache_path(model: HookedTransformer, sae: Any, search: FeatureSearch,
                      cfg: ScreenConfig, steer: SteerConfig, candidates: Sequence[int]) -> Path:
    """``cache_dir()/screens/<sae hash>-<hash of everything else>``: one per screen."""
    key = json.dumps({"cfg": cfg.to_dict(), "steer": steer.to_dict(),
                      "model": model_fingerprint(model), "candidates": list(candidates),
                      "search": [search.n_tokens, search.meta.get("source"), search.cfg.to_dict()],
                      "version": _SCREEN_VERSION}, sort_keys=True, default=str)
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return Path(cache_dir()) / "screens" / f"{sae_fingerprint(sae)[:16]}-{digest}"


def _candidates(model: HookedTransformer, sae: Any, search: FeatureSearch, features: Any,
                scores: Any, norm: float, progress: bool) -> tuple[list[int], dict[int, float]]:
    if features is None:
        pool = [int(i) for i in (search.density > 0).nonzero().flatten()]
    else:
        pool = list(dict.fromkeys(int(f) for f in features))
        for f in pool:
            search.check_feature(f)
    if not pool:
        raise ValueError("no feature to screen: the search saw none fire")
    if scores is None:
        scores = feature_scores(model, sae, search=search, resid_norm=norm, progress=progress)
    out = scores.output_score
    ordered = sorted(pool, key=lambda f: (-float(out[f]), f))
    return ordered, {f: float(out[f]) for f in ordered}


def screen_features(
    model: HookedTransformer, sae: Any, search: FeatureSearch, cfg: ScreenConfig | None = None,
    steer: SteerConfig | None = None, *, features: Sequence[int] | None = None,
    scores: Any = None, path: str | os.PathLike | None = None, progress: bool = True,
) -> SteerabilityScreen:
    """Screen the alive features of ``search`` (or ``features``) for steering, then confirm
    the best on fresh seeds (see the module docstring). Returns a ``SteerabilityScreen``:
    ``.recommended(n)`` lists confirmed features, ``.scale(f)`` their relative scale.

    ``cfg``: how much to measure (``ScreenConfig``); ``steer``: how samples are drawn
    (prompt, length, temperature, positions; scales are always relative to the typical
    residual norm, ``steer.resid_norm`` or measured once). ``scores``: a ``FeatureScores``
    to order the candidates by (computed when None). The screen is saved under ``path``
    (default: the cache) after every batch, and a second call resumes or loads it.
    """
    cfg = cfg or ScreenConfig()
    search.check_sae(sae, "the search")
    search.check_model(model, "the search")
    steerer = Steerer.for_config(model, sae, steer_config(steer))
    steer = steer_config(steer, scale_unit="relative", resid_norm=steerer.resid_norm,
                         mode="decoder_row")
    candidates, output = _candidates(model, sae, search, features, scores, steerer.resid_norm,
                                     progress)
    path = Path(path) if path is not None else screen_cache_path(model, sae, search, cfg, steer,
                                                                 candidates)
    screen = _resume(path, candidates, cfg, steer)
    screen.meta.update(model=model_name(model), hook=steerer.hook_name, d_sae=sae.cfg.d_sae)
    words = {f: _own_words(search, f, model, cfg.n_words) for f in candidates}
    todo = [f for f in candidates if f not in screen.stage1]
    t0 = time.perf_counter()
    if todo:
        base = _baseline(model, sae, steer, steerer.hook_name, cfg.seed, cfg.n_samples, candidates)
        column = {f: k for k, f in enumerate(candidates)}
        per_chunk = max(1, generation_rows(model) // (cfg.n_samples * len(cfg.scales)))
        with tqdm(total=len(candidates), initial=len(candidates) - len(todo), unit="feature",
                  desc="screen, stage 1", disable=not progress) as bar:
            for lo in range(0, len(todo), per_chunk):
                chunk = todo[lo : lo + per_chunk]
                rows = _stage1_chunk(model, sae, steerer, chunk, cfg, steer, base, column, words)
                for f, row in rows.items():
                    screen.stage1[f] = {**row, "output_score": output[f]}
                screen.meta["stage1_s"] = screen.meta.get("stage1_s", 0.0) + time.perf_counter() - t0
                t0 = time.perf_counter()
                screen.save(path)  # resumable: a restart skips what is written
                bar.update(len(chunk))
    if not screen.confirmations:
        picks = _best(screen, cfg.n_confirm)
        reports = confirm(model, sae, picks, words, cfg, steer) if picks else {}
        screen.confirmations = {f: {**_confirmation_row(r, rel), "output_score": output[f]}
                                for (f, rel), r in zip(picks, reports.values())}
        screen.meta.update(confirmed=screen.confirmed, confirm_s=time.perf_counter() - t0)
        screen.save(path)
    return screen


def _best(screen: SteerabilityScreen, n: int) -> list[tuple[int, float]]:
    """The ``n`` stage-1 candidates closest to passing within the cost budget, with their
    best scales."""
    ok = [r for r in screen.stage1.values() if r["nll_cost"] <= COST_BUDGET]
    ok.sort(key=lambda r: (-r["strength"], -r["fires_gain"], r["feature"]))
    return [(int(r["feature"]), float(r["scale"])) for r in ok[:n]]


def _resume(path: Path, candidates: list[int], cfg: ScreenConfig,
            steer: SteerConfig) -> SteerabilityScreen:
    """The screen saved at ``path`` for these settings, else an empty one."""
    if (path / "screen.json").exists():
        saved = SteerabilityScreen.load(path)
        if saved.config == cfg and saved.steer == steer and saved.candidates == candidates:
            return saved
        raise ValueError(f"{path} holds a screen with other settings or candidates; pass another "
                         "path= or remove it")
    return SteerabilityScreen(candidates, {}, {}, cfg, steer, {"n_candidates": len(candidates)})
