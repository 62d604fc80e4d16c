"""The Steerer: one typical residual norm (measured once, or the user's) and every
scale-unit conversion; sweeps, generation and feature scores read the same norm."""
from __future__ import annotations

import weakref

import pytest
import torch

import sae_steer.steer.steerer as steerer_module
from builders import HOOK, PROMPT, assert_clean, make_sae
from sae_steer.config import SteerConfig
from sae_steer.lm import hook_activations
from sae_steer.steer import (Steerer, generate_steered, steering_direction, to_absolute_scales,
                             typical_resid_norm)


def hand_sae():
    """4 features on the 16-wide hook; W_dec rows hand-set: 3e0 + 4e1 (norm 5), 2e2 (norm 2),
    e3, e4 (norm 1)."""
    sae = make_sae(d_sae=4)
    rows = torch.zeros(4, 16)
    rows[0, 0], rows[0, 1], rows[1, 2], rows[2, 3], rows[3, 4] = 3.0, 4.0, 2.0, 1.0, 1.0
    with torch.no_grad():
        sae.W_dec.copy_(rows)
    return sae


@pytest.fixture
def measured(monkeypatch):
    """Replace the measurement by one that returns 10.0 and counts its calls."""
    calls = []

    def fake(model, hook_name, *args, **kw):
        calls.append(hook_name)
        return 10.0

    monkeypatch.setattr(steerer_module, "typical_resid_norm", fake)
    monkeypatch.setattr(steerer_module, "_NORMS", weakref.WeakKeyDictionary())  # start uncached
    return calls


def test_the_norm_is_measured_once_and_only_when_needed(tiny_model, measured):
    s = Steerer(tiny_model, hand_sae())
    assert s.hook_name == HOOK and measured == []  # nothing measured on construction
    assert s.absolute({0: 2.0}, "absolute") == {0: 2.0} and measured == []
    assert s.absolute({0: 0.5}, "relative") == {0: pytest.approx(0.5 * 10 / 5)}
    s.vector({1: 0.5})
    s.relative(1.0, 0)
    assert s.resid_norm == 10.0
    assert measured == [HOOK]


def test_the_norm_is_measured_once_per_model_and_hook(tiny_model, measured):
    a, b = Steerer(tiny_model, hand_sae()), Steerer(tiny_model, hand_sae())
    assert a.resid_norm == b.resid_norm == 10.0
    assert measured == [HOOK]  # the second steerer of the same model did not sample again
    with torch.no_grad():  # weights edited in place: the old norm no longer holds
        next(tiny_model.parameters()).mul_(1.0)
    assert Steerer(tiny_model, hand_sae()).resid_norm == 10.0
    assert measured == [HOOK, HOOK]


def test_direction_is_the_decoder_row_or_the_onehot_pitfall(tiny_model):
    sae = hand_sae()
    s = Steerer(tiny_model, sae, resid_norm=3.0)
    torch.testing.assert_close(s.direction(0), torch.tensor([3.0, 4.0] + [0.0] * 14))
    torch.testing.assert_close(s.direction(1, "decoder_onehot"), sae.W_dec[1] + sae.b_dec)
    assert s.direction(0).requires_grad is False
    with pytest.raises(ValueError, match="clamp mode has no fixed direction"):
        s.direction(0, "clamp")


def test_one_features_scale_in_either_unit(tiny_model):
    s = Steerer(tiny_model, hand_sae(), resid_norm=3.0)
    assert s.to_absolute(0.5, 0) == pytest.approx(0.5 * 3.0 / 5)  # |W_dec[0]| = 5
    assert s.relative(s.to_absolute(0.7, 1), 1) == pytest.approx(0.7)
    rows = s.scale_rows({"first": 0, "second": 1}, absolute=10.0, relative=0.5)
    assert rows[0] == {"role": "first", "feature": 0, "|W_dec[i]|": pytest.approx(5.0),
                       "scale 10 as × norm": pytest.approx(10 * 5 / 3.0),
                       "0.5× norm as scale": pytest.approx(0.5 * 3.0 / 5)}
    assert [r["feature"] for r in s.scale_rows([1, 2], 1.0, 1.0)] == [1, 2]
    assert "role" not in s.scale_rows([1], 1.0, 1.0)[0]


def test_the_users_norm_wins(tiny_model, measured):
    sae = hand_sae()
    assert Steerer(tiny_model, sae, resid_norm=4.0).resid_norm == 4.0
    cfg = SteerConfig(scale_unit="relative", resid_norm=2.5)
    assert Steerer.for_config(tiny_model, sae, cfg).resid_norm == 2.5
    assert measured == []
    with pytest.raises(ValueError, match="resid_norm must be positive"):
        Steerer(tiny_model, sae, resid_norm=0.0)


def test_the_measured_norm_is_typical_resid_norm(tiny_model):
    # the value sweeps and choices measured before the Steerer existed, bit for bit
    assert Steerer(tiny_model, make_sae()).resid_norm == typical_resid_norm(tiny_model, HOOK)


def test_a_foreign_hook_is_refused(tiny_model):
    with pytest.raises(ValueError, match="trained at"):
        Steerer(tiny_model, make_sae(), "blocks.1.hook_resid_post")


