"""Steering controls: several features at once, which positions are steered, the max_act
scale unit; KV-cached and uncached generation agree under every one of them."""
from __future__ import annotations

import pytest
import torch

from builders import HOOK, assert_clean, make_sae
from sae_steer.config import SearchConfig, SteerConfig
from sae_steer.inspect import search_features
from sae_steer.lm import hook_activations
from sae_steer.steer import (Positions, clamping, generate_along, generate_steered,
                             generate_unsteered, steered,
                             steering, steering_direction, to_absolute_scales)
from sae_steer.steer import generate as steer_generate

PROMPT = torch.tensor([1, 2, 3, 4])
LATER = "blocks.1.hook_resid_post"
MODES = ["decoder_row", "clamp", "decoder_onehot"]


def _logits(model, tokens):
    with torch.no_grad():
        return model(tokens)


def _tokens(gen):
    return [t.tolist() for t in gen.tokens]


# ------------------------------------------------ KV cache vs no cache, every control


@pytest.mark.parametrize("positions", ["all", "generated"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("temperature", [0.0, 1.0], ids=["greedy", "sampled"])
def test_kv_cached_and_uncached_give_identical_tokens(tiny_model, sae, mode, positions,
                                                      temperature):
    """Neuronpedia #163's bug class: the cached path must steer exactly what the full pass does."""
    kw = dict(prompt=PROMPT, max_new_tokens=16, n_samples=3, seed=4, temperature=temperature,
              mode=mode, positions=positions)
    for feats in ({2: 3.0}, {2: 3.0, 5: -2.0}):
        cached = generate_steered(tiny_model, sae, feats, use_kv_cache=True, **kw)
        uncached = generate_steered(tiny_model, sae, feats, use_kv_cache=False, **kw)
        assert _tokens(cached) == _tokens(uncached)
        assert cached.features == uncached.features
    plain = generate_unsteered(tiny_model, **kw)
    assert _tokens(cached) != _tokens(plain)  # the steering really changed something
    assert_clean(tiny_model)


@pytest.mark.parametrize("positions", ["all", "generated"])
@pytest.mark.parametrize("use_kv_cache", [True, False], ids=["cached", "uncached"])
def test_generate_along_a_feature_row_is_steering_with_that_feature(tiny_model, sae, positions,
                                                                   use_kv_cache):
    """Any vector, same sampler: along W_dec[i] at norm |scale * W_dec[i]| it gives exactly
    the feature's samples, in every position mode, cached or not."""
    kw = dict(prompt=PROMPT, max_new_tokens=12, n_samples=3, seed=2, positions=positions,
              use_kv_cache=use_kv_cache)
    row = sae.W_dec[3].detach()
    ours = generate_along(tiny_model, HOOK, -7.0 * row, 4.0 * float(row.norm()), **kw)
    feature = generate_steered(tiny_model, sae, 3, -4.0, **kw)
    assert _tokens(ours) == _tokens(feature) and ours.seeds == feature.seeds
    assert _tokens(ours) != _tokens(generate_unsteered(tiny_model, **kw))
    assert ours.stats == feature.stats and ours.stats.positions > 0  # the same positions
    assert_clean(tiny_model)


# ------------------------------------------------ several features at once


def test_dict_of_decoder_rows_adds_their_weighted_sum(tiny_model, sae):
    tokens = PROMPT[None]
    by_hand = 2.0 * sae.W_dec[1].detach() - 1.5 * sae.W_dec[6].detach()
    with steering(tiny_model, HOOK, by_hand, 1.0):
        expected = _logits(tiny_model, tokens)
    with steered(tiny_model, sae, {1: 2.0, 6: -1.5}):
        ours = _logits(tiny_model, tokens)
    torch.testing.assert_close(ours, expected)
    with steered(tiny_model, sae, {1: 2.0}):  # a one-entry dict is the single form
        one = _logits(tiny_model, tokens)
    with steered(tiny_model, sae, 1, 2.0):
        assert torch.equal(one, _logits(tiny_model, tokens))
    assert_clean(tiny_model)


def test_dict_of_onehots_carries_the_bias_per_feature(tiny_model, sae):
    tokens = PROMPT[None]
    by_hand = 2.0 * (sae.W_dec[0] + sae.b_dec).detach() + 3.0 * (sae.W_dec[3] + sae.b_dec).detach()
    with steering(tiny_model, HOOK, by_hand, 1.0):
        expected = _logits(tiny_model, tokens)
    with steered(tiny_model, sae, {0: 2.0, 3: 3.0}, mode="decoder_onehot"):
        torch.testing.assert_close(_logits(tiny_model, tokens), expected)


def test_dict_clamp_clamps_each_listed_feature(tiny_model, sae):
    seen = {}
    with clamping(tiny_model, sae, {2: 7.0, 4: 0.0}):
        with tiny_model.hooks(fwd_hooks=[(HOOK, lambda a, hook: seen.setdefault("x", a))]):
            _logits(tiny_model, PROMPT[None])
    clean = hook_activations(tiny_model, PROMPT[None], HOOK)
    f = sae.encode(clean).detach()
    expected = clean + (7.0 - f[..., 2:3]) * sae.W_dec[2].detach() - f[..., 4:5] * sae.W_dec[4].detach()
    torch.testing.assert_close(seen["x"], expected)
    # clamping several features each to its own value changes nothing
    token = torch.tensor([[5]])
    own = sae.encode(hook_activations(tiny_model, token, HOOK))[0, 0].detach()
    with clamping(tiny_model, sae, {i: float(own[i]) for i in (0, 3, 7)}):
        torch.testing.assert_close(_logits(tiny_model, token), _logits(tiny_model, token))
    assert_clean(tiny_model)


def test_generation_records_every_feature_and_the_first(tiny_model, sae):
    cfg = SteerConfig(prompt=PROMPT, max_new_tokens=6, n_samples=2, seed=2)
    many = generate_steered(tiny_model, sae, {3: 4.0, 1: -2.0}, cfg=cfg)
    assert many.features == {3: 4.0, 1: -2.0}
    assert (many.feature, many.scale) == (3, 4.0)
    positional = generate_steered(tiny_model, sae, {3: 4.0, 1: -2.0}, cfg)  # cfg 4th, no scale
    assert _tokens(positional) == _tokens(many)
    one = generate_steered(tiny_model, sae, 3, 4.0, cfg)
    assert one.features == {3: 4.0} and (one.feature, one.scale) == (3, 4.0)


def test_relative_units_per_feature(tiny_model, sae):
    out = generate_steered(tiny_model, sae, {0: 0.5, 4: 0.25}, prompt=PROMPT, max_new_tokens=4,
                           scale_unit="relative", resid_norm=2.0)
    for i, rel in ((0, 0.5), (4, 0.25)):  # each feature's vector is rel x the norm long
        assert out.features[i] * float(sae.W_dec[i].detach().norm()) == pytest.approx(rel * 2.0)


# ------------------------------------------------ positions


def test_positions_from_start_leave_earlier_logits_alone(tiny_model, sae):
    tokens = torch.tensor([[1, 2, 3, 4, 9, 8, 7]])
    clean = _logits(tiny_model, tokens)
    for mode in MODES:
        with steered(tiny_model, sae, {2: 5.0, 6: 3.0}, mode=mode, positions=4) as stats:
            gated = _logits(tiny_model, tokens)
        assert torch.equal(gated[:, :4], clean[:, :4])  # bit-identical before the start
        assert not torch.allclose(gated[:, 4:], clean[:, 4:])
        assert stats.positions == 3
    assert_clean(tiny_model)


@pytest.mark.parametrize("use_kv_cache", [True, False])
@pytest.mark.parametrize("mode", MODES)
def test_generated_positions_leave_the_prompt_unchanged(tiny_model, sae, mode, use_kv_cache):
    seen: list[torch.Tensor] = []
    kw = dict(prompt=PROMPT, max_new_tokens=8, n_samples=2, temperature=0.0, mode=mode,
              use_kv_cache=use_kv_cache)
    with tiny_model.hooks(fwd_hooks=[(LATER, lambda a, hook: seen.append(a.clone()))]):
        gen = generate_steered(tiny_model, sae, {2: 6.0, 5: -4.0}, positions="generated", **kw)
    clean = hook_activations(tiny_model, PROMPT[None], LATER)
    torch.testing.assert_close(seen[0][:, :4], clean.expand(2, -1, -1), rtol=0, atol=0)
    plain = generate_unsteered(tiny_model, **kw)
    # the first new token comes from the (unsteered) prompt; later ones feel the steering
    assert [t[4] for t in _tokens(gen)] == [t[4] for t in _tokens(plain)]
    every = generate_steered(tiny_model, sae, {2: 6.0, 5: -4.0}, positions="all", **kw)
    assert _tokens(every) != _tokens(gen)
    assert_clean(tiny_model)


def test_generated_positions_are_counted(tiny_model, sae):
    out = generate_steered(tiny_model, sae, 3, 4.0, prompt=PROMPT, max_new_tokens=10, n_samples=3,
                           positions="generated")
    assert out.stats.calls == 10 and out.stats.positions == 3 * 9  # the prompt pass steers none
    assert out.config.positions == "generated"


def test_positions_gate_follows_the_offset(tiny_model, sae):
    gate = Positions(start=3)
    act = torch.zeros(2, 4, 16)
    assert gate.mask(act)[:, 0].tolist() == [False, False, False, True]
    gate.offset = 5  # a cached pass past the start: everything
    assert gate.mask(act) is None


# ------------------------------------------------ max_act units


@pytest.fixture(scope="module")
def search(tok_model):
    texts = ["Once upon a time there was a little girl named Lily .",
             "She liked to play in the park with her friend Tom !"] * 4
    sae = make_sae()
    return sae, search_features(tok_model, sae, texts, SearchConfig(k=2, context_size=16),
                                progress=False)


def test_max_act_units_multiply_by_each_features_peak(tok_model, search):
    sae, found = search
    alive = [int(i) for i in (found.max_act > 0).nonzero().flatten()[:2]]
    kw = dict(prompt="Once upon a time", max_new_tokens=6, n_samples=2, seed=1)
    rel = {alive[0]: 2.0, alive[-1]: -1.0}
    out = generate_steered(tok_model, sae, rel, scale_unit="max_act", max_act=found.max_act, **kw)
    expected = {i: s * float(found.max_act[i]) for i, s in rel.items()}
    assert out.features == pytest.approx(expected)
    absolute = generate_steered(tok_model, sae, out.features, **kw)
    assert _tokens(absolute) == _tokens(out)
    # the steering vector is scale * max_act_i * W_dec[i]
    i = alive[0]
    vec = out.features[i] * steering_direction(sae, i)
    torch.testing.assert_close(vec, 2.0 * float(found.max_act[i]) * sae.W_dec[i].detach())
    assert_clean(tok_model)


def test_max_act_units_refuse_what_they_cannot_scale(tiny_model, sae):
    kw = dict(prompt=PROMPT, max_new_tokens=4, scale_unit="max_act")
    with pytest.raises(ValueError, match=r"max_act=search\.max_act"):
        generate_steered(tiny_model, sae, 1, 2.0, **kw)
    peaks = torch.linspace(0, 7, 8)  # feature 0 never fired
    with pytest.raises(ValueError, match="feature 0 has max activation 0 .*never fired"):
        generate_steered(tiny_model, sae, {1: 1.0, 0: 1.0}, max_act=peaks, **kw)
    with pytest.raises(ValueError, match="max_act has 3 values but this SAE has 8"):
        generate_steered(tiny_model, sae, 1, 2.0, max_act=torch.ones(3), **kw)
    with pytest.raises(ValueError, match="max_act has no value for feature 2"):
        generate_steered(tiny_model, sae, 2, 1.0, max_act={1: 3.0}, **kw)
    assert to_absolute_scales(sae, {1: 2.0}, "max_act", max_act={1: 3.0}) == {1: 6.0}
    assert_clean(tiny_model)


# ------------------------------------------------ bad input, and no hook ever left


BAD = [
    (dict(feature={}, scale=None), "no features to steer"),
    (dict(feature={1: 1.0}, scale=2.0), "give the scales in the dict"),
    (dict(feature=1, scale=None), "give a scale"),
    (dict(feature={1: 1.0, 9: 2.0}, scale=None), "feature 9 is out of range"),
    (dict(feature={1: float("nan")}, scale=None), "scale of feature 1 must be finite"),
    (dict(feature={2.5: 1.0}, scale=None), "must be an integer"),
    (dict(positions="prompt"), "positions must be one of all, generated"),
    (dict(scale_unit="max_act"), "max_act"),
]


@pytest.mark.parametrize("change,message", BAD)
def test_bad_controls_clear_error_and_no_hooks(tiny_model, sae, change, message):
    args = dict(feature=1, scale=1.0, prompt=PROMPT, max_new_tokens=5)
    args.update(change)
    with pytest.raises(ValueError, match=message):
        generate_steered(tiny_model, sae, **args)
    assert_clean(tiny_model)


def test_positions_is_validated_in_the_config():
    with pytest.raises(ValueError, match="positions must be one of all, generated, got 'none'"):
        SteerConfig(positions="none")
    assert SteerConfig(positions="generated").replace(seed=3).positions == "generated"
    assert SteerConfig.from_dict(SteerConfig(positions="generated").to_dict()).positions == "generated"


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("exc", [RuntimeError("sampler exploded"), KeyboardInterrupt()],
                         ids=["exception", "interrupt"])
def test_errors_mid_generation_leave_no_hook(tiny_model, sae, monkeypatch, mode, exc):
    real, calls = steer_generate._pick, {"n": 0}

    def pick(logits, u, temperature):
        calls["n"] += 1
        if calls["n"] == 3:
            raise exc
        return real(logits, u, temperature)

    monkeypatch.setattr(steer_generate, "_pick", pick)
    with pytest.raises(type(exc)):
        generate_steered(tiny_model, sae, {1: 3.0, 4: -2.0}, prompt=PROMPT, max_new_tokens=8,
                         mode=mode, positions="generated")
    assert calls["n"] == 3
    assert_clean(tiny_model)
    with pytest.raises(type(exc)):  # and by hand, inside a gated context
        with steered(tiny_model, sae, {1: 3.0}, mode=mode, positions=2):
            raise exc
    assert_clean(tiny_model)
