"""Data-parallel training (gloo, 2 CPU processes on loopback) equals one process on the
global batch, and resumes from rank 0's checkpoint to the same weights."""
from __future__ import annotations

import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from sae_steer.config import SAEConfig, TrainConfig
from sae_steer.sae import SAE
from sae_steer.train import checkpoint
from sae_steer.train.distributed import main, npy_shard, shard_batches, train_distributed
from sae_steer.train.loop import train

D_IN, D_SAE, BATCH, STEPS, WORLD = 16, 64, 32, 12, 2


def _batches(n: int = STEPS) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    dirs = torch.randn(24, D_IN, generator=g)
    out = []
    for _ in range(n):
        codes = torch.rand(BATCH, 24, generator=g) * (torch.rand(BATCH, 24, generator=g) < 0.15)
        out.append(codes @ dirs + 0.3 + 0.01 * torch.randn(BATCH, D_IN, generator=g))
    return out


def _cfg(arch: str, **changes) -> TrainConfig:
    # small windows so resampling (relu) and AuxK (topk) both act within 12 steps
    return TrainConfig(n_steps=STEPS, batch_size=BATCH, lr=3e-3, lr_warmup_steps=2,
                       lr_decay_steps=3, l1_coefficient=1.0, l1_warmup_steps=3,
                       l0_coefficient=0.1, dead_after_steps=2, resample_every=4, log_every=4,
                       eval_sequences=0, **changes)


def _sae(arch: str) -> SAE:
    torch.manual_seed(0)
    return SAE(SAEConfig(d_in=D_IN, d_sae=D_SAE, architecture=arch,
                         k=4 if arch in ("topk", "batchtopk") else None, device="cpu"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, port: int, arch: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=WORLD)
    try:
        cfg = _cfg(arch, checkpoint_every=6)
        ckpt = Path(out_dir) / "ckpt"
        # interrupted run: the data stop after 6 steps, rank 0 has written step 6
        train_distributed(_sae(arch), shard_batches(_batches(6), rank, WORLD), cfg,
                          checkpoint_dir=ckpt)
        resumed = train_distributed(_sae(arch), shard_batches(_batches(), rank, WORLD), cfg,
                                    checkpoint_dir=ckpt, resume=True)
        whole = train_distributed(_sae(arch), shard_batches(_batches(), rank, WORLD), _cfg(arch))
        for name, result in (("resumed", resumed), ("whole", whole)):
            torch.save({"state": result.sae.state_dict(), "history": result.history,
                        "start": result.start_step}, Path(out_dir) / f"{name}_{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("arch", ["relu", "topk", "jumprelu"])
def test_two_ranks_equal_one_process_and_resume(arch, tmp_path):
    reference = train(_sae(arch), _batches(), _cfg(arch), progress=False)
    mp.start_processes(_worker, args=(_free_port(), arch, str(tmp_path)), nprocs=WORLD,
                       start_method="fork")
    assert [p.name for p in (tmp_path / "ckpt").iterdir() if not p.name.startswith(".")] \
        == ["step_00000012"], "only rank 0's checkpoints, the older one removed"
    for rank in range(WORLD):
        for name in ("whole", "resumed"):
            got = torch.load(tmp_path / f"{name}_{rank}.pt")
            for key, value in reference.sae.state_dict().items():
                torch.testing.assert_close(got["state"][key], value, atol=1e-5, rtol=1e-4,
                                           msg=f"{name} rank {rank} {key}")
            last, want = got["history"][-1], reference.history[-1]
            for metric in ("loss", "mse", "explained_variance", "l0", "dead_fraction"):
                assert last[metric] == pytest.approx(want[metric], rel=1e-4, abs=1e-5), metric
        assert torch.load(tmp_path / f"resumed_{rank}.pt")["start"] == 6


def test_batchtopk_ranks_end_alike(tmp_path):
    """Each rank keeps the top k x its own shard (so not one process's run), yet every rank
    ends with the same weights and rank 0's inference threshold."""
    mp.start_processes(_worker, args=(_free_port(), "batchtopk", str(tmp_path)), nprocs=WORLD,
                       start_method="fork")
    states = [torch.load(tmp_path / f"whole_{rank}.pt")["state"] for rank in range(WORLD)]
    assert states[0]["threshold"].min() > 0
    for key, value in states[0].items():
        torch.testing.assert_close(states[1][key], value, msg=key)


def test_shards_split_each_global_batch():
    x = torch.arange(12.0).reshape(6, 2)
    assert torch.equal(torch.cat([next(shard_batches([x], r, 3)) for r in range(3)]), x)
    with pytest.raises(ValueError, match="equal shards"):
        next(shard_batches([x], 0, 4))


def test_npy_shards_cover_the_global_batches(tmp_path):
    acts = np.arange(40, dtype=np.float32).reshape(20, 2)
    np.save(tmp_path / "a.npy", acts)
    per_rank = [list(npy_shard(tmp_path / "a.npy", 8, r, 2, seed=0, epochs=1)) for r in range(2)]
    assert [len(b) for b in per_rank[0]] == [4, 4]  # 20 rows: two global batches of 8
    rows = torch.cat([b for pair in zip(*per_rank) for b in pair])
    assert len(set(rows[:, 0].tolist())) == 16


def _cli_worker(rank: int, port: int, argv: list[str]) -> None:
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank))
    main(argv)


def test_entry_point_trains_and_saves(tmp_path):
    np.save(tmp_path / "acts.npy", torch.cat(_batches(4)).numpy())
    argv = ["--activations", str(tmp_path / "acts.npy"), "--d-sae", str(D_SAE), "--steps", "4",
            "--batch-size", str(BATCH), "--checkpoint-dir", str(tmp_path / "ckpt"),
            "--out", str(tmp_path / "sae"), "--train-config", str(_cfg_file(tmp_path))]
    mp.start_processes(_cli_worker, args=(_free_port(), argv), nprocs=WORLD, start_method="fork")
    assert SAE.load(tmp_path / "sae", device="cpu").d_sae == D_SAE
    assert checkpoint.latest_checkpoint(tmp_path / "ckpt").name == "step_00000004"


def _cfg_file(tmp_path: Path) -> Path:
    path = tmp_path / "train.json"
    TrainConfig(n_steps=4, batch_size=BATCH, lr_warmup_steps=1, lr_decay_steps=1,
                eval_sequences=0).save_json(path)
    return path
