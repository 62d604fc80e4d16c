"""Does choosing features by output score pay? Top features by output score vs random ones.

On the offline world (toystories/small and its reference SAE): every feature's output and
input scores (``sae_steer.feature_scores``, after Arad, Mueller & Belinkov 2025), then for
the top ``--n`` alive features by output score and ``--n`` random alive features:

Both groups come from the alive features that fire on at most ``--max-density`` (1 %) of
tokens: a denser one already fires in nearly every unsteered 100-token sample, so it has no
room to gain (measured: the top 20 by output score among all alive features fire in 88-100 %
of unsteered samples, and none can steer by this measure).

1. a scale sweep (relative units) on ``--n-select`` samples picks the smallest scale whose
   fire-rate gain (steered minus unsteered fire rate of the feature itself, re-scored by the
   unsteered model, paired by seed) has a 95 % lower bound that reaches ``FIRES_GAIN_TARGET``
   within ``COST_BUDGET`` nats/token (``sae_steer.config.rules``); else the scale with the
   best lower bound;
2. a fresh report on ``--n-final`` samples with other seeds measures it.

A feature "steers" when that fresh lower bound passes the same rule (printed). A third
group, the top features by ``self_score`` (the output score read on the tokens a feature
fires on), shows which score predicts this measure. Prints each group's features and ends
with ``RESULT steer_rate_top_output``, ``RESULT steer_rate_random``, their ratio ``RESULT
steerability_gain`` and ``RESULT steer_rate_top_self``.

Run: ``python bench/steerability.py [--n 20] [--threads 1]``; ``--quick`` for a smoke run.
"""
from __future__ import annotations

import argparse
import math
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--n", type=int, default=20, help="features per group")
    # 128 fresh samples: at 32 the gain's interval is about +-0.2 wide, so a feature with a
    # true gain of +0.4 would pass or fail by luck
    parser.add_argument("--n-select", type=int, default=32)
    parser.add_argument("--n-final", type=int, default=128)
    parser.add_argument("--max-new-tokens", type=int, default=100)
    parser.add_argument("--scales", default="0.3,0.5,0.7")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random group")
    parser.add_argument("--max-density", type=float, default=0.01,
                        help="both groups: alive features firing on at most this share of tokens")
    parser.add_argument("--quick", action="store_true", help="3 features per group, short samples")
    args = parser.parse_args()
    if args.quick:
        args.n, args.n_select, args.n_final, args.max_new_tokens, args.scales = 3, 4, 8, 30, "0.5"
    torch.set_num_threads(args.threads)

    from sae_steer import ChooseConfig, SteerConfig, feature_scores, load_model, load_texts
    from sae_steer.config import FIRES_GAIN_TARGET
    from sae_steer.inspect import load_or_search
    from sae_steer.measure import steer_feature, wilson
    from sae_steer.render import table_text
    from sae_steer.steer import typical_resid_norm
    from sae_steer.train import reference_sae

    start = time.perf_counter()
    model = load_model("toystories", preset=args.preset, progress=False)
    sae = reference_sae(model, preset=args.preset, progress=False)
    search = load_or_search(
        model, sae, lambda: load_texts("toystories", split="validation", preset=args.preset),
        source=f"toystories/{args.preset}/validation", progress=False)
    scores = feature_scores(model, sae, search=search, progress=False)
    # A feature that already fires in (nearly) every unsteered sample cannot show a gain, so
    # both groups are drawn from the same pool: alive and sparse.
    alive = (search.density > 0) & (search.density <= args.max_density)
    top = scores.top(args.n, alive=alive)
    top_self = scores.top(args.n, alive=alive, by="self_score")
    pool = alive.nonzero().squeeze(-1)
    pick = torch.randperm(len(pool), generator=torch.Generator().manual_seed(args.seed))
    randoms = [int(pool[i]) for i in pick[: args.n]]
    steer = SteerConfig(max_new_tokens=args.max_new_tokens, scale_unit="relative",
                        resid_norm=typical_resid_norm(model, sae.cfg.hook_name))
    choose = ChooseConfig(scales=[float(s) for s in args.scales.split(",")],
                          n_select=args.n_select, n_final=args.n_final)
    print(f"toystories/{args.preset}: {sae.cfg.d_sae} features, {int(alive.sum())} alive with "
          f"density <= {args.max_density:g}; "
          f"scores in {time.perf_counter() - start:.0f} s; groups of {args.n}, "
          f"{args.n_final} fresh samples x {args.max_new_tokens} tokens per side; a feature "
          f"steers when its fire-rate gain's lower bound >= {FIRES_GAIN_TARGET:g} at <= "
          f"+{choose.cost_budget:g} nats/token")
    rates = {}
    for name, group in (("top_output", top), ("top_self", top_self), ("random", randoms)):
        results = [steer_feature(model, sae, f, choose, steer) for f in group]
        rows = [{**r.row(), "output_score": float(scores.output_score[r.feature]),
                 "self_score": float(scores.self_score[r.feature])} for r in results]
        print(f"\n{name} ({time.perf_counter() - start:.0f} s):")
        print(table_text(rows))
        k = sum(r.steers for r in results)
        rates[name] = wilson(k, len(results))
        print(f"{name}: {k}/{len(results)} steer, rate {rates[name]}")
    top_rate, random_rate = rates["top_output"].value, rates["random"].value
    gain = top_rate / random_rate if random_rate > 0 else (math.inf if top_rate > 0 else math.nan)
    print(f"\n{time.perf_counter() - start:.0f} s in all")
    print(f"RESULT steer_rate_top_output {top_rate:.3f}")
    print(f"RESULT steer_rate_random {random_rate:.3f}")
    print(f"RESULT steerability_gain {gain:.3f}")
    self_rate = rates["top_self"].value
    print(f"RESULT steer_rate_top_self {self_rate:.3f}")


if __name__ == "__main__":
    main()
