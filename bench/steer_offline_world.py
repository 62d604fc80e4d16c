"""The causal test on the offline world: can one SAE feature make a planted concept appear?

For each planted concept (quote, pretend_list, time_to, danger):

1. candidates: features whose decoder row most raises the concept's next-token
   probability through the rest of the model, plus the feature that fires on the concept
   (best F1 against the world's labels);
2. the selection engine's concept preset (``steer_concept``): a scale sweep (relative
   units: multiples of the typical residual norm at the hook) on ``--n-select`` samples
   ranks the pool, the best 3 are confirmed on fresh seeds against the rule
   (``sae_steer.config.rules``: the lift's 95 % lower bound reaches ``LIFT_TARGET`` within
   ``COST_BUDGET`` nats/token of extra NLL) and the recommended one (else the nearest miss)
   goes on;
3. a fresh steering report on ``--n-final`` samples with seeds no other stage drew measures it: concept
   occurrences per 100 generated tokens steered vs unsteered (same seeds; a run counts
   once, an immediate repeat counts once), the NLL and repetition costs under the
   unsteered model, how often the steered and on-word features fire, and the same for a
   random direction of the same norm and prompting (the concept's most characteristic
   token written after the prompt, no steering);
4. a reference on the same seeds: the concept's context direction (mean residual before
   the concept starts minus the mean residual) at the same norm, a supervised vector, to
   show whether any direction at this hook and push could reach the target.

Run: ``python bench/steer_offline_world.py [--preset small] [--threads 1]``.
Ends with RESULT lines per concept ``c``: ``lift_<c>``, ``lift_low_<c>`` (the lift's 95 %
lower bound, exact Poisson ratio), ``nll_cost_<c>``, ``rep_cost_<c>`` (repeated 3-grams,
steered minus unsteered) and ``control_lift_high_<c>`` (a random direction of the same
norm, same seeds: the 95 % upper bound of its lift), ``direction_lift_<c>`` and
``direction_lift_low_<c>`` (the context direction's lift and its lower bound),
``prompt_lift_<c>`` (prompting, no steering), then ``targets_met``.
"""
from __future__ import annotations

import argparse
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--n-select", type=int, default=16)
    parser.add_argument("--n-final", type=int, default=1024)
    parser.add_argument("--max-new-tokens", type=int, default=100)
    parser.add_argument("--n-candidates", type=int, default=5)
    parser.add_argument("--scales", default="0.3,0.4,0.5,0.6,0.7,0.8")
    parser.add_argument("--n-texts", type=int, default=400)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    # after torch.set_num_threads: importing the library builds nothing, but keep it cheap
    from sae_steer import (SteerConfig, load_model, load_texts, planted_concepts, reference_sae,
                           steer_concept)
    from sae_steer.config import LIFT_TARGET, SelectConfig
    from sae_steer.steer import typical_resid_norm
    from sae_steer.render import table_text

    start = time.perf_counter()
    model = load_model("toystories", preset=args.preset, progress=False)
    sae = reference_sae(model, preset=args.preset, progress=False)
    texts = list(load_texts("toystories", split="validation", n=args.n_texts, preset=args.preset))
    norm = typical_resid_norm(model, sae.cfg.hook_name)
    scales = [float(s) for s in args.scales.split(",")]
    print(f"model toystories/{args.preset}, SAE {sae.cfg.d_sae} features at {sae.cfg.hook_name}, "
          f"typical residual norm {norm:.3g}; scales (x norm) {scales}")
    steer = SteerConfig(max_new_tokens=args.max_new_tokens, scale_unit="relative", resid_norm=norm)
    choose = SelectConfig.for_concept(scales=scales, n_candidates=args.n_candidates,
                                      n_rank=args.n_select, n_report=args.n_final)
    results = {}
    for name, concept in planted_concepts().items():
        results[name] = steer_concept(model, sae, texts, concept, choose, steer)
        print(f"  {name}: done ({time.perf_counter() - start:.0f} s)", flush=True)
    print()
    print(table_text([r.row() for r in results.values()]))
    print()
    for concept, r in results.items():
        sw = r.choice.sweep
        print(f"{concept}: sweep of feature {r.choice.feature} (lift [lower bound] / NLL cost per "
              "relative scale): " + ", ".join(f"{s:g}: {su:.2g} [{lo:.2g}]/{c:+.2f}" for s, su, lo, c
                                              in zip(sw.scales, sw.success, sw.success_low, sw.cost)))
    for concept, r in results.items():
        d = r.direction.vs_unsteered
        print(f"{concept}: context direction at the same norm: lift {d.lift}, "
              f"NLL cost {d.nll_cost.value:+.2f}; the chosen feature's lift {r.report.lift}")
    met = sum(r.target_met for r in results.values())
    print(f"\ntargets met (lift's 95 % lower bound >= {LIFT_TARGET:g}x at <= "
          f"+{choose.cost_budget:g} nats/token, {args.n_final} held-out samples x "
          f"{args.max_new_tokens} tokens per side): {met}/4; {time.perf_counter() - start:.0f} s")
    for concept, r in results.items():
        rep, ctrl = r.report, r.report.control.vs_unsteered
        print(f"RESULT lift_{concept} {rep.lift.value:.3f}")
        print(f"RESULT lift_low_{concept} {rep.lift.lo:.3f}")
        print(f"RESULT nll_cost_{concept} {rep.nll_cost.value:.3f}")
        print(f"RESULT rep_cost_{concept} {rep.rep_cost.value:.3f}")
        print(f"RESULT control_lift_high_{concept} {ctrl.lift.hi:.3f}")
        print(f"RESULT direction_lift_{concept} {r.direction.vs_unsteered.lift.value:.3f}")
        print(f"RESULT direction_lift_low_{concept} {r.direction.vs_unsteered.lift.lo:.3f}")
        if rep.prompted is not None:
            print(f"RESULT prompt_lift_{concept} {rep.prompted.vs_unsteered.lift.value:.3f}")
    print(f"RESULT targets_met {met}")


if __name__ == "__main__":
    main()
