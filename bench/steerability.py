"""Which features steer? The screen of every feature, its speed, and whether it keeps its promise.

On an offline world (``--model toystories``, the word-level world, or ``toystories-neo``,
the GPT-Neo world with a BPE tokenizer; ``--preset small`` or ``demo``) and its reference
SAE:

1. **Speed.** The screen's ranking stage (the selection engine's sweep: hundreds of
   (feature, scale, seed) rows per measurement batch) against the same rows run one
   feature at a time (``generate_steered`` + re-scoring, one shared baseline) on a fixed
   subset of features: ``RESULT screen_batch_speedup``; then ``RESULT
   screen_features_per_min`` for the whole ranking stage.
2. **The screen.** Every alive feature, in output-score order, at the default
   ``SelectConfig``: ranked, the best confirmed in rounds on fresh seeds, the recommended
   (the longest run of the last round's features whose mean chance to pass a re-test
   keeps the promise of ``config.rules``) reported on further fresh seeds beside a random
   direction, prompting and the wrong-way share. ``RESULT n_recommended``, the report
   stage's means (``fires_gain_recommended``,
   ``prompt_gain_recommended``, ``wrong_way_recommended``) and each stage's seconds.
3. **Does "recommended" keep its promise?** Every recommended feature at its recommended
   scale, re-tested by the unchanged rule on three seed sets no stage draws from
   (``--n-recheck`` samples per side each, the first from ``--recheck-seed``), pooled:
   ``RESULT recheck_rate`` = ``recheck_passed`` / ``recheck_n``. Beside them, ``--n`` random
   features of the candidate pool at their ranking scales on the first set: ``RESULT
   steer_rate_random``.

Deterministic: one thread by default (``--threads``), fixed seeds; the same run prints the
same RESULT lines (timings aside). Run: ``python bench/steerability.py [--preset demo]
[--model toystories-neo]``; ``--quick`` for a smoke run; ``--speedup-only`` for part 1
alone (``--threads 2``: both cores of a 2-core machine, as torch uses them by default).
"""
from __future__ import annotations

import argparse
import math
import tempfile
import time

import torch


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def speedup(model, sae, target, steer, cfg, features):
    """Ranking on ``features``: one measurement batch vs one feature at a time, same rows."""
    from sae_steer.measure.sides import compare, side_stats
    from sae_steer.measure.sweep import run_sweeps
    from sae_steer.steer import generate_steered, generate_unsteered

    run = cfg.stage_steer(steer, "rank")

    def batched():
        return run_sweeps(model, sae, features, cfg.scales, run, target=target)

    def one_at_a_time():
        base = generate_unsteered(model, run)
        gains = {}
        for f in features:
            words = target.concept_of(f)
            u = side_stats(model, sae, base, [f], words, steer.fire_threshold)
            for sc in cfg.scales:
                gen = generate_steered(model, sae, f, sc, run)
                s = side_stats(model, sae, gen, [f], words, steer.fire_threshold)
                gains[(f, sc)] = compare(s, u).fires_gain[f].value
        return gains

    sweeps, t_batch = _timed(batched)
    gains, t_one = _timed(one_at_a_time)
    same = all(math.isclose(sw.success[i], gains[(f, sc)], abs_tol=1e-9)
               for f, sw in sweeps.items() for i, sc in enumerate(sw.scales))
    return t_one / t_batch, t_one, t_batch, same


