"""From texts to the training loop's batches: streamed, or through the activation store.

    texts -> lm.token_batches (windows) -> lm.token_activations (hook, no BOS)
          -> store="stream":   lm.shuffle_buffer                      (read once)
             epochs=None:      shuffle_buffer, recorded into the store; then store epochs
             epochs=E:         the store, filled first; E whole-store shuffles

With ``epochs=None`` the first pass is exactly the streamed one, so a run whose texts
last for ``n_steps`` gives the same SAE as streaming; only a run that would have run out
goes on over epochs of the store.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from typing import Any

from torch import Tensor
from transformer_lens import HookedTransformer

from sae_steer.config import TrainConfig
from sae_steer.lm.activations import shuffle_buffer, token_activations, validate_hook
from sae_steer.lm.texts import TokenCount, token_batches
from sae_steer.train.store import ActivationStore, EpochBatches, recorded


@dataclasses.dataclass
class Harvest:
    """The loop's batches, the config it runs (``n_steps`` derived for ``epochs=``), and
    what was read; ``close()`` removes the store."""

    batches: Iterable[Tensor]
    train_cfg: TrainConfig
    count: TokenCount
    store: ActivationStore | None
    mode: str
    activations: int = 0

    def report(self) -> dict[str, Any]:
        """What a result records: texts, windows and tokens read (BOS included), tokens
        cut (``long_texts="truncate"``), activation vectors harvested, where they were
        kept, and the last epoch trained."""
        where = self.mode
        if self.store is not None:
            where = "dropped" if self.store.dropped else ("disk" if self.store.spilled else "memory")
        return {**self.count.as_dict(), "activations": self.activations, "store": where,
                "epochs": getattr(self.batches, "epoch", 1)}

    def close(self) -> None:
        if self.store is not None:
            self.store.close()


def harvest(model: HookedTransformer, texts: Iterable[str], hook_name: str, cfg: TrainConfig,
            d_in: int, *, progress: bool = True) -> Harvest:
    """Batches of ``cfg.batch_size`` activations at ``hook_name`` for ``cfg``'s data mode."""
    validate_hook(model, hook_name)
    count = TokenCount()
    filling = cfg.epochs is not None  # the store is filled before training starts
    windows = token_batches(model, texts, cfg.context_size, cfg.model_batch_size,
                            long_texts=cfg.long_texts, count=count, progress=progress and filling)
    out = Harvest(iter(()), cfg, count, None, cfg.store)
    chunks = _counted(token_activations(model, windows, hook_name, skip_bos=cfg.skip_bos,
                                         autocast=cfg.harvest_dtype), out)
    buffer = cfg.buffer_batches * cfg.batch_size
    if cfg.store == "stream":
        out.batches = shuffle_buffer(chunks, cfg.batch_size, buffer, seed=cfg.seed)
        return out
    spill = cfg.store == "disk" or (cfg.store == "auto" and filling)
    budget = 0 if cfg.store == "disk" else cfg.store_budget_bytes
    out.store = store = ActivationStore(d_in, budget_bytes=budget, spill=spill)
    if not filling:
        first = shuffle_buffer(recorded(chunks, store), cfg.batch_size, buffer, seed=cfg.seed)
        out.batches = EpochBatches(store, cfg.batch_size, cfg.seed, first_pass=first)
        return out
    try:
        for chunk in chunks:
            store.append(chunk)
        store.finish()
        out.train_cfg = _epochs_cfg(cfg, store)
    except BaseException:
        store.close()
        raise
    out.batches = EpochBatches(store, cfg.batch_size, cfg.seed, epochs=cfg.epochs)
    return out


def _counted(chunks: Iterable[Tensor], out: Harvest) -> Iterator[Tensor]:
    for chunk in chunks:
        out.activations += len(chunk)
        yield chunk


def _epochs_cfg(cfg: TrainConfig, store: ActivationStore) -> TrainConfig:
    if store.dropped:
        raise ValueError(
            f"the activations do not fit in store_budget_bytes={cfg.store_budget_bytes:,} "
            "with store='memory': raise the budget, or use store='auto' (spills to disk)")
    per_epoch = len(store) // cfg.batch_size
    if per_epoch == 0:
        raise ValueError(f"the texts give {len(store)} activations, fewer than one batch "
                         f"(batch_size={cfg.batch_size}): give more texts or a smaller batch")
    n_steps = cfg.epochs * per_epoch
    warmup, decay = cfg.lr_warmup_steps or 0, cfg.lr_decay_steps or 0  # None: a fraction, fits
    if warmup + decay > n_steps:
        raise ValueError(
            f"{cfg.epochs} epochs of {per_epoch} batches are {n_steps} steps, fewer than "
            f"lr_warmup_steps + lr_decay_steps ({warmup} + {decay}): lower those, leave "
            "them at None (fractions of the steps) or train more epochs")
    return cfg.replace(n_steps=n_steps)
