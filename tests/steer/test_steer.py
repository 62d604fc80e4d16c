"""Steering hooks and steered generation on the tiny random model, with real SAEs
(``builders.make_sae``) and one duck-typed stand-in."""
from __future__ import annotations

import types

import pytest
import torch

from builders import HOOK, make_sae
from sae_steer.lm import attached_hook_count, hook_activations
from sae_steer.sae import decoder_units
from sae_steer.steer import (
    clamping, generate_steered, generate_unsteered, steering, steering_direction,
    to_absolute_scale, to_relative_scale, typical_resid_norm,
)

PROMPT = torch.tensor([1, 2, 3, 4])


def _logits(model, tokens=PROMPT[None]):
    with torch.no_grad():
        return model(tokens)


def test_scale_zero_leaves_logits_unchanged(tiny_model):
    clean = _logits(tiny_model)
    with steering(tiny_model, HOOK, torch.randn(16), 0.0):
        steered = _logits(tiny_model)
    assert torch.equal(clean, steered)
    assert attached_hook_count(tiny_model) == 0


def test_steering_equals_adding_by_hand(tiny_model):
    direction = torch.arange(16, dtype=torch.float32) / 16
    with tiny_model.hooks(fwd_hooks=[(HOOK, lambda act, hook: act + 2.5 * direction)]):
        by_hand = _logits(tiny_model)
    with steering(tiny_model, HOOK, direction, 2.5) as stats:
        ours = _logits(tiny_model)
    torch.testing.assert_close(ours, by_hand, rtol=0, atol=0)
    assert not torch.allclose(ours, _logits(tiny_model))
    assert stats.calls == 1 and stats.positions == PROMPT.numel()


def test_steering_touches_every_position_of_kv_cached_generation(tiny_model, sae):
    out = generate_steered(tiny_model, sae, 3, 4.0, prompt=PROMPT, max_new_tokens=10,
                           n_samples=3, seed=0)
    # prompt pass steers 4 positions per row, then 9 length-1 passes (the 10th token is
    # sampled from the 9th pass's logits and never run through the model)
    assert out.stats.calls == 10
    assert out.stats.positions == 3 * (4 + 9)


@pytest.mark.parametrize("mode", ["decoder_row", "clamp", "decoder_onehot"])
def test_kv_cached_and_uncached_agree_greedy(tiny_model, sae, mode):
    kw = dict(prompt=PROMPT, max_new_tokens=20, n_samples=2, temperature=0.0, mode=mode)
    cached = generate_steered(tiny_model, sae, 2, 3.0, use_kv_cache=True, **kw)
    uncached = generate_steered(tiny_model, sae, 2, 3.0, use_kv_cache=False, **kw)
    for a, b in zip(cached.tokens, uncached.tokens):
        assert a.tolist() == b.tolist()
    assert attached_hook_count(tiny_model) == 0


def test_same_seed_same_samples_and_batch_independent(tiny_model, sae):
    kw = dict(prompt=PROMPT, max_new_tokens=12, seed=7)
    a = generate_steered(tiny_model, sae, 1, 2.0, n_samples=2, **kw)
    b = generate_steered(tiny_model, sae, 1, 2.0, n_samples=4, **kw)
    assert [t.tolist() for t in a.tokens] == [t.tolist() for t in b.tokens[:2]]
    c = generate_steered(tiny_model, sae, 1, 2.0, n_samples=2, prompt=PROMPT, max_new_tokens=12,
                         seed=8)
    assert [t.tolist() for t in a.tokens] != [t.tolist() for t in c.tokens]
    # scale 0 with the same seeds reproduces the unsteered samples exactly
    zero = generate_steered(tiny_model, sae, 1, 0.0, n_samples=2, **kw)
    plain = generate_unsteered(tiny_model, n_samples=2, **kw)
    assert [t.tolist() for t in zero.tokens] == [t.tolist() for t in plain.tokens]


def test_no_hooks_after_exception_inside_generation(tiny_model):
    def boom(act, hook):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        with steering(tiny_model, HOOK, torch.ones(16), 1.0):
            with tiny_model.hooks(fwd_hooks=[("blocks.1.hook_resid_post", boom)]):
                generate_unsteered(tiny_model, prompt=PROMPT, max_new_tokens=5)
    assert attached_hook_count(tiny_model) == 0


def test_no_hooks_after_keyboard_interrupt(tiny_model):
    calls = {"n": 0}

    def interrupt(act, hook):
        calls["n"] += 1
        if calls["n"] == 3:  # in the middle of KV-cached generation
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        with steering(tiny_model, HOOK, torch.ones(16), 1.0):
            with tiny_model.hooks(fwd_hooks=[("blocks.1.hook_resid_post", interrupt)]):
                generate_unsteered(tiny_model, prompt=PROMPT, max_new_tokens=10)
    assert attached_hook_count(tiny_model) == 0


