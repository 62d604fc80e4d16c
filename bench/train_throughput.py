"""SAE training step time, sae_steer vs SAELens, and harvest throughput (CPU, fp32).

Not like-for-like, and kept only as a quick step-time probe: fused vs plain Adam, AuxK
1/32 vs 1.0, clipping on one side, 6 steps. The fair comparison (same optimiser, clip,
budget and L0; EV, dead fraction and recovery at the end) is ``bench/train_vs_saelens.py``.
The harvest figure compares two sae_steer paths (``stop_at_layer`` vs a full forward), not
SAELens (which also stops at the hook layer): its line is ``RESULT
harvest_stop_at_layer_vs_full_forward``.

    python bench/train_throughput.py            # 6 steps per side (~2 min idle, ~6 busy)
    python bench/train_throughput.py --quick    # 3 steps per side, smoke run

Training: d_in 768, d_sae 10,000, batch 4096 tokens, Adam, for topk (k=32) and relu.
Both sides see the SAME batches, in the same order, and their steps are interleaved
(ours, SAELens, ours, ...) so load from other users hits both alike; tokens/s comes
from the median step time (the first step of each side is warm-up and not timed).

- sae_steer step: ``sae.training_forward`` -> ``loss.backward()`` -> Adam (fused where
  torch supports it) -> ``sae.normalize_decoder_()``.
- SAELens step: exactly ``SAETrainer._train_step`` of sae-lens 6.54.12:
  ``training_forward_pass(TrainStepInput(...))`` -> ``loss.backward()`` ->
  ``clip_grad_norm_(1.0)`` -> Adam -> ``zero_grad``. Default training configs
  (topk: rescale_acts_by_decoder_norm=True, decoder_init_norm=0.1; dense activations,
  because ``use_sparse_activations=True`` fails in backward on CPU in this version).
- Both track dead features the same way (not fired for ``--dead-window`` steps) and
  pass the mask to their AuxK loss, so the AuxK path is exercised on both sides.

Data: synthetic activations with a residual-stream-like structure: each token is a
sparse non-negative combination of 24 of 8,192 random unit directions (Zipf-like
feature frequencies, exponential magnitudes), plus a shared mean vector and Gaussian
noise. Explained variance (against the batch mean) and L0 are measured on a held-out
batch after both sides trained on the same tokens.

Harvest: ``sae_steer.lm.hook_activations`` (stop_at_layer) vs a full forward pass
(``run_with_hooks`` with the same capture hook, i.e. all 4 blocks + unembed) at
``blocks.1.hook_resid_post`` of a random-weight GPT-Neo with TinyStories-33M's shape.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
import warnings

import torch

from sae_steer.config import SAEConfig
from sae_steer.sae import SAE

D_IN, D_SAE, BATCH, K = 768, 10_000, 4096, 32


# ---- data ------------------------------------------------------------------------------
def synthetic_batches(n_batches: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    n_true, per_token = 8192, 24
    dictionary = torch.randn(n_true, D_IN, generator=g)
    dictionary /= dictionary.norm(dim=1, keepdim=True)
    freq = 1.0 / (torch.arange(n_true) + 20.0) ** 0.7
    mean = torch.randn(D_IN, generator=g) * 0.5
    out = []
    for _ in range(n_batches):
        idx = torch.multinomial(freq.expand(BATCH, -1), per_token, generator=g)
        mags = torch.empty(BATCH, per_token).exponential_(1.0, generator=g) * 2.0
        x = torch.nn.functional.embedding_bag(idx, dictionary, per_sample_weights=mags, mode="sum")
        out.append(x + mean + 0.1 * torch.randn(BATCH, D_IN, generator=g))
    return out


# ---- the two trainers --------------------------------------------------------------------
def _adam(params, lr):
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.Adam(params, lr=lr)


class Ours:
    def __init__(self, arch: str, lr: float, l1: float, window: int):
        torch.manual_seed(0)
        self.sae = SAE(SAEConfig(d_in=D_IN, d_sae=D_SAE, architecture=arch,
                                 k=K if arch == "topk" else None, device="cpu"))
        self.opt, self.l1, self.window = _adam(self.sae.parameters(), lr), l1, window
        self.since_fired = torch.zeros(D_SAE, dtype=torch.long)

    def step(self, x: torch.Tensor) -> None:
        out = self.sae.training_forward(x, l1_coefficient=self.l1,
                                        dead_mask=self.since_fired >= self.window)
        out.loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.sae.normalize_decoder_()
        self.since_fired += 1
        self.since_fired[out.fires > 0] = 0

    @torch.no_grad()
    def reconstruct(self, x):
        feats = self.sae.encode(x)
        return self.sae.decode(feats), feats


class SAELensSide:
    def __init__(self, arch: str, lr: float, l1: float, window: int):
        from sae_lens.saes.standard_sae import StandardTrainingSAE, StandardTrainingSAEConfig
        from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig
        torch.manual_seed(0)
        if arch == "topk":
            self.sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=D_IN, d_sae=D_SAE, k=K,
                                                             device="cpu"))
            self.coefficients = {}
        else:
            self.sae = StandardTrainingSAE(StandardTrainingSAEConfig(
                d_in=D_IN, d_sae=D_SAE, l1_coefficient=l1, device="cpu"))
            self.coefficients = {"l1": l1}
        self.opt = torch.optim.Adam(self.sae.parameters(), lr=lr)  # as SAETrainer builds it
        self.window, self.steps = window, 0
        self.since_fired = torch.zeros(D_SAE, dtype=torch.long)

    def step(self, x: torch.Tensor) -> None:
        from sae_lens.saes.sae import TrainStepInput
        self.sae.train()
        out = self.sae.training_forward_pass(TrainStepInput(
            sae_in=x, coefficients=self.coefficients,
            dead_neuron_mask=self.since_fired >= self.window,
            n_training_steps=self.steps, is_logging_step=False))
        with torch.no_grad():  # SAETrainer's firing bookkeeping
            did_fire = out.feature_acts.bool().float().sum(-2).bool()
            self.since_fired += 1
            self.since_fired[did_fire] = 0
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(self.sae.parameters(), 1.0)
        self.opt.step()
        self.opt.zero_grad()
        self.steps += 1

    @torch.no_grad()
    def reconstruct(self, x):
        feats = self.sae.encode(x)
        return self.sae.decode(feats), feats


def quality(side, x: torch.Tensor) -> tuple[float, float]:
    x_hat, feats = side.reconstruct(x)
    ev = 1 - (x - x_hat).pow(2).sum() / (x - x.mean(0)).pow(2).sum()
    return float(ev), float((feats > 0).sum(-1).float().mean())


def bench_train(arch: str, batches, held_out, args) -> dict:
    lr = args.lr
    sides = {"sae_steer": Ours(arch, lr, args.l1, args.dead_window),
             "SAELens": SAELensSide(arch, lr, args.l1, args.dead_window)}
    times = {name: [] for name in sides}
    for i, x in enumerate(batches):
        order = list(sides) if i % 2 == 0 else list(sides)[::-1]  # alternate who goes first
        for name in order:
            t0 = time.perf_counter()
            sides[name].step(x)
            if i > 0:
                times[name].append(time.perf_counter() - t0)
    out = {}
    for name, side in sides.items():
        ev, l0 = quality(side, held_out)
        med = statistics.median(times[name])
        out[name] = {"tok_s": BATCH / med, "step_s": med, "ev": ev, "l0": l0,
                     "min_step_s": min(times[name])}
    return out


# ---- harvest ----------------------------------------------------------------------------
def bench_harvest(reps: int, batch: int, ctx: int) -> dict:
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    from sae_steer.lm import hook_activations
    cfg = HookedTransformerConfig(  # TinyStories-33M's shape (GPT-Neo), random weights
        n_layers=4, d_model=768, n_heads=16, d_head=48, d_mlp=3072, d_vocab=50257,
        n_ctx=2048, act_fn="gelu_new", normalization_type="LN",
        attn_types=["global", "local", "global", "local"], window_size=256,
        use_attn_scale=False, device="cpu", seed=0)
    model = HookedTransformer(cfg)
    model.eval()
    hook = "blocks.1.hook_resid_post"
    tokens = torch.randint(0, cfg.d_vocab, (batch, ctx), generator=torch.Generator().manual_seed(0))

    def full():  # the same capture, without stop_at_layer: all 4 blocks + unembed run
        captured = {}

        def save(act, hook):
            captured["act"] = act

        with torch.no_grad():
            model.run_with_hooks(tokens, fwd_hooks=[(hook, save)])
        return captured["act"]

    def stopped():
        return hook_activations(model, tokens, hook)

    assert torch.allclose(full(), stopped(), atol=1e-4), "harvest paths disagree"
    times = {"full forward": [], "stop_at_layer": []}
    for _ in range(reps):
        for name, fn in (("full forward", full), ("stop_at_layer", stopped)):
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    n_tok = batch * ctx
    return {name: n_tok / statistics.median(ts) for name, ts in times.items()}


# ---- report -----------------------------------------------------------------------------
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="short smoke run")
    p.add_argument("--steps", type=int, default=None, help="training steps per side and arch")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--l1", type=float, default=0.1, help="relu L1 coefficient (both sides)")
    p.add_argument("--dead-window", type=int, default=4,
                   help="steps without firing before a feature counts as dead (both sides)")
    p.add_argument("--threads", default="auto",
                   help="torch threads for both sides; 'auto' = 1 when the machine is "
                        "oversubscribed (load average >= cores), else torch's default")
    p.add_argument("--arch", choices=("topk", "relu", "both"), default="both")
    p.add_argument("--skip-harvest", action="store_true")
    args = p.parse_args()
    load = os.getloadavg()[0]
    if args.threads == "auto":
        # Under oversubscription OpenMP workers wait at barriers for descheduled siblings:
        # measured here at load ~7 on 2 cores, 1 thread ran SAELens's step 1.1x and the
        # harvest 2x faster than 2 threads, and both sides' timings became stable.
        if load >= (os.cpu_count() or 1):
            torch.set_num_threads(1)
    else:
        torch.set_num_threads(int(args.threads))
    steps = args.steps or (3 if args.quick else 6)
    warnings.filterwarnings("ignore")
    print(f"device cpu (CPU figures), torch {torch.__version__}, {torch.get_num_threads()} threads "
          f"({os.cpu_count()} cores, load average {load:.1f} at start), "
          f"d_in {D_IN}, d_sae {D_SAE}, batch {BATCH}, k {K}, {steps} steps per side, "
          f"lr {args.lr}, relu l1 {args.l1}, dead window {args.dead_window} steps")
    data = synthetic_batches(steps + 1, seed=0)
    batches, held_out = data[:-1], data[-1]
    archs = ("topk", "relu") if args.arch == "both" else (args.arch,)
    results = {arch: bench_train(arch, batches, held_out, args) for arch in archs}
    print(f"\n{'arch':6s} {'side':10s} {'tok/s':>9s} {'step s':>8s} {'min s':>7s} "
          f"{'EV':>7s} {'L0':>8s}   (EV/L0 on a held-out batch after {steps * BATCH} tokens)")
    for arch, res in results.items():
        for name, r in res.items():
            print(f"{arch:6s} {name:10s} {r['tok_s']:9.0f} {r['step_s']:8.2f} "
                  f"{r['min_step_s']:7.2f} {r['ev']:7.3f} {r['l0']:8.1f}")
    ratios = {arch: res["sae_steer"]["tok_s"] / res["SAELens"]["tok_s"]
              for arch, res in results.items()}
    for arch, res in results.items():
        print(f"{arch}: sae_steer/SAELens tokens/s = {ratios[arch]:.2f}x, "
              f"EV {res['sae_steer']['ev']:.3f} vs {res['SAELens']['ev']:.3f}")

    lines = [f"RESULT train_ratio_{arch} {ratio:.2f}" for arch, ratio in ratios.items()]
    if not args.skip_harvest:
        harvest = bench_harvest(reps=2 if args.quick else 3, batch=8, ctx=128)
        print("\nharvest at blocks.1.hook_resid_post, TinyStories-33M shape, 1024 tokens/batch:")
        for name, tok_s in harvest.items():
            print(f"  {name:14s} {tok_s:9.0f} tok/s")
        harvest_ratio = harvest["stop_at_layer"] / harvest["full forward"]
        print(f"  ratio {harvest_ratio:.2f}x")
        lines.append(f"RESULT harvest_stop_at_layer_vs_full_forward {harvest_ratio:.2f}")
    print("\n" + "\n".join(lines))


if __name__ == "__main__":
    main()
