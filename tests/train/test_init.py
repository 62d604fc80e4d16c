"""One initialisation for every trainer: the pipeline, the torchrun entry point and a plain
``SAE(cfg)`` after ``torch.manual_seed`` all build the weights ``SAE(cfg, seed=s)`` builds,
and those are, to the bit, the weights the pipeline built before the initialisation moved
into ``SAE`` (the reference SAE's cache key and every offline figure rest on them)."""
from __future__ import annotations

import socket

import numpy as np
import pytest
import torch

from builders import HOOK, WORDS
from sae_steer.config import SAEConfig, TrainConfig
from sae_steer.sae import SAE
from sae_steer.train import distributed, pipeline

D_IN, D_SAE = 16, 128  # relu: the encoder starts shrunk by 2 * 16 / 128 = 1/4


class _Built(Exception):
    """Raised by a stand-in trainer once it has been handed the initial SAE."""


def _cfg(arch: str) -> SAEConfig:
    return SAEConfig(d_in=D_IN, d_sae=D_SAE, architecture=arch,
                     k=4 if arch == "topk" else None, device="cpu")


def _former_pipeline_init(cfg: SAEConfig, seed: int) -> dict[str, torch.Tensor]:
    """The pipeline's initialisation as it was, written out: the same draws in the same
    order, the relu shrink applied in the parameter dtype after the transpose."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        W_dec = torch.randn(cfg.d_sae, cfg.d_in, dtype=torch.float32)
    W_dec /= W_dec.norm(dim=1, keepdim=True)
    W_enc = W_dec.T.contiguous().to(torch.float32)
    if cfg.architecture == "relu":
        W_enc.mul_(min(1.0, 2 * cfg.d_in / cfg.d_sae))
    return {"W_enc": W_enc, "b_enc": torch.zeros(cfg.d_sae), "W_dec": W_dec,
            "b_dec": torch.zeros(cfg.d_in)}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stand_in(built: list[SAE]):
    def train(sae: SAE, *args, **kwargs):
        built.append(sae)
        raise _Built
    return train


def _pipeline_init(monkeypatch, model, cfg: SAEConfig, seed: int) -> SAE:
    built: list[SAE] = []
    monkeypatch.setattr(pipeline, "train", _stand_in(built))
    with pytest.raises(_Built):
        pipeline.fit_sae(model, [" ".join(WORDS[:12])] * 4, HOOK, cfg,
                         TrainConfig(seed=seed, eval_sequences=0, context_size=16,
                                     batch_size=8, n_steps=4), progress=False)
    return built[0]


def _entry_point_init(monkeypatch, tmp_path, cfg: SAEConfig, seed: int) -> SAE:
    """What ``python -m sae_steer.train.distributed`` builds (one gloo rank, on the CPU)."""
    np.save(tmp_path / "acts.npy", np.zeros((8, D_IN), dtype=np.float32))
    TrainConfig(n_steps=4, batch_size=8, lr_warmup_steps=1, lr_decay_steps=1, eval_sequences=0,
                seed=seed).save_json(tmp_path / "train.json")
    for name, value in (("MASTER_ADDR", "127.0.0.1"), ("MASTER_PORT", str(_free_port())),
                        ("RANK", "0"), ("WORLD_SIZE", "1"), ("LOCAL_RANK", "0")):
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the CPU's draws
    built: list[SAE] = []
    monkeypatch.setattr(distributed, "train_distributed", _stand_in(built))
    argv = ["--activations", str(tmp_path / "acts.npy"), "--d-sae", str(cfg.d_sae),
            "--architecture", cfg.architecture, "--train-config", str(tmp_path / "train.json"),
            "--backend", "gloo"] + (["--k", str(cfg.k)] if cfg.k else [])
    with pytest.raises(_Built):
        distributed.main(argv)
    return built[0]


@pytest.mark.parametrize("seed", [0, 7])
@pytest.mark.parametrize("arch", ["relu", "topk"])
def test_every_entry_point_builds_the_former_pipeline_init(arch, seed, tok_model, monkeypatch,
                                                          tmp_path):
    cfg = _cfg(arch)
    want = _former_pipeline_init(cfg, seed)
    torch.manual_seed(seed)
    builds = {"SAE(cfg, seed)": SAE(cfg, seed=seed),
              "manual_seed; SAE(cfg)": SAE(cfg),
              "pipeline": _pipeline_init(monkeypatch, tok_model, cfg, seed),
              "torchrun entry point": _entry_point_init(monkeypatch, tmp_path, cfg, seed)}
    for way, sae in builds.items():
        assert sae.dtype == torch.float32
        for name, value in want.items():
            assert torch.equal(getattr(sae, name).detach(), value), f"{way}: {name}"


def test_a_seeded_init_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = SAE(_cfg("relu"), seed=0)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a.W_dec, SAE(_cfg("relu"), seed=0).W_dec)
    assert not torch.equal(a.W_dec, SAE(_cfg("relu"), seed=1).W_dec)
