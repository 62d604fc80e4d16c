"""Atomic checkpoints: round trip, newest wins, a kill during save leaves the previous one."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from sae_steer.train import checkpoint


def _tensors(value: float) -> dict[str, dict[str, torch.Tensor]]:
    return {"sae": {"W": torch.full((3, 2), value), "step": torch.tensor(value)},
            "trainer": {"rng": torch.arange(4, dtype=torch.uint8)}}


def test_round_trip_and_newest_wins(tmp_path):
    checkpoint.save_checkpoint(tmp_path, 5, _tensors(5.0), {"note": "five"})
    path = checkpoint.save_checkpoint(tmp_path, 10, _tensors(10.0), {"note": "ten"})
    assert checkpoint.latest_checkpoint(tmp_path) == path
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_00000010"]  # old one removed
    tensors, meta = checkpoint.load_checkpoint(path)
    assert meta == {"step": 10, "note": "ten"}
    assert torch.equal(tensors["sae"]["W"], torch.full((3, 2), 10.0))
    assert tensors["sae"]["step"].shape == ()
    assert torch.equal(tensors["trainer"]["rng"], torch.arange(4, dtype=torch.uint8))


def test_no_checkpoint_and_half_written_ones_are_ignored(tmp_path):
    assert checkpoint.latest_checkpoint(tmp_path / "missing") is None
    (tmp_path / ".tmp_step_00000020_x").mkdir()  # a save that never finished
    (tmp_path / "step_00000030").mkdir()  # no checkpoint.json: not complete
    assert checkpoint.latest_checkpoint(tmp_path) is None
    path = checkpoint.save_checkpoint(tmp_path, 7, _tensors(7.0), {})
    assert checkpoint.latest_checkpoint(tmp_path) == path
    assert not (tmp_path / ".tmp_step_00000020_x").exists()  # stale temp dirs cleaned up


def test_corrupt_file_is_named(tmp_path):
    path = checkpoint.save_checkpoint(tmp_path, 1, _tensors(1.0), {})
    (path / "sae.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="sae.safetensors"):
        checkpoint.load_checkpoint(path)
    (path / "checkpoint.json").write_text("{")
    with pytest.raises(ValueError, match="checkpoint.json"):
        checkpoint.load_checkpoint(path)
    with pytest.raises(FileNotFoundError, match="checkpoint.json is missing"):
        checkpoint.load_checkpoint(tmp_path / "nowhere")


_KILLED_DURING_SAVE = textwrap.dedent("""
    import pathlib, sys, time, torch
    from sae_steer.train import checkpoint
    root, flag = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
    checkpoint.save_checkpoint(root, 1, {"sae": {"W": torch.ones(4)}}, {"ok": True})
    real_write = checkpoint._write_tensors
    def write_then_hang(path, tensors):
        real_write(path, tensors)
        flag.touch()  # half the new checkpoint is on disk: kill me now
        time.sleep(60)
    checkpoint._write_tensors = write_then_hang
    checkpoint.save_checkpoint(root, 2, {"sae": {"W": torch.zeros(4)},
                                         "optimizer": {"m": torch.zeros(4)}}, {"ok": False})
""")


def test_kill_during_save_keeps_previous_checkpoint(tmp_path):
    root, flag = tmp_path / "ckpt", tmp_path / "flag"
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_DURING_SAVE, str(root), str(flag)])
    try:
        deadline = time.monotonic() + 120
        while not flag.exists():
            assert proc.poll() is None, "the saving process exited early"
            assert time.monotonic() < deadline, "the saving process never reached the save"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert any(p.name.startswith(".tmp_step_00000002") for p in root.iterdir())
    last = checkpoint.latest_checkpoint(root)
    assert last is not None and last.name == "step_00000001"
    tensors, meta = checkpoint.load_checkpoint(last)
    assert meta["ok"] is True and torch.equal(tensors["sae"]["W"], torch.ones(4))


def test_optimizer_state_round_trips_exactly(tmp_path):
    param = torch.nn.Parameter(torch.randn(5))
    opt = torch.optim.Adam([param], lr=0.1, betas=(0.8, 0.99))
    for _ in range(3):
        opt.zero_grad()
        param.pow(2).sum().backward()
        opt.step()
    tensors, meta = checkpoint.optimizer_to_flat(opt)
    path = checkpoint.save_checkpoint(tmp_path, 3, {"optimizer": tensors}, {"optimizer": meta})
    loaded, loaded_meta = checkpoint.load_checkpoint(path)
    fresh = torch.optim.Adam([torch.nn.Parameter(param.detach().clone())], lr=0.1)
    checkpoint.optimizer_from_flat(fresh, loaded["optimizer"], loaded_meta["optimizer"])
    assert fresh.param_groups[0]["betas"] == (0.8, 0.99)
    for name, value in opt.state_dict()["state"][0].items():
        assert torch.equal(value, fresh.state_dict()["state"][0][name]), name