def _mean(values):
    from sae_steer.measure import normal_mean
    return normal_mean(values) if values else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="toystories", choices=["toystories", "toystories-neo"])
    parser.add_argument("--preset", default="small")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--n", type=int, default=20, help="random features on the first recheck set")
    parser.add_argument("--n-recheck", type=int, default=128, help="samples per side, each recheck set")
    parser.add_argument("--recheck-seed", type=int, default=2000,
                        help="seed of the first recheck set (the others: +1, +2)")
    parser.add_argument("--speedup-features", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0, help="seed of the random group")
    parser.add_argument("--quick", action="store_true", help="a smoke run: few features, short samples")
    parser.add_argument("--speedup-only", action="store_true",
                        help="measure the speed-up (part 1) and stop")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from sae_steer import SelectConfig, SteerConfig, feature_scores, load_model, load_texts
    from sae_steer.config import sample_seeds
    from sae_steer.inspect import load_or_search
    from sae_steer.measure import steering_reports, wilson
    from sae_steer.measure.screen import screen_features, steerability_target
    from sae_steer.render import table_text
    from sae_steer.steer import Steerer
    from sae_steer.train import reference_sae

    start = time.perf_counter()
    model = load_model(args.model, preset=args.preset, progress=False)
    sae = reference_sae(model, preset=args.preset, progress=False)
    search = load_or_search(
        model, sae, lambda: load_texts("toystories", split="validation", preset=args.preset),
        source=f"toystories/{args.preset}/validation", progress=False)
    cfg = SelectConfig()
    steer = SteerConfig(max_new_tokens=args.max_new_tokens)
    features = None
    if args.quick:
        cfg = cfg.replace(n_rank=4, n_confirm=4, confirm_rounds=(8, 16), confirm_keep=2, n_report=8)
        steer = steer.replace(max_new_tokens=30)
        args.n, args.n_recheck, args.speedup_features = 3, 8, 3
    steerer = Steerer.for_config(model, sae, steer)
    steer = steer.replace(scale_unit="relative", resid_norm=steerer.resid_norm)
    scores = feature_scores(model, sae, search=search, resid_norm=steerer.resid_norm,
                            progress=False)
    alive = search.alive()
    by_score = sorted(alive, key=lambda f: -float(scores.output_score[f]))
    if args.quick:
        features = by_score[:12]
    print(f"{model.cfg.model_name}: {sae.cfg.d_sae} features, {len(alive)} alive; ranked at "
          f"scales {cfg.scales} x the residual norm ({steerer.resid_norm:.2f}), {cfg.n_rank} "
          f"samples of {steer.max_new_tokens} tokens; the best {cfg.n_confirm} confirmed in "
          f"rounds of {cfg.confirm_rounds} fresh samples per side (the last on the best "
          f"{cfg.confirm_keep}); the recommended reported on "
          f"{cfg.n_report}; {time.perf_counter() - start:.0f} s to load")

    subset = by_score[: args.speedup_features]
    target = steerability_target(model, search, subset, steer, cfg.n_words)
    ratio, t_one, t_batch, same = speedup(model, sae, target, steer, cfg, subset)
    print(f"\nranking {len(subset)} features x {len(cfg.scales)} scales x {cfg.n_rank} samples: "
          f"one feature at a time {t_one:.1f} s, batched {t_batch:.1f} s; same figures: {same}")
    if args.speedup_only:
        print(f"RESULT screen_batch_speedup {ratio:.2f}")
        return

    with tempfile.TemporaryDirectory() as tmp:
        screen = screen_features(model, sae, search, cfg, steer, features=features, scores=scores,
                                 path=tmp, progress=True)
    n_screened, meta = len(screen.stage1), screen.meta
    print(f"\nscreen: ranking {n_screened} features {meta['rank_s']:.0f} s, confirmation of "
          f"{len(screen.confirmations)} {meta['confirm_s']:.0f} s, report of "
          f"{len(screen.reports)} {meta['report_s']:.0f} s")
    print("confirmation, strongest first:")
    print(table_text([{k: r[k] for k in ("feature", "scale", "words", "round", "n_samples",
                                         "fires_unsteered", "fires_steered", "fires_gain",
                                         "fires_gain_lo", "lift_lo", "nll_cost", "tested",
                                         "pass_chance", "recommended")}
                      for r in sorted(screen.confirmations.values(), key=lambda r: -r["strength"])]))
    recommended = screen.confirmed
    print(f"\n{len(recommended)} recommended: {screen.promise}")
    report = screen.rows(3)
    if report:
        print("report stage (fresh seeds), with its baselines:")
        print(table_text([{k: r.get(k, math.nan) for k in (
            "feature", "scale", "fires_unsteered", "fires_steered", "fires_gain", "fires_gain_lo",
            "prompt_fires_gain", "control_fires_gain", "wrong_way", "nll_cost")} for r in report]))

    # three recheck sets no stage draws from, and random features on the first
    t0 = time.perf_counter()
    pool = list(screen.candidates)
    pick = torch.randperm(len(pool), generator=torch.Generator().manual_seed(args.seed))
    randoms = [pool[int(i)] for i in pick[: args.n]]
    judge = steerability_target(model, search, recommended + randoms, steer, cfg.n_words)
    sets = [args.recheck_seed + i for i in range(3)]
    passed, rand_pass, rows = 0, 0, []
    for i, seed in enumerate(sets):
        items = [(f, screen.scale(f)) for f in recommended]
        if i == 0:
            items += [(f, float(screen.stage1[f]["scale"])) for f in randoms]
        if not items:
            continue
        reps = steering_reports(model, sae, items, steer, seed=seed, n_samples=args.n_recheck,
                                concept={f: judge.concept_of(f) for f, _ in items}, control=False)
        for k, ((f, rel), r) in enumerate(zip(items, reps)):
            ok = judge.passed(r.vs_unsteered, f, cfg.cost_budget)
            group = "recommended" if k < len(recommended) else "random"
            passed += bool(ok) and group == "recommended"
            rand_pass += bool(ok) and group == "random"
            rows.append({"set": seed, "group": group, "feature": f, "scale": rel,
                         "fires_gain": r.fires_gain[f].value, "fires_gain_lo": r.fires_gain[f].lo,
                         "lift_lo": r.lift.lo if r.lift is not None else math.nan,
                         "nll_cost": r.nll_cost.value, "passed": ", ".join(ok) or "-"})
    t_recheck = time.perf_counter() - t0
    print(f"\nrecheck sets (seeds {sets}, {args.n_recheck} samples per side each):")
    print(table_text(rows))
    n_rec = 3 * len(recommended)
    rate_rec = wilson(passed, n_rec) if n_rec else None
    rate_rand = wilson(rand_pass, len(randoms))
    print(f"recommended: {passed}/{n_rec} re-tests pass ({rate_rec or 'none recommended'}); "
          f"random: {rand_pass}/{len(randoms)} ({rate_rand})")
    gains = _mean([r["fires_gain"] for r in report if r["recommended"]])
    prompts = _mean([r["prompt_fires_gain"] for r in report
                     if r["recommended"] and "prompt_fires_gain" in r])
    wrong = _mean([r["wrong_way"] for r in report if r["recommended"]])
    seeds = {"rank": sample_seeds(cfg.rank_seed, cfg.n_rank),
             "confirm": sample_seeds(cfg.confirm_seed, sum(cfg.confirm_rounds)),
             "report": sample_seeds(cfg.report_seed, cfg.n_report)}
    seeds.update({f"recheck{i + 1}": sample_seeds(s, args.n_recheck) for i, s in enumerate(sets)})
    print(f"\n{time.perf_counter() - start:.0f} s in all")
    print(f"RESULT screen_batch_speedup {ratio:.2f}")
    print(f"RESULT screen_features_per_min {n_screened / meta['rank_s'] * 60:.1f}")
    print(f"RESULT n_screened {n_screened}")
    print(f"RESULT n_recommended {len(recommended)}")
    print(f"RESULT recheck_passed {passed}")
    print(f"RESULT recheck_n {n_rec}")
    print(f"RESULT recheck_rate {passed / n_rec if n_rec else math.nan:.3f}"
          + (f" [{rate_rec.lo:.3f}, {rate_rec.hi:.3f}]" if rate_rec else ""))
    print(f"RESULT steer_rate_random {rate_rand.value:.3f} [{rate_rand.lo:.3f}, {rate_rand.hi:.3f}] "
          f"({rand_pass}/{len(randoms)})")
    for name, est in (("fires_gain_recommended", gains), ("prompt_gain_recommended", prompts),
                      ("wrong_way_recommended", wrong)):
        print(f"RESULT {name} " + (f"{est.value:+.3f} [{est.lo:+.3f}, {est.hi:+.3f}] "
                                   f"(mean of {len(recommended)}, {cfg.n_report} samples each)"
                                   if est else "nan (none recommended)"))
    for stage, s in seeds.items():
        print(f"RESULT seeds_{stage} {min(s)}..{max(s)}")
    for stage in ("rank", "confirm", "report"):
        print(f"RESULT {stage}_s {meta[f'{stage}_s']:.0f}")
    print(f"RESULT recheck_s {t_recheck:.0f}")


if __name__ == "__main__":
    main()
