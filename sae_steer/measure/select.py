"""The selection engine: which of a pool of features steer toward a target, measured.

One question with many presets (the screen of every feature, a concept's feature, one
feature's scale): given candidate features, a ``Target`` and a ``SelectConfig``, three
stages, each on seeds no other stage draws (``config.seeds``):

1. **rank**: a scale sweep of every candidate on few samples against one shared baseline
   (a sweep, ``sweep.sweep_of``, in batches written to disk as they finish, so an
   interrupted selection resumes); each candidate's best scale by the target's strength.
2. **confirm**: the ``n_confirm`` strongest within the cost budget, again on fresh seeds,
   in rounds, each on seeds of its own: each feature's chance to pass a re-test of
   ``n_report`` samples (the unchanged rule) is estimated; the ``confirm_keep`` likeliest
   go on to the next round, and of the last round's features the largest set whose mean
   lower bound on that chance (the bounds holding together at 95 %) reaches 80 % is
   **recommended**: the promise of ``config.rules``.
3. **report**: the recommended (and ``report_at_least`` nearest misses) on further fresh
   seeds, beside the baselines: a random direction of the same norm, prompting (the
   target's prompt, no steering) and the wrong-way share. These are the figures shown: a
   winner's figure from the stage that chose it is never its proof.

The engine plans batches (``_plans``: a generator that reads what the batches before it
found), measures each with one call to ``report.run_reports`` (one measurement batch), and
records it on the ``SteerabilityScreen``: one place where samples are drawn and scored.
Works for any model and tokenizer.
"""
from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm.auto import tqdm
from torch import Tensor

from sae_steer.config import (PROMISE, Z95, SelectConfig, SteerConfig, promise_kept,
                              retest_pass_low, retest_pass_probability, sample_seeds)
from sae_steer.measure.report import SteeringReport, run_reports
from sae_steer.measure.screen_results import SteerabilityScreen
from sae_steer.measure.sweep import sweep_of
from sae_steer.measure.target import Target
from sae_steer.steer import Steerer
from sae_steer.steer.batch import generate_rows, generation_rows

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer


@dataclasses.dataclass
class _Plan:
    """One measurement batch of a stage: what ``run_reports`` gets, and what came back."""

    stage: str
    items: list[tuple[int, float]]
    steer: SteerConfig
    seeds: list[int]
    unsteered: Any = None
    """A baseline already drawn on ``seeds`` (ranking draws one for all its batches)."""
    control: bool = False
    round: int = 0
    """The confirmation round (0 for the other stages)."""
    prompts: Mapping[int, Any] | None = None
    references: Mapping[int, Tensor] | None = None
    reports: list[SteeringReport] = dataclasses.field(default_factory=list)


def select_features(
    model: HookedTransformer, sae: Any, pool: Sequence[int], target: Target,
    cfg: SelectConfig, steer: SteerConfig, *, path: str | os.PathLike | None = None,
    extra: Mapping[int, Mapping[str, Any]] | None = None, report_limit: int | None = None,
    report_at_least: int = 0, references: Mapping[int, Tensor] | None = None,
    keep_sweeps: bool = False, progress: bool = True,
) -> SteerabilityScreen:
    """Rank ``pool`` (in this order), confirm the best, report the recommended (see the
    module docstring). ``steer``: how samples are drawn (``resid_norm`` resolved here once:
    every stage pushes by the same amount); ``path``: where the selection is saved after
    every batch (None: not saved); ``extra``: per candidate, columns added to its rows (an
    output score); ``report_limit``: report at most this many recommended features (None:
    all), ``report_at_least``: fill up to this many with the nearest misses, marked as
    such; ``references``: per feature, a direction the report measures at the same norm (a
    concept's context direction); ``keep_sweeps``: keep each candidate's ranking sweep
    (``screen.sweeps``, this session only).
    """
    pool = list(dict.fromkeys(int(f) for f in pool))
    if not pool:
        raise ValueError("no feature to select from: the pool is empty")
    steerer = Steerer.for_config(model, sae, steer)
    steer = steer.replace(scale_unit="relative", resid_norm=steerer.resid_norm, mode="decoder_row")
    path = Path(path) if path is not None else None
    screen = _resume(path, pool, cfg, steer)
    screen.meta.update(hook=steerer.hook_name, d_sae=sae.cfg.d_sae,
                       definitions=list(target.definitions))
    record = {"rank": _record_rank, "confirm": _record_confirm, "report": _record_report}
    for plan in _plans(model, screen, target, report_limit, report_at_least, references or {},
                       progress):
        plan.reports = run_reports(
            model, sae, plan.items, plan.steer, seeds=plan.seeds,
            concept={f: target.concept_of(f) for f, _ in plan.items},
            rescore_features=target.rescore, unsteered=plan.unsteered, control=plan.control,
            prompts=plan.prompts, references=plan.references)
        record[plan.stage](screen, target, plan, extra or {}, keep_sweeps)
        if path is not None:  # resumable: a restart skips what is written
            screen.save(path)
    if path is not None:  # the last decisions, made after the last batch
        screen.save(path)
    return screen


