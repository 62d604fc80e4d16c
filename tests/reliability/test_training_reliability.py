"""Training survives SIGKILL and bad data: resume is bit-identical, checkpoints stay whole.

The trainer consumes plain activation batches, so the runs here use synthetic sparse
activations and an 8 -> 32 SAE: a full run takes well under a second, and the killed
process only needs torch (no model) to start.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from builders import leftovers
from sae_steer.config import SAEConfig, TrainConfig
from sae_steer.sae import SAE
from sae_steer.train import checkpoint
from sae_steer.train.loop import NonFiniteError, train

from rel_train_data import N_STEPS, batches, cfg, new_sae


def run(ckpt: Path | None = None, resume: bool = False, init_seed: int = 0, **kw):
    # train() restores the global torch RNG from a checkpoint: keep the test's RNG unaffected
    with torch.random.fork_rng(devices=[]):
        return train(new_sae(init_seed), batches(), cfg(**kw), checkpoint_dir=ckpt,
                     resume=resume, progress=False)


def assert_same_weights(a: SAE, b: SAE) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for name in sa:
        assert torch.equal(sa[name], sb[name]), f"{name} differs"
    assert torch.equal(a.log_feature_sparsity, b.log_feature_sparsity)


_CHILD = textwrap.dedent("""
    import sys, time, torch
    sys.path.insert(0, sys.argv[1])
    import rel_train_data as t
    from sae_steer.train import checkpoint
    from sae_steer.train.loop import train
    torch.set_num_threads(1)
    ckpt, mode, flag = sys.argv[2], sys.argv[3], sys.argv[4]

    def slow(stream):  # a few steps a second; from step 21 on, wait to be killed
        for i, b in enumerate(stream):
            time.sleep(0.05 if i < 20 else 600)
            yield b

    if mode == "hang-in-save":  # write part of the step-10 checkpoint, then hang
        real = checkpoint._write_tensors
        def write(path, tensors):
            real(path, tensors)
            if "step_00000010" in str(path):
                open(flag, "w").close()
                time.sleep(120)
        checkpoint._write_tensors = write
    stream = slow(t.batches()) if mode == "slow" else t.batches()
    train(t.new_sae(), stream, t.cfg(), checkpoint_dir=ckpt, resume=True, progress=False)
