"""SAE training, sae_steer vs SAELens, fair by construction: same data, same budget, each
side's own recipe run by its own trainer.

    python bench/train_vs_saelens.py            # full: d_sae 10,000, 1,048,576 tokens per side
    python bench/train_vs_saelens.py --quick    # smoke run (CI): d_sae 1,024, < 1 minute
    python bench/train_vs_saelens.py --tokens 524288   # a smaller budget (say so when quoting)
    # docs/benchmarks.md's run (67 min on 2 CPU cores): both sides' relu at held-out L0 30
    python bench/train_vs_saelens.py --calibrate-l0 30 --l1-ours 3.97 --l1-saelens 3.97

**Data** (identical batches for both sides: batch i is generated from seed (seed, i)). A
ground-truth dictionary of ``--n-true`` (10,000) random unit directions in d_in 768.
Feature i fires on a token independently with probability p_i = c / (i + 10) (Zipf,
exponent 1), c set so the expected number of firing features per token (true L0) is 30;
a firing feature's magnitude is s * (1 + Exp(1)), with s chosen so that the mean squared
norm of a token is d_in (so sae_steer's input normalisation is ~1 and both sides see the
same scale); plus i.i.d. Gaussian noise of std 0.1 per dimension (about 1 % of the
variance). Held-out evaluation set: 16,384 tokens (4,096 with --quick) from other seeds. The
dictionary's seed (12345) differs from the SAEs' initialisation seed (0): with the same
seed sae_steer's randn-initialised decoder would *be* the true dictionary.

**Recipes** (each side's documented defaults, none tuned on this bench):

- sae_steer: ``sae_steer.train.train`` with ``TrainConfig`` defaults except the shared
  values below; its schedules scaled to the budget in the defaults' proportions (LR warm-up
  5 % of steps, linear LR decay over the last 20 %, L1 warm-up 10 %, relu dead-feature
  resampling every 25 %); its own initialisation (unit decoder rows, encoder = decoder^T)
  and input normalisation (mean ||x||^2 = d_in).
- SAELens 6.x: ``SAETrainer(SAETrainerConfig(...)).fit()`` with the schedule of its training
  tutorial (``tutorials/training_a_sparse_autoencoder.ipynb``: no LR warm-up, linear LR decay
  over the last 20 % of steps, L1 warm-up over the first 5 %) and its defaults otherwise:
  decoder_init_norm 0.1, normalize_activations "none", topk with
  rescale_acts_by_decoder_norm=True and dense activations. (Without the L1 warm-up, its
  config default, its ReLU SAE at the L1 that L0 30 needs does not train on this data: at
  L1 10 and 14.5 it ended at the same L0 43 and EV -0.03.)
- Shared (both expose them): Adam (torch.optim.Adam, not fused), lr ``--lr`` (4e-4),
  betas (0.9, 0.999), batch 4096, dead-feature window (10 % of the steps, for both the
  AuxK mask and the dead count), AuxK coefficient 1/32 (Gao et al.), k 32 for topk.
  Gradient clipping on both: SAELens's trainer always clips the gradient norm to 1.0, so
  sae_steer's optimiser gets the same clip (an optimiser step pre-hook during its run).
- Sparsity: relu L1 coefficients ``--l1-ours`` / ``--l1-saelens`` (printed). The same L1
  number gives very different L0s on the two sides (their initialisations and L1 warm-ups
  differ), so ``--calibrate-l0 30`` first searches each side's coefficient on its own:
  secant steps on log L0 against log L1, interpolation once the target is bracketed, each
  probe a run of ``--calib-tokens`` (default: the whole budget, so the accepted probe *is*
  the measured run), until a probe's held-out L0 is within 15 % of the target (at most
  ``--calib-probes``); every probe is printed. The defaults of ``--l1-*`` are the starting
  points of that search. topk has k = 32 on both.

**Timing**: the batch iterator stamps the time between handing a batch out and being
asked for the next one: that is the trainer's step (data generation is not counted).
tokens/s = batch / median step time over the steps after ``--warmup`` (5). The runs are
sequential, ordered sae_steer relu, SAELens relu, SAELens topk, sae_steer topk, so a slow
drift of the machine's load hits both sides alike.

**Quality** after the budget, on the held-out set, in the raw activation space: explained
variance (1 - SSE / variance around the mean), L0, dead fraction (features firing on no
held-out token) and recovery (for each true direction, the max cosine similarity to any
decoder row, averaged over the true directions).
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import time
import warnings

os.environ.setdefault("TQDM_DISABLE", "1")  # SAELens's trainer always draws a progress bar

import torch  # noqa: E402
from torch.optim.optimizer import register_optimizer_step_pre_hook  # noqa: E402
from sae_lens.config import SAETrainerConfig  # noqa: E402
from sae_lens.saes.standard_sae import (  # noqa: E402
    StandardTrainingSAE,
    StandardTrainingSAEConfig,
)
from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig  # noqa: E402
from sae_lens.training.sae_trainer import SAETrainer  # noqa: E402

from sae_steer.config import SAEConfig, TrainConfig  # noqa: E402
from sae_steer.sae import SAE  # noqa: E402
from sae_steer.train import train  # noqa: E402

D_IN, TRUE_L0, NOISE, K, AUX_K_COEF = 768, 30.0, 0.1, 32, 1 / 32


# ---- ground truth ------------------------------------------------------------------------
class GroundTruth:
    """A dictionary of unit directions with Zipf firing; ``batch(i)`` is deterministic."""

    def __init__(self, n_true: int, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.directions = torch.randn(n_true, D_IN, generator=g)
        self.directions /= self.directions.norm(dim=1, keepdim=True)
        weights = 1.0 / (torch.arange(n_true, dtype=torch.float64) + 10.0)
        self.p = (weights * TRUE_L0 / weights.sum()).clamp(max=1.0).float()
        # E||x||^2 = sum_i p_i E[m^2] + noise; E[(1 + Exp(1))^2] = 5.
        self.mag_scale = ((D_IN - D_IN * NOISE ** 2) / (5.0 * float(self.p.sum()))) ** 0.5
        self.seed = seed
        self._kept: dict[tuple[int, int], torch.Tensor] = {}

    def batch(self, i: int, size: int) -> torch.Tensor:
        # Kept: every run (and calibration probe) reads the same batches, and generating
        # one costs about a second (1 M tokens at d_in 768 are 3.2 GB)
        if (i, size) not in self._kept:
            self._kept[i, size] = self._generate(i, size)
        return self._kept[i, size]

    def _generate(self, i: int, size: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + i + 1)
        fires = torch.rand(size, len(self.p), generator=g) < self.p
        rows, cols = fires.nonzero(as_tuple=True)
        mags = (1.0 + torch.empty(len(rows)).exponential_(1.0, generator=g)) * self.mag_scale
        x = torch.zeros(size, D_IN).index_add_(0, rows, self.directions[cols] * mags[:, None])
        return x + NOISE * torch.randn(size, D_IN, generator=g)


class TimedBatches:
    """Yields ``n`` batches; ``times`` holds, per batch, the seconds until the next request."""

    def __init__(self, truth: GroundTruth, n: int, size: int):
        self.truth, self.n, self.size, self.i = truth, n, size, 0
        self.times: list[float] = []
        self._handed: float | None = None

    def __iter__(self):
        return self

    def __next__(self) -> torch.Tensor:
        now = time.perf_counter()
        if self._handed is not None:
            self.times.append(now - self._handed)
        if self.i >= self.n:
            self._handed = None
            raise StopIteration
        x = self.truth.batch(self.i, self.size)
        self.i += 1
        self._handed = time.perf_counter()
        return x


# ---- the two sides -------------------------------------------------------------------------
def run_ours(arch: str, data: TimedBatches, args, steps: int):
    torch.manual_seed(0)
    sae = SAE(SAEConfig(d_in=D_IN, d_sae=args.d_sae, architecture=arch,
                        k=K if arch == "topk" else None, device="cpu"), seed=0)
    cfg = TrainConfig(
        n_steps=steps, batch_size=args.batch, lr=args.lr, adam_beta1=0.9, adam_beta2=0.999,
        lr_warmup_steps=steps // 20, lr_decay_steps=steps // 5, l1_coefficient=args.l1_ours,
        l1_warmup_steps=steps // 10, aux_k_coefficient=AUX_K_COEF,
        dead_after_steps=args.dead_window, resample_every=max(steps // 4, 1),
        log_every=max(steps, 1), eval_sequences=0)

    def clip(optimizer, *_):  # the same clip SAELens's trainer applies
        torch.nn.utils.clip_grad_norm_(
            [p for group in optimizer.param_groups for p in group["params"]], 1.0)

    handle = register_optimizer_step_pre_hook(clip)
    try:
        train(sae, data, cfg, progress=False)
    finally:
        handle.remove()
    return sae.encode, sae.decode, sae.W_dec.detach()


def run_saelens(arch: str, data: TimedBatches, args, steps: int):
    torch.manual_seed(0)
    if arch == "topk":
        sae = TopKTrainingSAE(TopKTrainingSAEConfig(
            d_in=D_IN, d_sae=args.d_sae, k=K, aux_loss_coefficient=AUX_K_COEF, device="cpu"))
    else:
        sae = StandardTrainingSAE(StandardTrainingSAEConfig(
            d_in=D_IN, d_sae=args.d_sae, l1_coefficient=args.l1_saelens,
            l1_warm_up_steps=steps // 20, device="cpu"))
    cfg = SAETrainerConfig(
        total_training_samples=steps * args.batch, train_batch_size_samples=args.batch,
        lr=args.lr, lr_end=args.lr / 10, lr_decay_steps=steps // 5,
        adam_beta1=0.9, adam_beta2=0.999, device="cpu",
        dead_feature_window=args.dead_window, feature_sampling_window=max(steps, 1))
    SAETrainer(cfg, sae, data_provider=data).fit()
    sae.eval()
    return sae.encode, sae.decode, sae.W_dec.detach()


# ---- measuring -----------------------------------------------------------------------------
@torch.no_grad()
def quality(encode, decode, W_dec: torch.Tensor, held_out: torch.Tensor,
            truth: GroundTruth) -> dict[str, float]:
    feats = torch.cat([encode(chunk) for chunk in held_out.split(4096)])
    x_hat = torch.cat([decode(chunk) for chunk in feats.split(4096)])
    ev = 1 - (held_out - x_hat).pow(2).sum() / (held_out - held_out.mean(0)).pow(2).sum()
    rows = W_dec.float() / W_dec.float().norm(dim=1, keepdim=True).clamp_min(1e-8)
    best = torch.cat([(truth.directions[i:i + 2048] @ rows.T).max(dim=1).values
                      for i in range(0, len(truth.directions), 2048)])
    return {"ev": float(ev), "l0": float((feats > 0).sum(-1).float().mean()),
            "dead": float(((feats > 0).sum(0) == 0).float().mean()),
            "recovery": float(best.mean())}


def calibrate_l1(side: str, truth, held_out, args, steps: int) -> dict[str, float]:
    """Search ``side``'s relu L1 coefficient for held-out L0 ``args.calibrate_l0``.

    Leaves the coefficient in ``args`` and returns the last probe's figures (a full
    ``bench`` run: when the probes use the whole budget, that probe is the measurement).
    """
    attr = "l1_ours" if side == "sae_steer" else "l1_saelens"
    target, slope = args.calibrate_l0, -1.0  # d log L0 / d log L1; refined by the probes
    seen: list[tuple[float, float]] = []
    for probe in range(args.calib_probes):
        l1 = getattr(args, attr)
        print(f"  calibrating {side} relu, probe {probe + 1}: L1 {l1:.4g}", flush=True)
        out = bench("relu", side, truth, held_out, args, steps)
        seen.append((math.log(l1), math.log(max(out["l0"], 0.1))))
        if abs(seen[-1][1] - math.log(target)) < math.log(1.15):
            break
        if probe == args.calib_probes - 1:
            print(f"  (no probe within 15 % of L0 {target:g}: keeping the last)", flush=True)
            break
        log_t = math.log(target)
        below = [pt for pt in seen if pt[1] < log_t]   # L1 too strong
        above = [pt for pt in seen if pt[1] > log_t]   # L1 too weak
        if below and above:  # bracketed: interpolate between the closest on each side
            (a1, a0), (b1, b0) = max(above), min(below)
            setattr(args, attr, math.exp(a1 + (log_t - a0) * (b1 - a1) / (b0 - a0)))
            continue
        if len(seen) >= 2 and seen[-1][0] != seen[-2][0]:
            fit = (seen[-1][1] - seen[-2][1]) / (seen[-1][0] - seen[-2][0])
            slope = min(fit, -0.2)  # L0 falls as L1 grows; never step on a flat estimate
        step = (log_t - seen[-1][1]) / slope
        setattr(args, attr, l1 * math.exp(max(min(step, 1.0), -1.0)))  # at most x e per probe
    return out


def bench(arch: str, side: str, truth, held_out, args, steps: int) -> dict[str, float]:
    data = TimedBatches(truth, steps, args.batch)
    start = time.perf_counter()
    encode, decode, W_dec = (run_ours if side == "sae_steer" else run_saelens)(
        arch, data, args, steps)
    wall = time.perf_counter() - start
    timed = data.times[args.warmup:] or data.times
    out = quality(encode, decode, W_dec, held_out, truth)
    out.update(tok_s=args.batch / statistics.median(timed), steps=data.i, wall=wall)
    print(f"  {arch:5s} {side:9s} {out['tok_s']:9.0f} tok/s  EV {out['ev']:.3f}  "
          f"L0 {out['l0']:6.1f}  dead {out['dead']:.1%}  recovery {out['recovery']:.3f}  "
          f"({out['steps']} steps, {wall:.0f} s)", flush=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run: small width, few steps")
    p.add_argument("--tokens", type=int, default=None, help="tokens per side (full: 2**20)")
    p.add_argument("--d-sae", type=int, default=None, help="SAE width (full: 10,000)")
    p.add_argument("--n-true", type=int, default=None, help="true directions (= d_sae)")
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--lr", type=float, default=4e-4)
    p.add_argument("--l1-ours", type=float, default=5.0, help="sae_steer relu L1 coefficient")
    p.add_argument("--l1-saelens", type=float, default=5.0, help="SAELens relu L1 coefficient")
    p.add_argument("--calibrate-l0", type=float, default=None,
                   help="first search each side's relu L1 for this held-out L0 (e.g. 30)")
    p.add_argument("--calib-tokens", type=int, default=None,
                   help="tokens per calibration probe (default: the whole budget)")
    p.add_argument("--calib-probes", type=int, default=4, help="most probes per side")
    p.add_argument("--warmup", type=int, default=5, help="untimed first steps per run")
    p.add_argument("--arch", choices=("relu", "topk", "both"), default="both")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    args.d_sae = args.d_sae or (1024 if args.quick else 10_000)
    args.n_true = args.n_true or args.d_sae
    if args.quick:
        args.batch = min(args.batch, 1024)
        args.warmup = min(args.warmup, 2)
    tokens = args.tokens or (16 * args.batch if args.quick else 2 ** 20)
    steps = max(tokens // args.batch, args.warmup + 2)
    args.dead_window = max(steps // 10, 2)
    warnings.filterwarnings("ignore")
    truth = GroundTruth(args.n_true, seed=12345)  # not 0: the SAEs' init seed
    held_out = torch.cat([truth.batch(10_000_000 + i, 4096)
                          for i in range(1 if args.quick else 4)])
    print(f"device cpu (no accelerator used: these are CPU figures), torch {torch.__version__},"
          f" {torch.get_num_threads()} threads, {os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.1f} at start")
    print(f"data: d_in {D_IN}, {args.n_true:,} true directions, true L0 "
          f"{float(truth.p.sum()):.1f}, noise std {NOISE}; SAE d_sae {args.d_sae:,}, batch "
          f"{args.batch}, {steps} steps = {steps * args.batch:,} tokens per side; Adam lr "
          f"{args.lr}, betas (0.9, 0.999), grad clip 1.0 on both; dead window "
          f"{args.dead_window} steps; relu L1 sae_steer {args.l1_ours}, SAELens "
          f"{args.l1_saelens}; topk k {K}, AuxK coefficient 1/32 on both")
    archs = ("relu", "topk") if args.arch == "both" else (args.arch,)
    res: dict[tuple[str, str], dict[str, float]] = {}
    if args.calibrate_l0 and "relu" in archs:
        calib_steps = max((args.calib_tokens or tokens) // args.batch, args.warmup + 2)
        args.dead_window = max(calib_steps // 10, 2)
        for side in ("sae_steer", "SAELens"):
            probe = calibrate_l1(side, truth, held_out, args, calib_steps)
            if calib_steps == steps:  # the accepted probe ran the whole budget: it is the run
                res["relu", side] = probe
        args.dead_window = max(steps // 10, 2)
        print(f"calibrated relu L1: sae_steer {args.l1_ours:.4g}, SAELens "
              f"{args.l1_saelens:.4g} (target L0 {args.calibrate_l0:g})", flush=True)
    order = [(a, s) for a in archs
             for s in (("sae_steer", "SAELens") if a == "relu" else ("SAELens", "sae_steer"))]
    for arch, side in order:
        if (arch, side) not in res:
            res[arch, side] = bench(arch, side, truth, held_out, args, steps)
    lines = []
    for arch in archs:
        ours, theirs = res[arch, "sae_steer"], res[arch, "SAELens"]
        lines += [f"RESULT fair_ratio_{arch} {ours['tok_s'] / theirs['tok_s']:.2f}",
                  f"RESULT fair_ev_gap_{arch} {ours['ev'] - theirs['ev']:+.3f}",
                  f"RESULT fair_l0_{arch} {ours['l0']:.1f} vs {theirs['l0']:.1f}",
                  f"RESULT fair_dead_{arch} {ours['dead']:.3f} vs {theirs['dead']:.3f}",
                  f"RESULT fair_recovery_{arch} {ours['recovery']:.3f} vs "
                  f"{theirs['recovery']:.3f}"]
        if arch == "relu":
            lines.append(f"RESULT fair_l1_relu {args.l1_ours:.4g} vs {args.l1_saelens:.4g}")
    print("\n(sae_steer vs SAELens; ratio = sae_steer / SAELens tokens/s; ev_gap = "
          "sae_steer EV - SAELens EV)\n" + "\n".join(lines))


if __name__ == "__main__":
    main()
