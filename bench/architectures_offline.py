"""The five architectures at one budget on the offline world: notebook 01's comparison.

Each is the offline world's reference recipe (``reference_training(model, architecture=
...)``: the same texts, steps, optimiser and seed; the topk family keeps the relu
reference's L0 as its k; jumprelu has ``REFERENCE_L0_COEFFICIENT``). The figures are the
last logged step's, as notebook 01 shows them: explained variance and L0 on that step's
batch (the BatchTopK pair with its inference threshold), the dead fraction (no firing for
``dead_after_steps``) and the CE-loss increase on the 32 held-out stories. Trained SAEs are
cached, so a second run only prints.

    python bench/architectures_offline.py [--preset small] [--quick]

RESULT lines: ``arch_ev_<arch>``, ``arch_l0_<arch>``, ``arch_dead_<arch>``,
``arch_ce_increase_<arch>``, ``arch_seconds_<arch>`` (training time when it trained here,
else the cached run's).
"""
from __future__ import annotations

import argparse

from sae_steer import load_model, reference_training

ARCHITECTURES = ("relu", "topk", "jumprelu", "batchtopk", "matryoshka_batchtopk")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="small", help="offline world preset (small, demo)")
    p.add_argument("--quick", action="store_true", help="QUICK_STEPS steps per architecture")
    args = p.parse_args(argv)
    model = load_model("toystories", preset=args.preset, progress=False)
    lines = []
    for arch in ARCHITECTURES:
        result = reference_training(model, args.preset, architecture=arch, quick=args.quick)
        row = result.final
        print(f"{arch:21s} k={result.sae.cfg.k}  {result.summary()}", flush=True)
        lines += [f"RESULT arch_ev_{arch} {row['explained_variance']:.3f}",
                  f"RESULT arch_l0_{arch} {row['l0']:.1f}",
                  f"RESULT arch_dead_{arch} {row['dead_fraction']:.3f}",
                  f"RESULT arch_ce_increase_{arch} {row.get('ce_increase', float('nan')):.3f}",
                  f"RESULT arch_seconds_{arch} {result.seconds:.0f}"]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