@pytest.mark.parametrize("mode", ["decoder_row", "clamp", "decoder_onehot"])
@pytest.mark.parametrize("unit", ["absolute", "relative", "max_act"])
def test_absolute_agrees_with_the_low_level_helper(tiny_model, unit, mode):
    sae, scales, max_act = make_sae(), {1: 0.5, 6: -2.0}, torch.arange(8.0) + 1
    s = Steerer(tiny_model, sae, max_act=max_act, resid_norm=3.0)
    expected = to_absolute_scales(sae, scales, unit, mode, resid_norm=3.0, max_act=max_act)
    assert s.absolute(scales, unit, mode) == expected


def test_absolute_by_hand(tiny_model):
    s = Steerer(tiny_model, hand_sae(), max_act={0: 4.0}, resid_norm=10.0)
    assert s.absolute({0: 0.5, 1: 0.5}, "relative") == {0: pytest.approx(1.0),
                                                         1: pytest.approx(2.5)}
    assert s.absolute({0: 0.5}, "max_act") == {0: 2.0}
    with pytest.raises(ValueError, match="out of range"):
        s.absolute({4: 1.0}, "absolute")


def test_vector_is_the_sum_of_scaled_decoder_rows(tiny_model):
    s = Steerer(tiny_model, hand_sae(), resid_norm=10.0)
    # relative 0.5 x norm 10 = a vector of norm 5: row 0 (norm 5) once; row 1 (norm 2) 2.5 x
    v = s.vector({0: 0.5, 1: -0.5})
    expected = torch.zeros(16)
    expected[:3] = torch.tensor([3.0, 4.0, -5.0])
    assert v.dtype == torch.float32 and v.device == s.sae.W_dec.device
    torch.testing.assert_close(v, expected)
    expected[:3] = torch.tensor([6.0, 8.0, 1.0])
    torch.testing.assert_close(s.vector({0: 2.0, 1: 0.5}, "absolute"), expected)


def test_relative_inverts_absolute(tiny_model):
    sae = make_sae()
    s = Steerer(tiny_model, sae, resid_norm=3.0)
    for mode in ("decoder_row", "decoder_onehot"):
        a = s.absolute({5: 0.7}, "relative", mode)[5]
        assert s.relative(a, 5, mode) == pytest.approx(0.7)
        assert a * float(steering_direction(sae, 5, mode).norm()) == pytest.approx(0.7 * 3.0)


def test_steer_adds_the_vector_and_leaves_no_hook(tiny_model):
    s = Steerer(tiny_model, hand_sae(), resid_norm=10.0)
    tokens = torch.tensor([PROMPT])
    clean = hook_activations(tiny_model, tokens, HOOK)
    seen = {}
    with s.steer({0: 0.5, 1: -0.5}, "relative") as stats:
        with tiny_model.hooks(fwd_hooks=[(HOOK, lambda act, hook: seen.update(x=act.clone()))]):
            tiny_model(tokens)
    assert stats.calls == 1 and stats.positions == len(PROMPT)
    torch.testing.assert_close(seen["x"], clean + s.vector({0: 0.5, 1: -0.5}))
    assert_clean(tiny_model)
    with pytest.raises(RuntimeError, match="boom"):
        with s.steer({0: 1.0}, "absolute"):
            raise RuntimeError("boom")
    assert_clean(tiny_model)


def test_generate_steered_measures_through_the_steerer(tiny_model, measured):
    sae = hand_sae()
    kw = dict(prompt=PROMPT, max_new_tokens=4, n_samples=2, scale_unit="relative")
    gen = generate_steered(tiny_model, sae, 1, 0.5, **kw)
    assert gen.scale == pytest.approx(0.5 * 10 / 2) and measured == [HOOK]
    generate_steered(tiny_model, sae, 1, 0.5, resid_norm=4.0, **kw)  # the user's: no measuring
    assert measured == [HOOK]
    assert_clean(tiny_model)


def test_scale_sweep_uses_one_steerer_norm(tiny_model, measured):
    from sae_steer.measure import scale_sweep

    sae = hand_sae()
    cfg = SteerConfig(prompt=PROMPT, max_new_tokens=4, n_samples=2, scale_unit="relative")
    sweep = scale_sweep(tiny_model, sae, 0, [0.1, 0.3], cfg)
    assert measured == [HOOK]  # once for all scales
    assert [r.scale for r in sweep.reports] == [pytest.approx(0.1 * 10 / 5),
                                                pytest.approx(0.3 * 10 / 5)]
    assert_clean(tiny_model)


def test_feature_scores_read_the_steerers_norm(tok_model):
    from sae_steer.measure import feature_scores

    sae = make_sae()
    norm = Steerer(tok_model, sae).resid_norm
    assert norm == typical_resid_norm(tok_model, HOOK)
    default = feature_scores(tok_model, sae, progress=False)
    given = feature_scores(tok_model, sae, resid_norm=norm, progress=False)
    torch.testing.assert_close(default.output_score, given.output_score)
    other = feature_scores(tok_model, sae, resid_norm=3 * norm, progress=False)
    assert not torch.equal(other.output_score, default.output_score)
