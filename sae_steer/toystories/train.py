"""The toy language model's training loop: a fixed number of AdamW steps on padded stories.

Like minGPT's trainer, it sees token tensors and a config, nothing about stories.
Padding (id 0) is masked out of the loss ourselves: ``return_type="loss"`` would count it.
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from jaxtyping import Int
from torch import Tensor
from tqdm.auto import tqdm
from transformer_lens import HookedTransformer

from sae_steer.config import WorldConfig

PAD_ID = 0  # "<pad>" is id 0 in every toy vocabulary (see text.SPECIAL_TOKENS)


def encode_stories(tokenizer, texts: list[str], n_ctx: int) -> Int[Tensor, "n_story n_ctx"]:
    """``<bos> story <eos>``, truncated to n_ctx and right-padded with ``<pad>``."""
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    out = torch.full((len(texts), n_ctx), PAD_ID, dtype=torch.long)
    for row, seq in enumerate(ids):
        seq = [tokenizer.bos_token_id] + seq + [tokenizer.eos_token_id]
        seq = seq[:n_ctx]
        out[row, :len(seq)] = torch.tensor(seq)
    return out


def masked_loss(model: HookedTransformer, tokens: Int[Tensor, "batch pos"]) -> tuple[Tensor, int]:
    """Mean next-token cross-entropy over real (non-pad) targets, and their count."""
    length = int((tokens != PAD_ID).sum(1).max())  # drop all-padding columns: less compute
    tokens = tokens[:, :length]
    logits = model(tokens[:, :-1], return_type="logits")  # [batch, pos-1, d_vocab]
    targets = tokens[:, 1:]
    real = targets != PAD_ID
    losses = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), reduction="none")
    n = int(real.sum())
    return (losses * real.flatten()).sum() / max(n, 1), n


def _lr_at(step: int, cfg: WorldConfig) -> float:
    """Linear warm-up, then cosine decay to 10% of the peak."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    frac = (step - cfg.warmup_steps) / max(cfg.steps - cfg.warmup_steps, 1)
    return cfg.lr * (0.1 + 0.45 * (1 + math.cos(math.pi * frac)))


def _optimizer(model: HookedTransformer, cfg: WorldConfig) -> torch.optim.Optimizer:
    # Decay matrices only; biases, LayerNorm gains and positional tables are left alone.
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "W_pos" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "W_pos" not in n)]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": rest, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.98))


@contextlib.contextmanager
def _cpu_threads(device: str):
    """Train on one torch thread on CPU, whatever the machine.

    The thread count changes the order of floating-point sums, so a build with 2 threads
    gives (slightly) different weights from one with 1: picking threads by machine load
    made the cached world depend on load. One thread is also the fast choice on a busy
    2-core machine (multi-threaded torch spin-waits) and costs little on an idle one.
    """
    on_cpu = str(device).startswith("cpu")
    before = torch.get_num_threads()
    if on_cpu:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def train_lm(model: HookedTransformer, tokens: Int[Tensor, "n_story n_ctx"], cfg: WorldConfig,
             progress: bool = True) -> float:
    """Train ``model`` in place for ``cfg.steps`` steps; returns the final smoothed loss."""
    with _cpu_threads(model.cfg.device):
        return _train(model, tokens, cfg, progress)


def _train(model: HookedTransformer, tokens: Tensor, cfg: WorldConfig, progress: bool) -> float:
    model.train()
    opt = _optimizer(model, cfg)
    batches = _batch_indices((tokens != PAD_ID).sum(1), cfg.batch_size, cfg.seed)
    smooth = None
    bar = tqdm(range(cfg.steps), desc=f"training toystories/{cfg.name}", disable=not progress)
    for step in bar:
        batch = tokens[next(batches)].to(model.cfg.device)
        loss = _step(model, opt, batch, _lr_at(step, cfg))
        smooth = loss if smooth is None else 0.95 * smooth + 0.05 * loss
        bar.set_postfix(loss=f"{smooth:.3f}", refresh=False)
    model.eval()
    return float(smooth)


def _batch_indices(lengths: Int[Tensor, " n_story"], batch_size: int, seed: int,
                   group: int = 16) -> Iterator[Tensor]:
    """Endless shuffled batches of story indices, similar lengths batched together.

    Each batch is trimmed to its longest story (see ``masked_loss``), so grouping
    stories of similar length (within ``group`` batches at a time, to keep the order
    random) saves about a third of the compute that padding would waste.
    """
    gen = torch.Generator().manual_seed(seed)  # batch order independent of global RNG
    batch_size = min(batch_size, len(lengths))
    while True:
        order = torch.randperm(len(lengths), generator=gen)
        chunk = batch_size * group
        for start in range(0, len(order) - batch_size + 1, chunk):
            idx = order[start:start + chunk]
            idx = idx[lengths[idx].argsort(stable=True)]
            blocks = [b for b in idx.split(batch_size) if len(b) == batch_size]
            for j in torch.randperm(len(blocks), generator=gen).tolist():
                yield blocks[j]


def _step(model: HookedTransformer, opt: torch.optim.Optimizer, batch: Tensor, lr: float) -> float:
    for group in opt.param_groups:
        group["lr"] = lr
    loss, _ = masked_loss(model, batch)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    return loss.item()