def _plans(model: HookedTransformer, screen: SteerabilityScreen, target: Target,
           limit: int | None, at_least: int, references: Mapping[int, Tensor],
           progress: bool) -> Iterator[_Plan]:
    """The batches to measure, stage by stage; each is planned after the one before it was
    recorded (a confirmation round reads the last one's rows)."""
    cfg, hook = screen.config, screen.meta["hook"]
    todo = [f for f in screen.candidates if f not in screen.stage1]
    t0 = time.perf_counter()
    if todo:
        steer = cfg.stage_steer(screen.steer, "rank")
        seeds = sample_seeds(steer.seed, steer.n_samples)
        base = generate_rows(model, hook, None, seeds, steer)  # drawn once, re-scored per batch
        per_batch = max(1, generation_rows(model) // (cfg.n_rank * len(cfg.scales)))
        with tqdm(total=len(screen.candidates), initial=len(screen.candidates) - len(todo),
                  unit="feature", desc="select, 1/3 rank", disable=not progress) as bar:
            for lo in range(0, len(todo), per_batch):
                chunk = todo[lo : lo + per_batch]
                yield _Plan("rank", [(f, sc) for f in chunk for sc in cfg.scales], steer, seeds, base)
                screen.meta["rank_s"] = screen.meta.get("rank_s", 0.0) + time.perf_counter() - t0
                t0 = time.perf_counter()
                bar.update(len(chunk))
    if "recommended" not in screen.meta:  # not decided yet: (re)run every round
        screen.confirmations, screen.reports = {}, {}
        steer, open_ = cfg.stage_steer(screen.steer, "confirm"), _picks(screen)
        seeds, used = sample_seeds(steer.seed, steer.n_samples), 0
        with tqdm(total=len(cfg.confirm_rounds), unit="round", desc="select, 2/3 confirm",
                  disable=not progress) as bar:
            for r, n in enumerate(cfg.confirm_rounds):  # each round on seeds of its own
                if open_:
                    yield _Plan("confirm", open_, steer, seeds[used : used + n], round=r)
                    rows = [screen.confirmations[f] for f, _ in open_]
                    rows = sorted((w for w in rows if w["open"]), key=lambda w: -w["pass_chance"])
                    open_ = [(w["feature"], w["scale"]) for w in rows[: cfg.confirm_keep]]
                used += n
                bar.update(1)
        _decide(screen)
        screen.meta["confirm_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
    if "report_s" not in screen.meta:
        screen.reports = {}
        shown = screen.confirmed[:limit]
        if len(shown) < at_least:
            shown += [r["feature"] for r in screen.nearest_misses(at_least - len(shown))]
        if shown:
            steer = cfg.stage_steer(screen.steer, "report")
            items = [(f, float(screen.confirmations[f]["scale"])) for f in shown]
            with tqdm(total=1, unit="batch", desc="select, 3/3 report", disable=not progress) as bar:
                yield _Plan("report", items, steer, sample_seeds(steer.seed, steer.n_samples),
                            control=True, prompts={f: target.prompt_of(f) for f in shown},
                            references=references)
                bar.update(1)
        screen.meta["report_s"] = time.perf_counter() - t0


def _row(target: Target, report: SteeringReport, rel: float, cost_budget: float
         ) -> dict[str, Any]:
    """One table row of ``report`` (every stage's): the report's summary, the relative
    scale, the target's strength and the definitions passed."""
    f, nan = report.feature, math.nan
    row = {"words": report.concept or "", "lift": nan, "lift_lo": nan, "lift_hi": nan,
           "events_steered": 0, "events_unsteered": 0, **report.row()}
    row.update(scale=rel, scale_abs=report.scale,
               strength=target.strength(report.vs_unsteered, f),
               passed=target.passed(report.vs_unsteered, f, cost_budget),
               definition=target.best_definition(report.vs_unsteered, f))
    return row


def _record_rank(screen: SteerabilityScreen, target: Target, plan: _Plan,
                 extra: Mapping[int, Mapping[str, Any]], keep_sweeps: bool) -> None:
    """Each candidate's sweep over the scales, and its best scale's row."""
    cfg, n = screen.config, len(screen.config.scales)
    for k in range(0, len(plan.items), n):
        f = plan.items[k][0]
        sw = sweep_of(target, f, cfg.scales, plan.reports[k : k + n], cfg.cost_budget, "relative")
        i = sw.scales.index(sw.best_scale())
        row = _row(target, sw.reports[i], sw.best_scale(), cfg.cost_budget)
        row["by_scale"] = [{"scale": sc, "strength": st, "nll_cost": c,
                            sw.success_name: su, f"{sw.success_name}_lo": lw}
                           for sc, st, c, su, lw in zip(sw.scales, sw.strength, sw.cost,
                                                        sw.success, sw.success_low)]
        screen.stage1[f] = {**row, **extra.get(f, {})}
        if keep_sweeps:
            screen.sweeps[f] = sw


def _picks(screen: SteerabilityScreen) -> list[tuple[int, float]]:
    """The ``n_confirm`` ranked candidates closest to passing within the cost budget (none
    within it: the strongest one, to fail honestly in the open)."""
    cfg, rows = screen.config, list(screen.stage1.values())
    ok = [r for r in rows if r["nll_cost"] <= cfg.cost_budget] or sorted(
        rows, key=lambda r: -r["strength"])[:1]
    ok.sort(key=lambda r: (-r["strength"], -r["fires_gain"], r["feature"]))
    return [(int(r["feature"]), float(r["scale"])) for r in ok[: cfg.n_confirm]]


def _record_confirm(screen: SteerabilityScreen, target: Target, plan: _Plan,
                    extra: Mapping[int, Mapping[str, Any]], keep_sweeps: bool) -> None:
    """A confirmation round: each feature's row, tested by the definition the stage before
    chose (on other samples), with its chance to pass a re-test of the report's size
    (``pass_chance``), and whether it stays open (even its upper bound's chance reaching
    ``PROMISE`` would do, within the cost budget)."""
    cfg = screen.config
    for (f, rel), rep in zip(plan.items, plan.reports):
        tested = (screen.confirmations.get(f) or screen.stage1[f])["definition"]
        ev = target.evidence(rep.vs_unsteered, f, tested, len(plan.seeds), cfg.n_report)
        row = {**_row(target, rep, rel, cfg.cost_budget), **extra.get(f, {}), "round": plan.round,
               "tested": tested, **{f"test_{k}": v for k, v in ev.items()},
               "pass_chance": retest_pass_probability(ev["estimate"], ev["se_retest"], ev["target"])}
        best = retest_pass_probability(ev["estimate"] + Z95 * ev["se"], ev["se_retest"], ev["target"])
        row["open"] = best >= PROMISE and row["nll_cost"] <= cfg.cost_budget
        screen.confirmations[f] = row


def _decide(screen: SteerabilityScreen) -> None:
    """The promise (``config.rules``) over the last round's features: each gets a lower
    bound on its re-test pass chance (all of the round's together), and the largest set,
    best first, whose mean bound keeps the promise is recommended."""
    rows = screen.confirmations
    last = max((r["round"] for r in rows.values()), default=0)
    family = [r for r in rows.values() if r["round"] == last]
    for row in rows.values():
        row["recommended"] = False
    for row in family:
        row["pass_chance_low"] = retest_pass_low(row["test_estimate"], row["test_se"],
                                                 row["test_se_retest"], row["test_target"],
                                                 len(family))
    for i in promise_kept([r["pass_chance_low"] for r in family]):
        family[i]["recommended"] = bool(family[i]["passed"])
    screen.meta["recommended"] = screen.confirmed


def _record_report(screen: SteerabilityScreen, target: Target, plan: _Plan,
                   extra: Mapping[int, Mapping[str, Any]], keep_sweeps: bool) -> None:
    """The report stage's rows (fresh seeds, with the baselines) and its reports."""
    for (f, rel), r in zip(plan.items, plan.reports):
        screen.reports[f] = {**_row(target, r, rel, screen.config.cost_budget),
                             "recommended": f in screen.confirmed}
        screen.report_objects[f] = r


def _resume(path: Path | None, candidates: list[int], cfg: SelectConfig,
            steer: SteerConfig) -> SteerabilityScreen:
    """The selection saved at ``path`` for these settings, else an empty one."""
    if path is not None and (path / "screen.json").exists():
        saved = SteerabilityScreen.load(path)
        if saved.config == cfg and saved.steer == steer and saved.candidates == candidates:
            return saved
        raise ValueError(f"{path} holds a screen with other settings or candidates; pass another "
                         "path= or remove it")
    return SteerabilityScreen(candidates, {}, {}, cfg, steer, {"n_candidates": len(candidates)})
