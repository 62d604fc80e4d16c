"""Train an SAE over an iterator of activation batches. Knows nothing about models.

    for each step: x = next batch * scale
                   loss = sae.training_forward(x, L1 / L0 (warmed up), dead_mask)
                   Adam step (LR warm-up / decay), sae.normalize_decoder_()
                   every resample_every steps, re-initialise dead features
                   every log_every steps: metrics (+ eval_fn, e.g. CE increase)
                   every checkpoint_every steps: atomic checkpoint

Resuming replays the same iterator and skips the batches already consumed, so with the
same seed the resumed weights are bit-identical (on CPU) to an uninterrupted run's.
The model-dependent CE-loss metric arrives as ``eval_fn`` (see ``pipeline.py``); what a
checkpoint holds is ``checkpoint.py``'s business; the curves are drawn by ``ui.plots``.
``_step`` and ``_log`` are the only training step and metrics row: they take
``collectives.Collectives``, which in one process does nothing and under
``distributed.py`` reduces over the ranks.
"""
from __future__ import annotations

import dataclasses
import itertools
import math
import time
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from sae_steer.config import TrainConfig
from sae_steer.config.sae import BATCH_TOPK, TOPK_FAMILY
from sae_steer.sae import SAE, TrainStepOutput
from sae_steer.sae.precision import tf32_matmuls
from sae_steer.train import checkpoint
from sae_steer.train.checkpoint import TrainState
from sae_steer.train.collectives import ONE_PROCESS, Collectives
from sae_steer.train.resample import resample_dead

Reconstruct = Callable[[Tensor], Tensor]
EvalFn = Callable[[Reconstruct], dict[str, float]]


class NonFiniteError(ValueError):
    """NaN/inf in the activations or the loss; ``step`` says where training stopped."""

    def __init__(self, message: str, step: int):
        super().__init__(message)
        self.step = step


@dataclasses.dataclass
class TrainResult:
    """What ``train`` returns: the trained SAE and the metrics history."""

    sae: SAE
    history: list[dict[str, float]]
    """One row per logged step: step, lr, l1_coefficient, loss, mse, explained_variance,
    l0, dead_fraction, dense_fraction (+ whatever ``eval_fn`` returned, e.g. ce_increase)."""
    steps: int
    """Steps completed (``cfg.n_steps`` unless the data ran out)."""
    seconds: float
    """Wall time of this call (not counting the time before a resume)."""
    scale: float
    """Input scale used while training (already folded into the SAE's biases)."""
    start_step: int = 0
    """Step this call started from (the checkpoint's step after a resume)."""
    harvest: dict = dataclasses.field(default_factory=dict)
    """What the pipeline read (``train.harvest.Harvest.report``): texts, windows, tokens
    (BOS included), tokens cut, activations harvested, store kind, last epoch."""

    @property
    def final(self) -> dict[str, float]:
        return self.history[-1] if self.history else {}

    def summary(self) -> str:
        """One line of the final metrics, for notebooks and logs."""
        row = self.final
        parts = [f"{self.steps} steps ({int(row.get('tokens', 0)):,} tokens)"]
        if self.harvest:
            epochs = self.harvest.get("epochs", 1)
            parts[0] += (f" from {self.harvest.get('activations', 0):,} harvested activations"
                         f" of {self.harvest.get('texts', 0):,} texts"
                         + (f", {epochs} epochs" if epochs > 1 else ""))
        for key, label, fmt in [("explained_variance", "explained variance", "{:.3f}"),
                                ("l0", "L0", "{:.1f}"), ("dead_fraction", "dead", "{:.1%}"),
                                ("dense_fraction", "dense", "{:.1%}"),
                                ("ce_increase", "CE increase", "{:.3f} nats")]:
            if key in row:
                parts.append(f"{label} {fmt.format(row[key])}")
        return " | ".join(parts)


