"""The training loop on synthetic activations: no model anywhere (train.py never needs one)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings

import pytest
import torch
from safetensors.torch import load_file

from builders import make_sae
from sae_steer.config import SAEConfig, TrainConfig
from sae_steer.sae import SAE
from sae_steer.train import checkpoint
from sae_steer.train.loop import NonFiniteError, explained_variance, schedules, train
from sae_steer.train.resample import resample_dead
from sae_steer.ui.plots import plot_history

D_IN, D_SAE = 8, 32


def _sparse_batches(n: int, batch_size: int = 64, seed: int = 0):
    """Sums of a few of 12 fixed unit directions (+ an offset): what an SAE should find."""
    g = torch.Generator().manual_seed(seed)
    dirs = torch.randn(12, D_IN, generator=g)
    dirs /= dirs.norm(dim=1, keepdim=True)
    for _ in range(n):
        coef = torch.rand(batch_size, 12, generator=g) * (torch.rand(batch_size, 12, generator=g) < 0.15)
        yield 4 * coef @ dirs + 0.5


def _cfg(**kw) -> TrainConfig:
    base = dict(n_steps=40, batch_size=64, lr=1e-2, lr_warmup_steps=4, lr_decay_steps=8,
                l1_coefficient=0.2, l1_warmup_steps=8, dead_after_steps=5, resample_every=10,
                buffer_batches=2, log_every=10, eval_sequences=0)
    return TrainConfig(**{**base, **kw})


def _sae(arch: str = "relu", seed: int = 0) -> SAE:
    """The shared builder's SAE at this file's sizes (no hook: no model here)."""
    return make_sae(d_in=D_IN, d_sae=D_SAE, hook_name=None, seed=seed, arch=arch, k=3)


def test_schedules_warm_up_and_decay():
    cfg = _cfg(n_steps=100, lr=1.0, lr_warmup_steps=10, lr_decay_steps=20,
               l1_coefficient=2.0, l1_warmup_steps=50)
    assert schedules(0, cfg) == (pytest.approx(0.1), pytest.approx(2.0 / 50))
    assert schedules(9, cfg)[0] == pytest.approx(1.0)
    assert schedules(50, cfg) == (1.0, 2.0)
    assert schedules(80, cfg)[0] == pytest.approx(1.0)
    assert schedules(90, cfg)[0] == pytest.approx(0.5)
    assert schedules(99, cfg)[0] == pytest.approx(0.05)


def test_default_lr_and_schedules_follow_the_run():
    """Left at None, the lr scales as 1/sqrt(d_sae * d_in) and the schedules are fractions of
    n_steps, so any n_steps is valid (the old fixed 100 + 400 steps rejected n_steps < 500);
    explicit values are kept; the loop runs the resolved config."""
    cfg = TrainConfig(n_steps=300)
    auto = cfg.resolved(512, 768)
    assert auto.lr == pytest.approx(2e-4 * (2 ** 14 / 512) ** 0.5)  # 768: the reference d_in
    assert cfg.resolved(512, 64).lr == pytest.approx(auto.lr * 12 ** 0.5)
    assert cfg.resolved(2048, 768).lr == pytest.approx(auto.lr / 2)
    assert (auto.lr_warmup_steps, auto.lr_decay_steps, auto.l1_warmup_steps) == (15, 60, 30)
    assert TrainConfig(n_steps=2).resolved(10, 4).lr_warmup_steps == 1
    explicit = TrainConfig(n_steps=300, lr=1e-3, lr_warmup_steps=0, lr_decay_steps=0, l1_warmup_steps=7)
    assert explicit.resolved(512, 768) == explicit
    assert cfg.lr is None and TrainConfig.from_dict(cfg.to_dict()) == cfg  # None survives JSON
    batches = list(_sparse_batches(20))
    a, b = _sae(), _sae()
    train(a, batches, TrainConfig(n_steps=20, batch_size=64, buffer_batches=2, log_every=10,
                                  eval_sequences=0), progress=False)
    train(b, batches, TrainConfig(n_steps=20, batch_size=64, buffer_batches=2, log_every=10,
                                  eval_sequences=0).resolved(D_SAE, D_IN), progress=False)
    assert torch.equal(a.W_dec, b.W_dec)


def test_explained_variance_is_against_the_batch_mean():
    x = torch.randn(100, 4) + 10.0
    assert explained_variance(x, x) == pytest.approx(1.0)
    assert explained_variance(x, x.mean(0).expand_as(x)) == pytest.approx(0.0, abs=1e-6)
    assert explained_variance(x, torch.zeros_like(x)) < -10  # zero is no baseline at all


@pytest.mark.parametrize("arch", ["relu", "topk"])
def test_training_learns_and_keeps_unit_decoder_rows(arch):
    sae = _sae(arch)
    result = train(sae, _sparse_batches(100), _cfg(n_steps=100, log_every=25,
                                                    lr_decay_steps=20), progress=False)
    first, last = result.history[0], result.final
    assert [row["step"] for row in result.history] == [25, 50, 75, 100]
    assert last["explained_variance"] > 0.8 and last["mse"] < first["mse"]
    assert 0 < last["l0"] < D_SAE / 2
    assert {"dead_fraction", "dense_fraction", "lr", "l1_coefficient"} <= set(last)
    torch.testing.assert_close(sae.W_dec.norm(dim=1), torch.ones(D_SAE))
    assert sae.log_feature_sparsity.shape == (D_SAE,)


def test_scale_is_folded_into_the_biases():
    # the SAE returned works on raw activations, although it was trained on scaled ones
    batches = [b * 50.0 for b in _sparse_batches(60)]
    sae = _sae()
    result = train(sae, batches, _cfg(n_steps=60), progress=False)
    assert result.scale == pytest.approx(1 / 50, rel=0.5)
    x = batches[-1]
    assert explained_variance(x, sae(x).detach()) == pytest.approx(
        result.final["explained_variance"], abs=0.05)


def test_eval_fn_gets_a_reconstruction_of_raw_activations():
    seen = []

    def eval_fn(reconstruct):
        x = torch.full((2, 3, D_IN), 7.0)
        seen.append(reconstruct(x).shape)
        return {"ce_increase": 0.25}

    result = train(_sae(), _sparse_batches(20), _cfg(n_steps=20), eval_fn=eval_fn,
                   progress=False)
    assert seen == [(2, 3, D_IN)] * 2
    assert all(row["ce_increase"] == 0.25 for row in result.history)


def test_topk_training_passes_dead_mask():
    masks = []

    class Spy(SAE):
        def training_forward(self, x, **kw):
            masks.append(kw["dead_mask"])
            return super().training_forward(x, **kw)

    torch.manual_seed(0)
    spy = Spy(SAEConfig(d_in=D_IN, d_sae=D_SAE, architecture="topk", k=2, device="cpu"))
    train(spy, _sparse_batches(20), _cfg(n_steps=20, dead_after_steps=3, resample_every=0),
          progress=False)
    assert all(m.shape == (D_SAE,) and m.dtype == torch.bool for m in masks)
    assert not masks[0].any() and masks[-1].any()  # nothing dead at first; some later


def test_resample_dead_points_features_at_badly_reconstructed_inputs():
    sae = _sae()
    opt = torch.optim.Adam(sae.parameters(), lr=0.0)  # lr 0: Adam state, same weights
    x = torch.zeros(16, D_IN)
    x[3] = torch.tensor([3.0, 4.0] + [0.0] * (D_IN - 2))  # the only input with any error
    with torch.no_grad():
        sae.b_enc.fill_(-100.0)  # all features silent: x_hat = b_dec = 0
        sae.b_dec.zero_()
    sae(x).sum().backward()
    opt.step()
    dead = torch.zeros(D_SAE, dtype=torch.bool)
    dead[[0, 5]] = True
    n = resample_dead(sae, opt, x, dead, torch.Generator().manual_seed(0))
    assert n == 2
    for f in (0, 5):
        torch.testing.assert_close(sae.W_dec[f, :2], torch.tensor([0.6, 0.8]))
        assert sae.b_enc[f] == 0 and (opt.state[sae.W_dec]["exp_avg"][f] == 0).all()
    assert sae.encode(x)[3, [0, 5]].gt(0).all()  # the resampled features now fire on it


def test_topk_resampling_points_away_from_the_nearest_live_rows():
    # a residual that is mostly a live feature's direction (what top-k cuts off): the new row
    # must not duplicate it, yet keep the part nothing live covers
    sae = make_sae(d_in=32, d_sae=64, hook_name=None, seed=0, arch="topk", k=2)
    opt = torch.optim.Adam(sae.parameters(), lr=0.0)
    dead = torch.zeros(64, dtype=torch.bool)
    dead[[3, 7]] = True
    live_before = sae.W_dec[~dead].detach().clone()
    x = torch.zeros(8, 32)
    x[0] = 10 * live_before[0] + torch.randn(32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        sae.b_enc.fill_(-100.0)  # nothing fires: the residual is x - b_dec
        sae.b_dec.zero_()
    assert resample_dead(sae, opt, x, dead, torch.Generator().manual_seed(0)) == 2
    live = live_before / live_before.norm(dim=-1, keepdim=True)
    for f in (3, 7):
        row = sae.W_dec[f]
        assert row.norm().item() == pytest.approx(1.0, abs=1e-5)
        cos = (live @ row).abs()
        assert cos[0] < 1e-4  # off the direction the residual was mostly made of
        # orthogonal to its 8 nearest live rows, measured from the unprojected direction
        nearest = (live @ (x[0] / x[0].norm())).abs().topk(8).indices
        assert cos[nearest].max() < 1e-4
        assert torch.dot(row, x[0]) > 0  # still aimed at the uncovered part of the input


def test_bad_configs_are_rejected():
    with pytest.raises(ValueError, match="lr must be None or a positive"):
        _cfg(lr=-1e-3)
    with pytest.raises(ValueError, match="l1_coefficient must be a non-negative"):
        _cfg(l1_coefficient=-0.1)
    with pytest.raises(ValueError, match="must not exceed n_steps"):
        _cfg(n_steps=10)
    with pytest.raises(ValueError, match="resume=True needs checkpoint_dir"):
        train(_sae(), _sparse_batches(1), _cfg(), resume=True, progress=False)


def test_short_stream_warns_and_stops():
    with pytest.warns(UserWarning, match="ran out after 15 of 40 steps"):
        result = train(_sae(), _sparse_batches(15), _cfg(), progress=False)
    assert result.steps == 15


def test_nan_stops_and_keeps_last_good_checkpoint(tmp_path):
    batches = list(_sparse_batches(40))
    batches[23] = batches[23].clone()
    batches[23][5, 2] = float("nan")
    sae = _sae()
    with pytest.raises(NonFiniteError, match="activations at step 24.*step_00000020") as err:
        train(sae, batches, _cfg(checkpoint_every=5), checkpoint_dir=tmp_path, progress=False)
    assert err.value.step == 24  # the 24th batch (index 23) held the NaN
    assert all(torch.isfinite(p).all() for p in sae.parameters())
    last = checkpoint.latest_checkpoint(tmp_path)
    assert last.name == "step_00000020"
    tensors, meta = checkpoint.load_checkpoint(last)
    assert meta["step"] == 20 and all(torch.isfinite(t).all() for t in tensors["sae"].values())


def test_resume_with_other_config_shows_the_difference(tmp_path):
    train(_sae(), _sparse_batches(20), _cfg(n_steps=20, checkpoint_every=10),
          checkpoint_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match=r"lr: checkpoint=0\.01, now=0\.02"):
        train(_sae(), _sparse_batches(20), _cfg(n_steps=20, lr=0.02, checkpoint_every=10),
              checkpoint_dir=tmp_path, resume=True, progress=False)
    with pytest.raises(ValueError, match=r"SAEConfig differs.*d_sae: checkpoint=32, now=16"):
        other = make_sae(d_in=D_IN, d_sae=16, hook_name=None)
        train(other, _sparse_batches(20), _cfg(n_steps=20, checkpoint_every=10),
              checkpoint_dir=tmp_path, resume=True, progress=False)


def test_resume_after_finish_returns_same_weights(tmp_path):
    cfg = _cfg(n_steps=20, checkpoint_every=10)
    done = train(_sae(), _sparse_batches(20), cfg, checkpoint_dir=tmp_path, progress=False)
    again = train(_sae(seed=1), _sparse_batches(20), cfg, checkpoint_dir=tmp_path,
                  resume=True, progress=False)
    assert again.start_step == 20 and again.history == done.history
    for name, value in done.sae.state_dict().items():
        assert torch.equal(value, again.sae.state_dict()[name]), name


_RUN = textwrap.dedent("""
    import sys, time, torch
    from safetensors.torch import save_file
    sys.path[:0] = [sys.argv[4], sys.argv[6]]
    from test_loop import _cfg, _sae, _sparse_batches
    from sae_steer.train.loop import train
    ckpt, out, delay = sys.argv[1], sys.argv[2], float(sys.argv[3])
    torch.set_num_threads(1)
    def slow(batches):
        for b in batches:
            time.sleep(delay)
            yield b
    cfg = _cfg(n_steps=60, checkpoint_every=5, lr_decay_steps=10)
    result = train(_sae(seed=int(sys.argv[5])), slow(_sparse_batches(60)), cfg,
                   checkpoint_dir=ckpt, resume=True, progress=False)
    save_file({**result.sae.state_dict(), "start_step": torch.tensor(result.start_step)}, out)
