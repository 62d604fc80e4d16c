"""The default learning rate against a fixed grid around it, on the offline worlds.

    python bench/lr_sweep.py              # 2 worlds x 2 runs x 7 learning rates (~25 min, 1 core)
    python bench/lr_sweep.py --quick      # smoke run (CI): tiny runs, 3 learning rates

Each run is a topk SAE trained by ``sae_steer.train.train`` with ``TrainConfig`` defaults
except ``lr``: the default (``lr=None``, the rule in ``TrainConfig.resolved``) and that
default times each of ``GRID``. The runs are the sizes a user tries first: 512 features,
k 8, 480 steps, and 2,048 features, k 16, 1,500 steps, batches of 4,096 tokens, on two
worlds: the word-level toy world and the GPT-Neo world (BPE tokens), both at their default
hook. Every learning rate of a run reads the same batches (harvested once, in order), so
the runs differ in the learning rate alone. Explained variance is measured on activations
of held-out validation stories (65,536 tokens; 4,096 with ``--quick``) that no run trained
on, in the raw activation space. No token is read twice: the training stories continue the
toy world's stream past its preset corpus (about 70,000 stories for 1,500 steps).

``RESULT lr_sweep_<world>_<run>_gap`` is the default's EV minus the grid's best (the target:
no lower than -0.01), ``..._best_multiple`` where the grid's best lies (x the default).
"""
from __future__ import annotations

import argparse
import json
import os
import time

import torch

from sae_steer import load_model, load_texts
from sae_steer.config import SAEConfig, TrainConfig
from sae_steer.lm import default_hook_name, hook_width
from sae_steer.sae import SAE
from sae_steer.train import train
from sae_steer.train.harvest import harvest
from sae_steer.train.loop import explained_variance

GRID = (1 / 8, 1 / 4, 1 / 2, 1, 2, 4, 8)
RUNS = {"w512": dict(d_sae=512, k=8, n_steps=480), "w2048": dict(d_sae=2048, k=16, n_steps=1500)}
WORLDS = {"word": "toystories", "neo": "toystories-neo"}
BATCH = 4096


def activations(model, texts, hook: str, n_tokens: int, batch: int) -> list[torch.Tensor]:
    """``n_tokens`` activations at ``hook`` as batches of ``batch``, through the library's
    own harvest (shuffled, BOS left out; cycling over epochs if the texts run short)."""
    cfg = TrainConfig(n_steps=n_tokens // batch, batch_size=batch, store="memory")
    data = harvest(model, texts, hook, cfg, hook_width(model, hook), progress=False)
    try:
        out = []
        for x in data.batches:
            out.append(x.clone())
            if len(out) * batch >= n_tokens:
                return out
        raise ValueError(f"the texts gave {len(out) * batch:,} activations, not {n_tokens:,}")
    finally:
        data.close()


def run(batches, held_out: torch.Tensor, d_in: int, d_sae: int, k: int, n_steps: int,
        multiple: float | None) -> dict:
    """One SAE; ``multiple=None`` leaves ``lr`` to the default rule."""
    default = TrainConfig(n_steps=n_steps, batch_size=BATCH).resolved(d_sae, d_in).lr
    lr = None if multiple is None else default * multiple  # None: the rule sets it in train
    sae = SAE(SAEConfig(d_in=d_in, d_sae=d_sae, architecture="topk", k=k, device="cpu"), seed=0)
    start = time.perf_counter()
    train(sae, batches[:n_steps], TrainConfig(n_steps=n_steps, batch_size=BATCH, lr=lr,
                                              log_every=n_steps, eval_sequences=0),
          progress=False)
    with torch.no_grad():
        ev = explained_variance(held_out, sae(held_out))
        dead = float(((sae.encode(held_out) > 0).sum(0) == 0).float().mean())
    return {"lr": default * (multiple or 1), "multiple": multiple or 1.0, "ev": ev, "dead": dead,
            "seconds": time.perf_counter() - start}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run: tiny runs, 3 rates")
    p.add_argument("--worlds", nargs="*", choices=list(WORLDS), default=list(WORLDS))
    p.add_argument("--runs", nargs="*", choices=list(RUNS), default=list(RUNS))
    p.add_argument("--threads", type=int, default=None, help="torch threads")
    p.add_argument("--json", default=None, help="also write every run's figures here")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    grid, runs, held = GRID, {r: RUNS[r] for r in args.runs}, 65_536
    if args.quick:
        grid, held = (1 / 2, 1, 2), 4096
        runs = {r: dict(d_sae=64, k=4, n_steps=12) for r in args.runs[:1]}
    print(f"cpu, {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}, "
          f"torch {torch.__version__}; grid x {', '.join(f'{m:g}' for m in grid)} of the default")
    table, lines = [], []
    for short in args.worlds:
        model = load_model(WORLDS[short], device="cpu", progress=False)
        hook = default_hook_name(model)
        d_in = hook_width(model, hook)
        n_max = max(r["n_steps"] for r in runs.values()) * BATCH
        # stories enough that no token is read twice (~92 word-level tokens a story; the
        # toy stream goes on past the preset's corpus with stories of the same grammar)
        batches = activations(model, load_texts("toystories", "train", n_max // 80 + 1000,
                                                progress=False), hook, n_max, BATCH)
        held_out = torch.cat(activations(model, load_texts("toystories", "validation",
                                                           held // 60 + 100, progress=False),
                                         hook, held, min(held, BATCH)))
        for name, size in runs.items():
            # x1 is the default itself (lr=None): the same run, not a second one
            sweep = [run(batches, held_out, d_in, multiple=None if m == 1 else m, **size)
                     for m in grid]
            default = next(r for r in sweep if r["multiple"] == 1.0)
            best = max(sweep, key=lambda r: r["ev"])
            for r in sweep:
                print(f"  {short:4s} {name:5s} lr {r['lr']:.2e} (x{r['multiple']:g}"
                      f"{', default' if r is default else ''})  EV {r['ev']:.4f}  dead "
                      f"{r['dead']:.1%}  {r['seconds']:.0f} s", flush=True)
            tag = f"lr_sweep_{short}_{name}"
            lines += [f"RESULT {tag}_default_lr {default['lr']:.3g}",
                      f"RESULT {tag}_default_ev {default['ev']:.4f}",
                      f"RESULT {tag}_best_ev {best['ev']:.4f}",
                      f"RESULT {tag}_best_multiple {best['multiple']:g}",
                      f"RESULT {tag}_gap {default['ev'] - best['ev']:+.4f}"]
            table.append({"world": short, "run": name, "hook": hook, "d_in": d_in, **size,
                          "default": default, "rows": sweep})
        del batches
    met = sum(t["default"]["ev"] >= max(r["ev"] for r in t["rows"]) - 0.01 for t in table)
    lines.append(f"RESULT lr_sweep_within {met}/{len(table)} (runs whose default is within 0.01 EV "
                 "of the grid's best)")
    print("\n".join(lines))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(table, f, indent=1)


if __name__ == "__main__":
    main()
