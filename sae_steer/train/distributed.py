"""Data-parallel SAE training with ``torch.distributed`` (DDP), one process per device.

    torchrun --nproc-per-node 8 -m sae_steer.train.distributed \\
        --activations acts.npy --d-sae 10000 --steps 2000 --checkpoint-dir ckpt [--resume]

or, from Python inside processes that already called ``dist.init_process_group``,
``train_distributed(sae, my_shard, cfg)``. What stays the same as ``loop.train``:

- ``cfg.batch_size`` is the *global* batch (tokens per optimiser step); each of the N ranks
  reads its own shard, ``batch_size // N`` rows per step (``shard_batches`` cuts a global
  stream that way; the CLI reads only its rows of a memory-mapped ``.npy``).
- the training step and the metrics row are ``loop._step`` and ``loop._log`` themselves,
  given ``_Ranks`` (``collectives.Collectives`` over torch.distributed, forward via DDP);
- gradients are averaged by DDP, so each rank takes the step a single process would take
  on the concatenated global batch (equal within float tolerance: the test checks it);
- the input scale, the NaN checks, the dead-feature bookkeeping (``fires`` is summed over
  ranks) and the logged metrics are reduced over all ranks; dead-feature resampling runs
  on the gathered global batch with the shared generator, so every rank resamples alike;
- one exception: a BatchTopK (and Matryoshka BatchTopK) rank keeps the top ``k`` x its own
  shard, not of the global batch, as SAELens's BatchTopK does on each device; the inference
  threshold every rank ends with is rank 0's (DDP broadcasts buffers before each step);
- only rank 0 writes checkpoints (atomically, ``checkpoint.save_training``); resuming,
  every rank loads the checkpoint rank 0 names (a shared file system is assumed) and skips
  the batches its shard already gave.
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from sae_steer.config import SAEConfig, TrainConfig
from sae_steer.sae import SAE, TrainStepOutput
from sae_steer.train import checkpoint
from sae_steer.train.checkpoint import TrainState
from sae_steer.train.collectives import Collectives
from sae_steer.train.loop import EvalFn, TrainResult, _finish, _log, _step


class _TrainingForward(nn.Module):
    """``sae.training_forward`` as a module's forward, so DDP can wrap it."""

    def __init__(self, sae: SAE):
        super().__init__()
        self.sae = sae

    def forward(self, x: Tensor, **kwargs) -> tuple[Tensor, TrainStepOutput]:
        out = self.sae.training_forward(x, **kwargs)
        return out.loss, out  # the loss as a plain output, which DDP's backward hooks see


class _Ranks(Collectives):
    """``loop``'s collectives over ``dist``'s ranks, and the forward through DDP."""

    def __init__(self, model: DistributedDataParallel):
        self.model, self.world = model, dist.get_world_size()

    def forward(self, sae: SAE, x: Tensor, **kwargs) -> TrainStepOutput:
        loss, out = self.model(x, **kwargs)  # self.model wraps this very sae
        return dataclasses.replace(out, loss=loss)

    def all_sum(self, t: Tensor) -> Tensor:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    def gather(self, x: Tensor) -> Tensor:
        parts = [torch.empty_like(x) for _ in range(self.world)]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts)


def shard_batches(batches: Iterable[Tensor], rank: int, world_size: int) -> Iterator[Tensor]:
    """Rank ``rank``'s rows of each global batch: rows ``[rank*b, (rank+1)*b)``, b = B // N."""
    for x in batches:
        if len(x) % world_size:
            raise ValueError(f"a global batch of {len(x)} rows does not split into "
                             f"{world_size} equal shards")
        b = len(x) // world_size
        yield x[rank * b:(rank + 1) * b]