""")


def _run(tmp_path, name: str, delay: float, init_seed: int = 0) -> subprocess.Popen:
    args = [sys.executable, "-c", _RUN, str(tmp_path / f"ckpt_{name}"),
            str(tmp_path / f"{name}.safetensors"), str(delay), os.path.dirname(__file__),
            str(init_seed), os.path.dirname(os.path.dirname(__file__))]  # + tests/ for builders
    return subprocess.Popen(args)


def test_kill_and_resume_gives_bit_identical_weights(tmp_path):
    straight = _run(tmp_path, "straight", 0.0)
    victim = _run(tmp_path, "resumed", 0.1)
    try:
        deadline = time.monotonic() + 120
        while True:  # kill it mid-run, once it has written a checkpoint or two
            last = checkpoint.latest_checkpoint(tmp_path / "ckpt_resumed")
            if last is not None and last.name >= "step_00000015":
                break
            assert victim.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        os.kill(victim.pid, signal.SIGKILL)
        assert victim.wait() == -signal.SIGKILL
        assert straight.wait(timeout=120) == 0
    finally:
        for proc in (straight, victim):
            proc.kill()
            proc.wait()
    # different init seed on purpose: every weight must come from the checkpoint
    assert _run(tmp_path, "resumed", 0.0, init_seed=7).wait(timeout=120) == 0
    a = load_file(str(tmp_path / "straight.safetensors"))
    b = load_file(str(tmp_path / "resumed.safetensors"))
    assert a.pop("start_step") == 0 and 15 <= b.pop("start_step") < 60
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_plot_history_is_a_pure_figure():
    history = [{"step": s, "mse": 1 / s, "explained_variance": 1 - 1 / s, "l0": 5.0,
                "dead_fraction": 0.1, "dense_fraction": 0.0, "ce_increase": 0.2}
               for s in (10, 20, 30)]
    fig = plot_history(history)
    assert len(fig.axes) == 5
    assert [ax.get_title() for ax in fig.axes][-1] == "CE-loss increase"
    fig_no_ce = plot_history([{k: v for k, v in r.items() if k != "ce_increase"}
                              for r in history])
    assert len(fig_no_ce.axes) == 4


def test_nan_loss_stops_without_touching_the_weights():
    class Exploding(SAE):
        calls = 0

        def training_forward(self, x, **kw):
            out = super().training_forward(x, **kw)
            Exploding.calls += 1
            if Exploding.calls == 7:
                out.loss = out.loss * float("inf")
            return out

    torch.manual_seed(0)
    sae = Exploding(SAEConfig(d_in=D_IN, d_sae=D_SAE, device="cpu"))
    before = {}

    def remember(reconstruct):  # log_every=2: called after step 6, the last good one
        before.update({k: v.clone() for k, v in sae.state_dict().items()})
        return {}

    with pytest.raises(NonFiniteError, match="loss at step 7.*no checkpoint was written"):
        train(sae, _sparse_batches(40), _cfg(log_every=2), eval_fn=remember, progress=False)
    for name, value in sae.state_dict().items():
        assert torch.equal(value, before[name]), name


@pytest.mark.parametrize("arch", ["relu", "topk"])
def test_tf32_changes_nothing_on_a_cpu_and_leaves_the_setting_alone(arch):
    """TrainConfig.tf32 is CUDA's matmul setting: on a CPU the weights are bit-identical,
    and the process-wide setting is what it was before, after training."""
    before = torch.backends.cuda.matmul.fp32_precision
    plain, fast = _sae(arch), _sae(arch)
    train(plain, _sparse_batches(20), _cfg(n_steps=20), progress=False)
    train(fast, _sparse_batches(20), _cfg(n_steps=20, tf32=True), progress=False)
    assert torch.backends.cuda.matmul.fp32_precision == before
    for name, p in plain.named_parameters():
        assert torch.equal(p, getattr(fast, name)), name


def test_a_trained_jumprelu_sae_reads_without_grad_and_trains_again():
    """Notebook 03 prints ``float(jump.threshold.min())``: a trained SAE's parameters must
    not carry grad into a user's float() (torch warns), and a second run still trains."""
    sae = _sae("jumprelu")
    result = train(sae, _sparse_batches(8), _cfg(n_steps=8, log_every=4, lr_decay_steps=2,
                                                  resample_every=0), progress=False)
    assert not any(p.requires_grad for p in result.sae.parameters())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "Converting a tensor with requires_grad=True to a scalar"
        low, high = float(result.sae.threshold.min()), float(result.sae.threshold.max())
        norm = result.sae.W_dec[0].norm().item()
    assert low <= high and norm > 0
    before = sae.W_enc.detach().clone()
    train(sae, _sparse_batches(8, seed=1), _cfg(n_steps=4, log_every=4, lr_warmup_steps=1,
                                                lr_decay_steps=1, l1_warmup_steps=1,
                                                resample_every=0), progress=False)
    assert not torch.equal(sae.W_enc, before) and not sae.W_enc.requires_grad
