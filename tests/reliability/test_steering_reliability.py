"""Steering never leaks a hook: errors and Ctrl-C inside generation leave the model clean.

Each test records the clean logits (and an unsteered sample) first, breaks generation in
the middle of KV-cached sampling, then checks that no hook is attached and that the next
unsteered run is bit-identical to the one before.
"""
from __future__ import annotations

import pytest
import torch

from builders import HOOK, assert_clean, make_sae
from sae_steer.lm import attached_hook_count
from sae_steer.measure import rescore, steering_report
from sae_steer.steer import clamping, generate_steered, generate_unsteered, steered, steering
from sae_steer.steer import generate as steer_generate

PROMPT = torch.tensor([1, 2, 3, 4])


def _clean(model):
    with torch.no_grad():
        logits = model(PROMPT[None])
    sample = generate_unsteered(model, prompt=PROMPT, max_new_tokens=6, n_samples=2, seed=1)
    return logits, [t.tolist() for t in sample.tokens]


def _assert_same_as_before(model, before):
    assert_clean(model)
    logits, tokens = _clean(model)
    assert torch.equal(logits, before[0])  # bit-identical, not just close
    assert tokens == before[1]


def _break_sampling(monkeypatch, exc: BaseException, on_call: int = 3):
    """Raise ``exc`` from the sampling step on its ``on_call``-th call (mid-generation)."""
    real, calls = steer_generate._pick, {"n": 0}

    def pick(logits, u, temperature):
        calls["n"] += 1
        if calls["n"] == on_call:
            raise exc
        return real(logits, u, temperature)

    monkeypatch.setattr(steer_generate, "_pick", pick)
    return calls


@pytest.mark.parametrize("mode", ["decoder_row", "clamp", "decoder_onehot"])
def test_exception_in_sampling_step_leaves_no_hook(tiny_model, sae, monkeypatch, mode):
    before = _clean(tiny_model)
    calls = _break_sampling(monkeypatch, RuntimeError("sampler exploded"))
    with pytest.raises(RuntimeError, match="sampler exploded"):
        generate_steered(tiny_model, sae, 3, 8.0, prompt=PROMPT, max_new_tokens=10, mode=mode)
    assert calls["n"] == 3  # it really broke mid-generation, with the hook attached
    monkeypatch.undo()
    _assert_same_as_before(tiny_model, before)


@pytest.mark.parametrize("mode", ["decoder_row", "clamp"])
def test_keyboard_interrupt_in_sampling_step_leaves_no_hook(tiny_model, sae, monkeypatch, mode):
    before = _clean(tiny_model)
    _break_sampling(monkeypatch, KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        generate_steered(tiny_model, sae, 5, -6.0, prompt=PROMPT, max_new_tokens=10, mode=mode)
    monkeypatch.undo()
    _assert_same_as_before(tiny_model, before)


@pytest.mark.parametrize("exc", [ValueError("bad activation"), KeyboardInterrupt()],
                         ids=["exception", "keyboard-interrupt"])
def test_error_raised_by_a_model_hook_mid_generation(tiny_model, sae, exc):
    """A user's own hook (downstream of ours) raises on the 4th forward pass."""
    before = _clean(tiny_model)
    calls = {"n": 0}

    def flaky(act, hook):
        calls["n"] += 1
        if calls["n"] == 4:
            raise exc

    tiny_model.add_hook("blocks.1.hook_resid_post", flaky)
    try:
        with pytest.raises(type(exc)):
            generate_steered(tiny_model, sae, 2, 5.0, prompt=PROMPT, max_new_tokens=10)
        # ours is gone; the user's hook is theirs to remove, so it is still there
        assert attached_hook_count(tiny_model) == 1
    finally:
        tiny_model.reset_hooks()
    _assert_same_as_before(tiny_model, before)


def test_interrupt_inside_steering_contexts_used_by_hand(tiny_model, sae):
    """The context managers a notebook uses directly: steering, clamping, steered."""
    before = _clean(tiny_model)
    contexts = [lambda: steering(tiny_model, HOOK, sae.W_dec[0].detach(), 4.0),
                lambda: clamping(tiny_model, sae, 1, 3.0),
                lambda: steered(tiny_model, sae, 2, 4.0, "decoder_onehot")]
    for make in contexts:
        with pytest.raises(KeyboardInterrupt):
            with make():
                assert attached_hook_count(tiny_model) == 1
                generate_unsteered(tiny_model, prompt=PROMPT, max_new_tokens=3)  # runs steered inside the block
                raise KeyboardInterrupt
        assert_clean(tiny_model)
    # nested contexts unwind in order, even when the inner one raises
    with pytest.raises(RuntimeError, match="inner"):
        with steering(tiny_model, HOOK, torch.ones(16), 1.0):
            with clamping(tiny_model, sae, 0, 2.0):
                assert attached_hook_count(tiny_model) == 2
                raise RuntimeError("inner")
    _assert_same_as_before(tiny_model, before)


def test_interrupted_steering_report_leaves_no_hook(tiny_model, sae, monkeypatch):
    """steering_report runs steered then unsteered generation; break the unsteered one."""
    before = _clean(tiny_model)
    _break_sampling(monkeypatch, KeyboardInterrupt(), on_call=7)  # steered run: calls 1..5
    with pytest.raises(KeyboardInterrupt):
        steering_report(tiny_model, sae, 1, 5.0, n_samples=2, prompt=PROMPT, max_new_tokens=5)
    monkeypatch.undo()
    _assert_same_as_before(tiny_model, before)


def test_rescoring_while_steering_is_refused(tiny_model, sae):
    """Re-scoring must read the unsteered model: inside a steering block it says so."""
    with steering(tiny_model, HOOK, torch.ones(16), 3.0):
        with pytest.raises(RuntimeError, match="hook\\(s\\) attached.*unsteered model"):
            rescore(tiny_model, sae, [PROMPT], 0)
        assert attached_hook_count(tiny_model) == 1  # refused, and did not touch ours
    assert_clean(tiny_model)


def test_failed_generation_in_the_widget_shows_the_error_and_leaves_no_hook(
        tok_model, monkeypatch):
    from sae_steer.ui.widgets import SteeringPanel

    sae = make_sae()
    panel = SteeringPanel(tok_model, sae, feature=1, scale=4.0, max_new_tokens=5)
    _break_sampling(monkeypatch, RuntimeError("sampler exploded"), on_call=2)
    panel._on_click()
    assert "Error: sampler exploded" in panel.status.value
    assert not panel.button.disabled and panel.runs == 0  # ready for another click
    assert_clean(tok_model)
    monkeypatch.undo()
    panel._on_click()
    assert panel.runs == 1 and 'data-feature="1"' in panel.output.value
    assert_clean(tok_model)


@pytest.mark.parametrize("mode", ["decoder_row", "clamp", "decoder_onehot"])
def test_interrupted_multi_feature_generation_on_generated_positions(tiny_model, sae,
                                                                     monkeypatch, mode):
    """Several features at once, prompt left alone: the hook still always comes off."""
    before = _clean(tiny_model)
    _break_sampling(monkeypatch, KeyboardInterrupt(), on_call=4)
    with pytest.raises(KeyboardInterrupt):
        generate_steered(tiny_model, sae, {1: 4.0, 3: -2.0, 6: 1.0}, prompt=PROMPT,
                         max_new_tokens=10, mode=mode, positions="generated",
                         use_kv_cache=mode != "clamp")
    monkeypatch.undo()
    _assert_same_as_before(tiny_model, before)