def train_distributed(sae: SAE, batches: Iterable[Tensor], cfg: TrainConfig, *,
                      checkpoint_dir: str | Path | None = None, resume: bool = False,
                      eval_fn: EvalFn | None = None) -> TrainResult:
    """``loop.train`` over ``dist``'s ranks: ``batches`` is this rank's shard, each batch
    ``[cfg.batch_size // world_size, d_in]``. Every rank must call it with an SAE built the
    same way (DDP copies rank 0's weights to the others at the start); every rank gets the
    same trained SAE back. ``eval_fn`` runs on rank 0 only."""
    if not dist.is_initialized():
        raise RuntimeError("call torch.distributed.init_process_group first (torchrun does "
                           "it for `python -m sae_steer.train.distributed`)")
    world, rank = dist.get_world_size(), dist.get_rank()
    if cfg.batch_size % world:
        raise ValueError(f"batch_size={cfg.batch_size} (the global batch) must divide into "
                         f"{world} ranks")
    if resume and checkpoint_dir is None:
        raise ValueError("resume=True needs checkpoint_dir (where the checkpoints are)")
    cfg = cfg.resolved(sae.d_sae, sae.d_in)  # auto lr and schedules, the same on every rank
    sae.requires_grad_(True)  # DDP wraps only parameters that need grad (a loaded SAE has none)
    comm = _Ranks(DistributedDataParallel(_TrainingForward(sae)))
    optimizer = torch.optim.Adam(sae.parameters(), lr=cfg.lr,
                                 betas=(cfg.adam_beta1, cfg.adam_beta2))
    state = TrainState.fresh(sae, cfg.seed)
    if resume:
        last = [checkpoint.latest_checkpoint(checkpoint_dir) if rank == 0 else None]
        dist.broadcast_object_list(last, src=0)
        if last[0] is not None:
            checkpoint.restore_training(Path(last[0]), sae, optimizer, state, cfg)
    start_step, start = state.step, time.perf_counter()
    stream = itertools.islice(iter(batches), start_step, None)
    while state.step < cfg.n_steps:
        x = next(stream, None)
        if comm.all_sum(torch.tensor([x is None], dtype=torch.long, device=sae.device)).item():
            break  # some rank's shard ran out: all stop at the same step
        out, x = _step(sae, optimizer, x, state, cfg, checkpoint_dir, comm)
        if state.step % cfg.log_every == 0 or state.step == cfg.n_steps:
            _log(sae, out, x, state, cfg, eval_fn if rank == 0 else None, comm)
        if checkpoint_dir is not None and (
                state.step == cfg.n_steps or
                (cfg.checkpoint_every and state.step % cfg.checkpoint_every == 0)):
            if rank == 0:
                checkpoint.save_training(checkpoint_dir, sae, optimizer, state, cfg)
            dist.barrier()
    for buffer in sae.buffers():  # DDP broadcasts them before each step; this is after the last
        dist.broadcast(buffer, src=0)
    _finish(sae, state)
    return TrainResult(sae, state.history, state.step, time.perf_counter() - start,
                       state.scale or 1.0, start_step)


# ---- the torchrun entry point --------------------------------------------------------------
def npy_shard(path: str | Path, batch_size: int, rank: int, world: int, seed: int,
              epochs: int | None = None) -> Iterator[Tensor]:
    """This rank's rows of each global batch from a ``[n, d_in]`` ``.npy`` file, read
    memory-mapped (a rank reads only its rows); batches follow one seeded shuffle of the
    rows per epoch, the same on every rank; ``epochs=None`` cycles for ever."""
    acts = np.load(path, mmap_mode="r")
    per_epoch, b = len(acts) // batch_size, batch_size // world
    if per_epoch == 0:
        raise ValueError(f"{path} has {len(acts)} rows, fewer than one batch ({batch_size})")
    for epoch in itertools.count() if epochs is None else range(epochs):
        order = torch.randperm(len(acts), generator=torch.Generator().manual_seed(seed + epoch))
        for i in range(per_epoch):
            rows = order[i * batch_size + rank * b:i * batch_size + (rank + 1) * b]
            yield torch.from_numpy(np.asarray(acts[np.sort(rows.numpy())], dtype=np.float32))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Train an SAE on several devices (run under "
                                "torchrun) from a [n, d_in] float .npy of activations.")
    p.add_argument("--activations", required=True, help=".npy file, shape [n, d_in]")
    p.add_argument("--d-sae", type=int, required=True)
    p.add_argument("--architecture", choices=("relu", "topk"), default="relu")
    p.add_argument("--k", type=int, default=None)
    p.add_argument("--dtype", default="float32", help="SAE parameter dtype")
    p.add_argument("--train-config", help="TrainConfig as JSON (file); flags below override")
    p.add_argument("--steps", type=int)
    p.add_argument("--batch-size", type=int, help="global batch (all ranks together)")
    p.add_argument("--checkpoint-dir")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--out", help="directory to save the trained SAE in (rank 0)")
    p.add_argument("--backend", default=None, help="nccl on CUDA, else gloo")
    args = p.parse_args(argv)
    cuda = torch.cuda.is_available()
    dist.init_process_group(args.backend or ("nccl" if cuda else "gloo"))
    try:
        rank, world = dist.get_rank(), dist.get_world_size()
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if cuda else "cpu"
        if cuda:
            torch.cuda.set_device(device)
        cfg = TrainConfig.load_json(args.train_config) \
            if args.train_config else TrainConfig()
        cfg = cfg.replace(**{k: v for k, v in (("n_steps", args.steps),
                                               ("batch_size", args.batch_size)) if v})
        d_in = int(np.load(args.activations, mmap_mode="r").shape[1])
        sae = SAE(SAEConfig(d_in=d_in, d_sae=args.d_sae, architecture=args.architecture,
                            k=args.k, dtype=args.dtype, device=device), seed=cfg.seed)
        result = train_distributed(sae, npy_shard(args.activations, cfg.batch_size, rank,
                                                  world, cfg.seed),
                                   cfg, checkpoint_dir=args.checkpoint_dir, resume=args.resume)
        if rank == 0:
            print(result.summary(), flush=True)
            if args.out:
                result.sae.save(args.out)
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
