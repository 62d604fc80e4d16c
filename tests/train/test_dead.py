"""The dead-feature rule (``TrainState.dead``): not fired for ``dead_after_steps`` steps, or
a firing rate below ``dead_below_mean`` times the average feature's; what AuxK,
resampling and the logged ``dead_fraction`` all read."""
import pytest
import torch

from sae_steer.config import SAEConfig, TrainConfig
from sae_steer.sae import SAE
from sae_steer.train.checkpoint import TrainState, restore_training, save_training

BATCH = 1000


def _state(d_sae: int = 4) -> TrainState:
    return TrainState.fresh(SAE(SAEConfig(d_in=4, d_sae=d_sae, architecture="topk", k=1,
                                          device="cpu")), seed=0)


def _run(state: TrainState, cfg: TrainConfig, steps: int, fires_per_step) -> None:
    for _ in range(steps):
        state.step += 1
        state.record_fires(torch.tensor(fires_per_step(state.step)), BATCH, cfg)


def test_a_feature_that_fires_now_and_then_but_almost_never_is_dead():
    cfg = TrainConfig(dead_after_steps=20, dead_below_mean=0.1)
    state = _state()
    # feature 0: 1 token in 1,000 every 5 steps (rate 2e-4, never 20 steps silent);
    # features 1 and 3: 10 tokens every step (rate 1e-2); feature 2: fires on none.
    # The average rate is about 5e-3, the line 5e-4: feature 0 is under it
    fires = lambda s: [int(s % 5 == 0), 10, 0, 10]  # noqa: E731
    _run(state, cfg, 19, fires)
    assert not state.dead(cfg).any()  # nothing counts as dead before the window has passed
    _run(state, cfg, 200, fires)
    assert state.dead(cfg).tolist() == [True, False, True, False]
    assert state.rate(cfg)[1].item() == pytest.approx(1e-2, rel=1e-4)
    assert state.rate(cfg)[0].item() == pytest.approx(2e-4, rel=0.5)


def test_rate_zero_keeps_only_the_last_fired_rule():
    cfg = TrainConfig(dead_after_steps=20, dead_below_mean=0.0)
    state = _state()
    _run(state, cfg, 200, lambda s: [int(s % 5 == 0), 10, 0, 10])
    assert state.dead(cfg).tolist() == [False, False, True, False]


def test_a_revived_feature_leaves_the_dead_set_and_returns_if_it_stays_silent():
    cfg = TrainConfig(dead_after_steps=20, dead_below_mean=0.1)
    state = _state()
    _run(state, cfg, 100, lambda s: [0, 10, 0, 10])
    revived = torch.tensor([True, False, False, False])
    state.revived(revived, cfg)
    assert not state.dead(cfg)[0]
    _run(state, cfg, 5, lambda s: [5, 10, 0, 10])  # fires at half the others' rate
    assert not state.dead(cfg)[0]
    _run(state, cfg, 20, lambda s: [0, 10, 0, 10])  # silent for a whole window again
    assert state.dead(cfg)[0]


def test_topk_training_hands_rate_dead_features_to_auxk():
    # k 1 of 8 features: some fire far less often than others without ever going quiet
    # for a window; with the rate line AuxK sees them, with 0 it does not
    masks = {}

    class Spy(SAE):
        def training_forward(self, x, **kw):
            self.seen.append(kw["dead_mask"].clone())
            return super().training_forward(x, **kw)

    from sae_steer.train import train
    for rate in (0.0, 0.9):
        torch.manual_seed(0)
        spy = Spy(SAEConfig(d_in=4, d_sae=8, architecture="topk", k=1, device="cpu"), seed=0)
        spy.seen = []
        batches = [torch.randn(64, 4) for _ in range(30)]
        train(spy, batches, TrainConfig(n_steps=30, batch_size=64, dead_after_steps=10,
                                        dead_below_mean=rate, resample_every=0,
                                        log_every=30), progress=False)
        masks[rate] = torch.stack(spy.seen)
    assert not masks[0.9][:10].any()  # nothing dead within the first window
    assert masks[0.9][10:].sum() > masks[0.0][10:].sum()  # below 0.9 x the average rate


def test_the_rate_survives_a_checkpoint(tmp_path):
    cfg = TrainConfig(dead_after_steps=20, dead_below_mean=0.1)
    sae = SAE(SAEConfig(d_in=4, d_sae=4, architecture="topk", k=1, device="cpu"))
    optimizer = torch.optim.Adam(sae.parameters())
    state = TrainState.fresh(sae, seed=0)
    _run(state, cfg, 50, lambda s: [int(s % 5 == 0), 10, 0, 10])
    path = save_training(tmp_path, sae, optimizer, state, cfg)
    again = TrainState.fresh(sae, seed=0)
    restore_training(path, sae, optimizer, again, cfg)
    assert torch.equal(again.fire_rate, state.fire_rate)
    assert torch.equal(again.dead(cfg), state.dead(cfg))