def train(
    sae: SAE,
    batches: Iterable[Float[Tensor, "batch d_in"]],
    cfg: TrainConfig,
    *,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    eval_fn: EvalFn | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train ``sae`` in place on ``batches`` (each ``[cfg.batch_size, d_in]``).

    ``checkpoint_dir``: write checkpoints there every ``cfg.checkpoint_every`` steps and
    at the end. ``resume=True``: continue from the newest checkpoint in it (from scratch
    when there is none); ``batches`` must be the same stream from its start.
    ``eval_fn(reconstruct)`` is called at every logged step with a function mapping
    activations to the SAE's reconstruction, and returns extra metrics.
    """
    if resume and checkpoint_dir is None:
        raise ValueError("resume=True needs checkpoint_dir (where the checkpoints are)")
    cfg = cfg.resolved(sae.d_sae, sae.d_in)  # auto lr and schedules, made concrete for this run
    sae.requires_grad_(True)  # a loaded or trained SAE comes without grad (see _finish)
    optimizer = torch.optim.Adam(sae.parameters(), lr=cfg.lr,
                                 betas=(cfg.adam_beta1, cfg.adam_beta2))
    state = TrainState.fresh(sae, cfg.seed)
    if resume and (last := checkpoint.latest_checkpoint(checkpoint_dir)) is not None:
        checkpoint.restore_training(last, sae, optimizer, state, cfg)
    start_step = state.step
    source = iter(batches)
    stream = itertools.islice(source, start_step, None)  # data position = step
    start = time.perf_counter()
    bar = tqdm(total=cfg.n_steps, initial=state.step, disable=not progress, desc="train SAE")
    epoch = None
    try:
        while state.step < cfg.n_steps:
            x = next(stream, None)
            if x is None:
                warnings.warn(f"the activation stream ran out after {state.step} of "
                              f"{cfg.n_steps} steps; give more texts for a full run (or "
                              "keep them for several epochs: TrainConfig.store/epochs)")
                break
            if getattr(source, "epoch", None) != epoch:  # an activation store's epochs
                epoch = source.epoch
                bar.set_description(f"train SAE (epoch {epoch})")
            out, x = _step(sae, optimizer, x, state, cfg, checkpoint_dir)
            if state.step % cfg.log_every == 0 or state.step == cfg.n_steps:
                row = _log(sae, out, x, state, cfg, eval_fn)
                if epoch is not None:
                    row["epoch"] = epoch
                bar.set_postfix(_short(row))
            if checkpoint_dir is not None and (
                    state.step == cfg.n_steps or
                    (cfg.checkpoint_every and state.step % cfg.checkpoint_every == 0)):
                checkpoint.save_training(checkpoint_dir, sae, optimizer, state, cfg)
            bar.update()
    finally:
        bar.close()
    _finish(sae, state)
    return TrainResult(sae, state.history, state.step, time.perf_counter() - start,
                       state.scale or 1.0, start_step)


def schedules(step: int, cfg: TrainConfig, architecture: str = "relu") -> tuple[float, float]:
    """(learning rate, sparsity coefficient) for 0-based ``step``: linear warm-ups, linear
    LR decay. The coefficient is ``architecture``'s (``TrainConfig.sparsity_coefficient``)."""
    lr = cfg.lr
    if step < cfg.lr_warmup_steps:
        lr *= (step + 1) / cfg.lr_warmup_steps
    decay_start = cfg.n_steps - cfg.lr_decay_steps
    if cfg.lr_decay_steps and step >= decay_start:
        lr *= (cfg.n_steps - step) / cfg.lr_decay_steps
    l1 = cfg.sparsity_coefficient(architecture)
    if step < cfg.l1_warmup_steps:
        l1 *= (step + 1) / cfg.l1_warmup_steps
    return lr, l1


def _step(sae: SAE, optimizer: torch.optim.Optimizer, x: Tensor, state: TrainState,
          cfg: TrainConfig, checkpoint_dir, comm: Collectives = ONE_PROCESS
          ) -> tuple[TrainStepOutput, Tensor]:
    x = x.to(sae.device, sae.dtype)
    if state.scale is None:  # first batch: pick the scale giving mean ||x||^2 = d_in
        state.scale = _input_scale(x, comm) if cfg.normalize_activations else 1.0
    x = x * state.scale
    arch = sae.cfg.architecture
    lr, coefficient = schedules(state.step, cfg, arch)
    for group in optimizer.param_groups:
        group["lr"] = lr
    topk = arch in TOPK_FAMILY
    with tf32_matmuls(cfg.tf32):  # only the SAE's work: the setting is process-wide
        out = comm.forward(
            sae, x, l1_coefficient=coefficient if arch == "relu" else 0.0,
            l0_coefficient=coefficient if arch == "jumprelu" else 0.0,
            dead_mask=state.dead(cfg) if topk else None,
            aux_k_coefficient=cfg.aux_k_coefficient if topk else 0.0,
            bandwidth=cfg.jumprelu_bandwidth, threshold_lr=cfg.topk_threshold_lr)
        # both checks in one host sync (and one reduction over ranks), before any weight moves
        bad = comm.all_sum(torch.stack([~torch.isfinite(x).all(), ~torch.isfinite(out.loss)]).long())
        if bad.any():
            _fail("activations" if bad[0] else "loss", state, checkpoint_dir)
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        optimizer.step()
        sae.normalize_decoder_()  # unit rows, so L1 and steering scales compare across features
    state.step += 1
    state.record_fires(comm.all_sum(out.fires), x.shape[0] * comm.world, cfg)  # all ranks'
    if (cfg.resample_every and state.step % cfg.resample_every == 0
            and state.step <= cfg.n_steps - cfg.lr_decay_steps):
        dead = state.dead(cfg)
        # on the global batch, with the generator every rank shares: ranks resample alike
        resample_dead(sae, optimizer, comm.gather(x), dead, state.generator)
        state.revived(dead, cfg)
    return out, x


def _input_scale(x: Tensor, comm: Collectives = ONE_PROCESS) -> float:
    mean_sq = comm.mean(x.pow(2).sum(-1).mean().double()).item()
    return math.sqrt(x.shape[-1] / mean_sq) if mean_sq > 0 else 1.0


def _fail(what: str, state: TrainState, checkpoint_dir) -> None:
    last = checkpoint.latest_checkpoint(checkpoint_dir) if checkpoint_dir else None
    kept = f"the last good checkpoint is {last}" if last else "no checkpoint was written"
    step = state.step + 1  # 1-based, as in the history and checkpoint names
    raise NonFiniteError(
        f"NaN/inf in the {what} at step {step}: training stopped before updating the "
        f"weights, and {kept}. Check the activations, or lower lr / l1_coefficient.", step)


@torch.no_grad()
def _log(sae: SAE, out: TrainStepOutput, x: Tensor, state: TrainState, cfg: TrainConfig,
         eval_fn: EvalFn | None, comm: Collectives = ONE_PROCESS) -> dict[str, float]:
    """Append one metrics row (on this step's batch, in the scaled space) and return it.
    Across ranks each figure is of the global batch (the means are means of the ranks').

    batchtopk and matryoshka_batchtopk report EV and L0 of the encoder they run with after
    training (JumpReLU at the estimated threshold), as every other figure here is: the
    training step's own L0 is k by construction."""
    arch = sae.cfg.architecture
    lr, coefficient = schedules(state.step - 1, cfg, arch)
    wide = torch.promote_types(out.loss.dtype, torch.float32)  # no rounding of any figure
    feats = sae.encode(x)
    x_hat, l0 = out.x_hat, out.l0
    if arch in BATCH_TOPK:
        x_hat, l0 = sae.decode(feats), (feats > 0).sum(-1).float().mean()
    means = comm.mean(torch.cat([  # one reduction for all of them
        torch.stack([out.loss.detach(), out.mse_loss, l0]).to(wide),
        (feats > 0).float().mean(0).to(wide)]))
    loss, mse, l0 = means[:3].tolist()
    freq = means[3:].float()
    state.freq_sum += freq
    row = {
        "step": state.step, "tokens": state.step * cfg.batch_size, "lr": lr,
        "l0_coefficient" if arch == "jumprelu" else "l1_coefficient": coefficient,
        "loss": loss, "mse": mse,
        "explained_variance": explained_variance(x, x_hat, comm),
        "l0": l0,
        "dead_fraction": state.dead(cfg).float().mean().item(),
        "dense_fraction": (freq > cfg.dense_threshold).float().mean().item(),
    }
    if eval_fn is not None:
        row.update(eval_fn(_reconstructor(sae, state.scale or 1.0)))
    state.history.append(row)
    return row


def explained_variance(x: Float[Tensor, "batch d"], x_hat: Float[Tensor, "batch d"],
                       comm: Collectives = ONE_PROCESS) -> float:
    """1 - SSE / total variance around the batch mean (not around zero, which flatters);
    with ``comm`` over ranks, of the global batch."""
    x, x_hat = x.float(), x_hat.float()
    mean = comm.mean(x.mean(0))
    sse, total = comm.all_sum(torch.stack([(x - x_hat).pow(2).sum(), (x - mean).pow(2).sum()]))
    return (1 - sse / total).item() if total > 0 else float("nan")


def _reconstructor(sae: SAE, scale: float) -> Reconstruct:
    @torch.no_grad()
    def reconstruct(acts: Tensor) -> Tensor:
        x = acts.to(sae.device, sae.dtype) * scale
        return (sae(x) / scale).to(acts.device, acts.dtype)
    return reconstruct


def _short(row: dict[str, float]) -> dict[str, str]:
    keys = {"explained_variance": "ev", "l0": "l0", "dead_fraction": "dead",
            "ce_increase": "dCE"}
    return {short: f"{row[k]:.3g}" for k, short in keys.items() if k in row}


@torch.no_grad()
def _finish(sae: SAE, state: TrainState) -> None:
    """Fold the input scale into the biases, record firing frequencies, and hand the SAE
    over for use: its parameters stop requiring grad, so ``float(sae.threshold.min())`` or
    ``sae.W_dec[i].norm().item()`` in a notebook neither warns nor builds a graph
    (``train`` turns grad back on for another run).

    Trained on x*s: for s > 0, every architecture commutes with scaling (a threshold
    scaled with its pre-activation), so the SAE for x has the same W_enc/W_dec (still unit
    rows) and b_enc/s, b_dec/s, threshold/s; feats come out divided by s.
    """
    scale = state.scale or 1.0
    sae.b_enc.div_(scale)
    sae.b_dec.div_(scale)
    if hasattr(sae, "threshold"):
        sae.threshold.div_(scale)
    n_logs = max(len(state.history), 1)
    sae.log_feature_sparsity = (state.freq_sum / n_logs).clamp_min(1e-10).log10().to(sae.dtype)
    sae.requires_grad_(False)