def test_user_hooks_survive_our_context(tiny_model):
    tiny_model.hook_dict["blocks.1.hook_resid_post"].add_hook(lambda a, hook: None)
    with steering(tiny_model, HOOK, torch.ones(16), 1.0):
        assert attached_hook_count(tiny_model) == 2
    assert attached_hook_count(tiny_model) == 1
    tiny_model.reset_hooks()


def test_clamp_to_own_value_reproduces_clean_run(tiny_model, sae):
    token = torch.tensor([[5]])  # one position: the feature's own value is a single number
    acts = hook_activations(tiny_model, token, HOOK)
    feats = sae.encode(acts).detach()
    i = int(feats[0, 0].argmax())
    assert feats[0, 0, i] > 0
    with clamping(tiny_model, sae, i, float(feats[0, 0, i])):
        clamped = _logits(tiny_model, token)
    torch.testing.assert_close(clamped, _logits(tiny_model, token), rtol=1e-6, atol=1e-6)
    with clamping(tiny_model, sae, i, float(feats[0, 0, i]) + 5.0):
        moved = _logits(tiny_model, token)
    assert not torch.allclose(moved, _logits(tiny_model, token))


def test_clamp_moves_only_the_clamped_feature(tiny_model, sae):
    seen = {}
    with clamping(tiny_model, sae, 2, 7.0):
        with tiny_model.hooks(fwd_hooks=[(HOOK, lambda a, hook: seen.setdefault("x", a))]):
            _logits(tiny_model)
    clean = hook_activations(tiny_model, PROMPT[None], HOOK)
    # the clamp adds (7 - f_2) * W_dec[2]; nothing else changes
    f2 = sae.encode(clean)[..., 2:3]
    torch.testing.assert_close(seen["x"], clean + (7.0 - f2) * sae.W_dec[2].detach())


def test_decoder_onehot_carries_the_bias(sae):
    row = steering_direction(sae, 4, "decoder_row")
    onehot = steering_direction(sae, 4, "decoder_onehot")
    torch.testing.assert_close(onehot, row + sae.b_dec.detach())
    torch.testing.assert_close(row, sae.W_dec[4].detach())


def test_scale_units_round_trip(tiny_model):
    norm = typical_resid_norm(tiny_model, HOOK, PROMPT[None].repeat(2, 1))
    assert norm > 0
    direction = torch.tensor([3.0, 4.0] + [0.0] * 14)  # norm 5
    absolute = to_absolute_scale(0.5, norm, direction)
    assert absolute == pytest.approx(0.5 * norm / 5)
    assert to_relative_scale(absolute, norm, direction) == pytest.approx(0.5)
    assert typical_resid_norm(tiny_model, HOOK) > 0  # measured on its own samples


def test_relative_scale_in_generation(tiny_model, sae):
    kw = dict(prompt=PROMPT, max_new_tokens=8, n_samples=2, seed=3)
    rel = generate_steered(tiny_model, sae, 0, 0.5, scale_unit="relative", resid_norm=2.0, **kw)
    assert rel.scale == pytest.approx(0.5 * 2.0 / float(sae.W_dec[0].detach().norm()))
    ab = generate_steered(tiny_model, sae, 0, rel.scale, **kw)
    assert [t.tolist() for t in rel.tokens] == [t.tolist() for t in ab.tokens]


BAD = [
    (dict(feature=8), "out of range"),
    (dict(feature=-1), "out of range"),
    (dict(scale=float("nan")), "finite"),
    (dict(scale=float("inf")), "finite"),
    (dict(prompt=torch.tensor([], dtype=torch.long)), "empty"),
    (dict(prompt=torch.zeros(40, dtype=torch.long)), "context"),
    (dict(max_new_tokens=0), "positive"),
    (dict(max_new_tokens=-3), "positive"),
    (dict(max_new_tokens=100), "exceeds"),
    (dict(mode="onehot"), "unknown steering mode"),
    (dict(n_samples=0), "n_samples"),
    (dict(scale_unit="percent"), "scale_unit"),
]


@pytest.mark.parametrize("change,message", BAD)
def test_bad_input_clear_error_and_no_hooks(tiny_model, sae, change, message):
    args = dict(feature=1, scale=1.0, prompt=PROMPT, max_new_tokens=5)
    args.update(change)
    with pytest.raises(ValueError, match=message):
        generate_steered(tiny_model, sae, **args)
    assert attached_hook_count(tiny_model) == 0


def test_sae_that_does_not_fit_the_model(tiny_model):
    with pytest.raises(ValueError, match="does not match"):
        generate_steered(tiny_model, make_sae(d_in=12), 0, 1.0, prompt=PROMPT)
    with pytest.raises(ValueError, match="unknown hook"):
        generate_steered(tiny_model, make_sae(hook_name="blocks.7.hook_resid_post"), 0, 1.0,
                         prompt=PROMPT)
    with pytest.raises(ValueError, match="direction has shape"):
        with steering(tiny_model, HOOK, torch.ones(12), 1.0):
            pass
    assert attached_hook_count(tiny_model) == 0


def test_empty_text_prompt_is_rejected(tiny_model, sae):
    with pytest.raises(ValueError, match="empty"):
        generate_steered(tiny_model, sae, 0, 1.0, prompt="   ")