""")


def _start(ckpt: Path, mode: str, flag: Path) -> subprocess.Popen:
    here = os.path.dirname(os.path.abspath(__file__))
    return subprocess.Popen([sys.executable, "-c", _CHILD, here, str(ckpt), mode, str(flag)])


def _kill_when(proc: subprocess.Popen, ready, what: str) -> None:
    try:
        deadline = time.monotonic() + 120
        while not ready():
            assert proc.poll() is None, f"the training process exited before {what}"
            assert time.monotonic() < deadline, f"the training process never reached {what}"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_sigkill_mid_run_then_resume_gives_identical_weights(tmp_path):
    ckpt = tmp_path / "ckpt"
    proc = _start(ckpt, "slow", tmp_path / "unused")

    def mid_run() -> bool:
        last = checkpoint.latest_checkpoint(ckpt)
        return last is not None and last.name >= "step_00000015"

    _kill_when(proc, mid_run, "its third checkpoint")
    killed_at = checkpoint.latest_checkpoint(ckpt)
    assert killed_at.name < f"step_{N_STEPS:08d}"  # really killed mid-run
    # another init seed: every weight of the resumed run must come from the checkpoint
    resumed = run(ckpt, resume=True, init_seed=99)
    straight = run()
    assert 15 <= resumed.start_step < N_STEPS and straight.start_step == 0
    assert_same_weights(resumed.sae, straight.sae)
    assert resumed.history == straight.history
    assert leftovers(ckpt) == []
    assert checkpoint.latest_checkpoint(ckpt).name == f"step_{N_STEPS:08d}"


def test_sigkill_during_checkpoint_write_keeps_previous_checkpoint(tmp_path):
    ckpt, flag = tmp_path / "ckpt", tmp_path / "half-written"
    proc = _start(ckpt, "hang-in-save", flag)
    _kill_when(proc, flag.exists, "the step-10 checkpoint write")
    assert [p for p in os.listdir(ckpt) if p.startswith(".tmp_step_00000010")]  # the half
    last = checkpoint.latest_checkpoint(ckpt)
    assert last is not None and last.name == "step_00000005"
    tensors, meta = checkpoint.load_checkpoint(last)  # the previous one loads, whole
    assert meta["step"] == 5 and set(tensors) == {"sae", "optimizer", "trainer"}
    assert all(torch.isfinite(t).all() for t in tensors["sae"].values())
    # and training resumes from it to the same weights as an uninterrupted run
    resumed = run(ckpt, resume=True, init_seed=99)
    assert resumed.start_step == 5
    assert_same_weights(resumed.sae, run().sae)
    assert leftovers(ckpt) == []  # the half-written temp dir was cleaned up


@pytest.mark.parametrize("value", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_non_finite_activations_stop_training_and_keep_last_good_checkpoint(tmp_path, value):
    ckpt = tmp_path / "ckpt"
    sae = new_sae()
    with torch.random.fork_rng(devices=[]):
        with pytest.raises(NonFiniteError,
                           match=r"NaN/inf in the activations at step 18.*step_00000015") as err:
            train(sae, batches(nan_at=17, value=value), cfg(), checkpoint_dir=ckpt,
                  progress=False)
    assert err.value.step == 18 and isinstance(err.value, ValueError)
    assert all(torch.isfinite(p).all() for p in sae.parameters())  # weights not poisoned
    last = checkpoint.latest_checkpoint(ckpt)
    assert last.name == "step_00000015" and leftovers(ckpt) == []
    tensors, meta = checkpoint.load_checkpoint(last)
    assert meta["step"] == 15
    assert all(torch.isfinite(t).all() for group in tensors.values() for t in group.values())
    # the kept checkpoint is usable: resuming on clean data finishes like a clean run
    resumed = run(ckpt, resume=True, init_seed=99)
    assert resumed.start_step == 15
    assert_same_weights(resumed.sae, run().sae)


def test_nan_in_first_batch_without_checkpoints_says_so():
    with pytest.raises(NonFiniteError, match="at step 1: .*no checkpoint was written"):
        train(new_sae(), batches(nan_at=0), cfg(), progress=False)


def test_interrupted_cached_training_leaves_no_half_written_cache_entry(
        tok_model, tmp_path, monkeypatch):
    """Ctrl-C during load_or_train: no cache entry appears; the next call trains afresh."""
    from sae_steer.train import loop as train_module
    from sae_steer.train import pipeline

    monkeypatch.setenv("SAE_STEER_CACHE", str(tmp_path / "cache"))
    hook = "blocks.0.hook_resid_post"
    sae_cfg = SAEConfig(d_in=16, d_sae=32, device="cpu", dataset_path="reliability")
    train_cfg = TrainConfig(n_steps=6, batch_size=32, lr=3e-3, lr_warmup_steps=1,
                            lr_decay_steps=1, l1_warmup_steps=1, resample_every=0,
                            context_size=16, model_batch_size=8, buffer_batches=2,
                            eval_sequences=0, log_every=3, checkpoint_every=2)
    texts = lambda: ["Once upon a time there was a little girl named Lily ."] * 40
    real_step, calls = train_module._step, {"n": 0}

    def interrupted(*args, **kw):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real_step(*args, **kw)

    monkeypatch.setattr(train_module, "_step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        pipeline.load_or_train_sae(tok_model, texts, hook, sae_cfg, train_cfg, progress=False)
    saes = tmp_path / "cache" / "saes"
    key = pipeline.cache_key(tok_model, hook, sae_cfg, train_cfg)
    assert not (saes / key).exists()  # no half cache entry that would be "loaded" later
    assert leftovers(tmp_path) == []
    assert checkpoint.latest_checkpoint(saes / f"{key}.ckpt").name == "step_00000002"
    monkeypatch.setattr(train_module, "_step", real_step)
    sae = pipeline.load_or_train_sae(tok_model, texts, hook, sae_cfg, train_cfg, progress=False)
    assert (saes / key / "cfg.json").is_file() and not (saes / f"{key}.ckpt").exists()
    assert sae.cfg.hook_name == hook and leftovers(tmp_path) == []