@pytest.mark.parametrize("architecture", ["relu", "topk"])
def test_real_sae_class_all_modes(tiny_model, architecture):
    sae = make_sae(d_sae=12, arch=architecture, k=3)
    with torch.no_grad():  # a large decoder bias, so decoder_onehot differs clearly
        sae.b_dec.copy_(torch.randn(16, generator=torch.Generator().manual_seed(0)))
    torch.testing.assert_close(steering_direction(sae, 5, "decoder_onehot"),
                               (sae.W_dec[5] + sae.b_dec).detach())
    token = torch.tensor([[7]])
    own = float(sae.encode(hook_activations(tiny_model, token, HOOK))[0, 0, 5].detach())
    clean = _logits(tiny_model, token)
    with clamping(tiny_model, sae, 5, own):
        torch.testing.assert_close(_logits(tiny_model, token), clean)
    for mode in ("decoder_row", "clamp", "decoder_onehot"):
        out = generate_steered(tiny_model, sae, 5, 2.0, prompt=PROMPT, max_new_tokens=4,
                               mode=mode)
        assert len(out.tokens) == 2 and out.mode == mode
    assert attached_hook_count(tiny_model) == 0


def test_jumprelu_sae_steers_and_clamps_below_its_threshold(tiny_model):
    """Directions are decoder rows as for any SAE; clamping sets the feature's output value,
    so a value under the feature's threshold (one its encoder never gives) is written as is."""
    sae = make_sae(d_sae=12, arch="jumprelu")
    token = torch.tensor([[7]])
    acts = hook_activations(tiny_model, token, HOOK)
    pre = sae.pre_activations(acts)[0, 0].detach()
    on, off = (int(i) for i in pre.topk(2).indices)
    assert pre[off] > 0
    with torch.no_grad():
        sae.threshold.copy_(pre.abs() / 2)
        sae.threshold[off] = pre[off] + 1.0  # silenced by its threshold alone
    feats = sae.encode(acts)[0, 0].detach()
    assert feats[off] == 0 and feats[on] == pre[on]
    assert torch.equal(sae.feature_direction(off), sae.W_dec[off])
    torch.testing.assert_close(decoder_units(sae)[off], sae.W_dec[off] / sae.W_dec[off].norm())
    clean = _logits(tiny_model, token)
    with clamping(tiny_model, sae, on, float(feats[on])):
        torch.testing.assert_close(_logits(tiny_model, token), clean)
    seen = {}
    below = float(pre[off]) / 2  # > 0, under the threshold
    with clamping(tiny_model, sae, off, below):
        with tiny_model.hooks(fwd_hooks=[(HOOK, lambda a, hook: seen.setdefault("x", a))]):
            _logits(tiny_model, token)
    torch.testing.assert_close(seen["x"], acts + below * sae.W_dec[off].detach())
    for mode in ("decoder_row", "clamp", "decoder_onehot"):
        out = generate_steered(tiny_model, sae, off, 2.0, prompt=PROMPT, max_new_tokens=4,
                               mode=mode)
        assert len(out.tokens) == 2 and out.mode == mode
    assert attached_hook_count(tiny_model) == 0


def test_stop_at_eos_false_runs_every_step(tiny_model, sae):
    out = generate_steered(tiny_model, sae, 0, 1.0, prompt=PROMPT, max_new_tokens=7,
                           n_samples=3, stop_at_eos=False)
    assert [len(t) for t in out.tokens] == [11, 11, 11]


def test_a_duck_typed_sae_steers_like_the_real_one(tiny_model, sae):
    """Any object with cfg.d_in/d_sae/hook_name, W_enc, b_enc, W_dec, b_dec, encode and
    decode steers (e.g. an SAELens SAE): no SAE class, no feature_direction needed."""
    W_enc, b_enc, W_dec, b_dec = (t.detach().clone() for t in
                                  (sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec))
    duck = types.SimpleNamespace(
        cfg=types.SimpleNamespace(d_in=16, d_sae=8, hook_name=HOOK),
        W_enc=W_enc, b_enc=b_enc, W_dec=W_dec, b_dec=b_dec,
        encode=lambda x: torch.relu((x - b_dec) @ W_enc + b_enc),
        decode=lambda f: f @ W_dec + b_dec)
    torch.testing.assert_close(steering_direction(duck, 4, "decoder_onehot"),
                               steering_direction(sae, 4, "decoder_onehot"))
    for mode in ("decoder_row", "clamp", "decoder_onehot"):
        kw = dict(prompt=PROMPT, max_new_tokens=6, n_samples=2, seed=5, mode=mode)
        ours = generate_steered(tiny_model, duck, 3, 4.0, **kw)
        real = generate_steered(tiny_model, sae, 3, 4.0, **kw)
        assert [t.tolist() for t in ours.tokens] == [t.tolist() for t in real.tokens]
        assert ours.feature == 3 and ours.mode == mode
    assert attached_hook_count(tiny_model) == 0
