"""train_sae end to end: input checks on the tiny model; training, caching, resuming and the
reference SAE on the offline toy world."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from sae_steer.train import pipeline
from sae_steer.config import SAEConfig, TrainConfig

HOOK = "blocks.1.hook_resid_post"


def _train_cfg(**kw) -> TrainConfig:
    base = dict(n_steps=30, batch_size=128, lr=3e-3, lr_warmup_steps=5, lr_decay_steps=5,
                l1_coefficient=1.0, l1_warmup_steps=10, dead_after_steps=10, resample_every=0,
                context_size=32, model_batch_size=16, buffer_batches=4, log_every=10,
                eval_sequences=4)
    return TrainConfig(**{**base, **kw})


@pytest.mark.parametrize("hook, d_in, texts, match", [
    ("blocks.1.hook_resid_pots", 16, ["a b"], "did you mean.*blocks.1.hook_resid_post"),
    (HOOK, 32, ["a b"], "d_in=32 does not match the model's activation width 16 at "
                        "'blocks.1.hook_resid_post'"),
    (HOOK, 16, "one story", "iterable of strings, not one string"),
])
def test_bad_inputs_fail_before_any_work(tiny_model, hook, d_in, texts, match):
    with pytest.raises(ValueError, match=match):
        pipeline.train_sae(tiny_model, texts, hook, SAEConfig(d_in=d_in, d_sae=64), _train_cfg())


def test_context_longer_than_model_and_hook_disagreement(tiny_model):
    with pytest.raises(ValueError, match="context_size=64 is longer than the model's n_ctx=32"):
        pipeline.train_sae(tiny_model, ["a"], HOOK, SAEConfig(d_in=16, d_sae=64),
                           _train_cfg(context_size=64))
    with pytest.raises(ValueError, match="hook_name='blocks.1.hook_resid_post' but this SAE was "
                                         "trained at 'blocks.0.hook_resid_post'"):
        pipeline.train_sae(tiny_model, ["a"], HOOK,
                           SAEConfig(d_in=16, d_sae=64, hook_name="blocks.0.hook_resid_post"),
                           _train_cfg())


# --- the offline world ---------------------------------------------------------------


@pytest.fixture(scope="module")
def world():
    from sae_steer.lm import default_hook_name, load_model, load_texts

    model = load_model("toystories", preset="small", device="cpu", progress=False)
    texts = list(load_texts("toystories", split="train", n=150, preset="small"))
    return model, default_hook_name(model), texts


def _world_sae_cfg(model) -> SAEConfig:
    return SAEConfig(d_in=model.cfg.d_model, d_sae=4 * model.cfg.d_model, device="cpu",
                     dataset_path="toystories/small/train[:150]")


def test_train_sae_on_the_world_records_metrics_and_metadata(world):
    model, hook, texts = world
    result = pipeline.fit_sae(model, texts, hook, _world_sae_cfg(model), _train_cfg(),
                              progress=False)
    cfg = result.sae.cfg
    assert (cfg.hook_name, cfg.context_size, cfg.prepend_bos) == (hook, 32, True)
    assert cfg.model_name and "toystories" in cfg.model_name
    assert [row["step"] for row in result.history] == [10, 20, 30]
    final = result.final
    assert final["explained_variance"] > 0.3
    assert final["ce_loss_spliced"] > final["ce_loss"] > 0  # splicing in an SAE costs a bit
    assert final["ce_increase"] == pytest.approx(final["ce_loss_spliced"] - final["ce_loss"])
    assert "explained variance" in result.summary()


def test_interrupted_run_resumes_to_the_same_weights(world, tmp_path):
    model, hook, texts = world
    cfg = _train_cfg(checkpoint_every=10)
    straight = pipeline.train_sae(model, texts, hook, _world_sae_cfg(model), cfg, progress=False)

    def crashing():  # the process "dies" part-way through reading the texts
        for i, text in enumerate(texts):
            if i == 45:  # ~75 tokens per story, read whole: past step 10, short of step 30
                raise RuntimeError("simulated crash")
            yield text

    with pytest.raises(RuntimeError, match="simulated crash"):
        pipeline.train_sae(model, crashing(), hook, _world_sae_cfg(model), cfg,
                           checkpoint_dir=tmp_path, progress=False)
    assert (tmp_path / "step_00000010").is_dir()
    resumed = pipeline.fit_sae(model, texts, hook, _world_sae_cfg(model), cfg,
                               checkpoint_dir=tmp_path, resume=True, progress=False)
    assert resumed.start_step >= 10
    for name, value in straight.state_dict().items():
        assert torch.equal(value, resumed.sae.state_dict()[name]), name


def test_load_or_train_trains_once(world, tmp_path, monkeypatch):
    monkeypatch.setenv("SAE_STEER_CACHE", str(tmp_path))
    model, hook, texts = world
    calls = []

    def texts_fn():
        calls.append(1)
        return texts

    cfg = _train_cfg(n_steps=10, lr_decay_steps=0)
    first = pipeline.load_or_train(model, texts_fn, hook, _world_sae_cfg(model), cfg,
                                   progress=False)
    second = pipeline.load_or_train(model, texts_fn, hook, _world_sae_cfg(model), cfg,
                                    progress=False)
    assert len(calls) == 1 and second.history == first.history
    for name, value in first.sae.state_dict().items():
        torch.testing.assert_close(value, second.sae.state_dict()[name])
    [entry] = [p for p in (tmp_path / "saes").iterdir() if not p.name.startswith(".")]
    assert {"cfg.json", "train_cfg.json", "metrics.json"} <= {p.name for p in entry.iterdir()}
    other = dataclasses.replace(cfg, seed=1)
    assert pipeline.cache_key(model, hook, _world_sae_cfg(model), other) != entry.name
    # an entry trained by older code (another cache version) is never served as current
    monkeypatch.setattr(pipeline, "_CACHE_VERSION", pipeline._CACHE_VERSION + 1)
    assert pipeline.cache_key(model, hook, _world_sae_cfg(model), cfg) != entry.name


@pytest.mark.slow
def test_reference_sae_reconstructs_the_world(world):
    model, hook, _ = world
    result = pipeline.reference_training(model, progress=False)
    sae, final = result.sae, result.final
    assert sae.cfg.hook_name == hook and sae.cfg.architecture == "relu"
    assert sae.cfg.d_sae >= 4 * model.cfg.d_model
    assert final["explained_variance"] >= 0.8
    assert final["dead_fraction"] < 0.2
    assert 1 < final["l0"] < sae.cfg.d_sae / 10
    assert pipeline.reference_sae(model, progress=False).cfg == sae.cfg  # cached


def test_reference_configs_for_every_architecture_share_the_recipe(world, monkeypatch):
    """One budget for all: the same texts, steps and optimiser; the topk family at the relu
    reference's L0, jumprelu with its fixed coefficient; quick shortens every schedule."""
    model, hook, _ = world
    seen = []

    def relu_reference(model, preset, *, quick, progress):
        seen.append(quick)
        return pipeline.TrainResult(sae=None, history=[{"l0": 9.6}], steps=1, seconds=0.0,
                                    scale=1.0)

    monkeypatch.setattr(pipeline, "reference_training", relu_reference)
    base = pipeline.reference_configs(model)
    for arch in ("topk", "jumprelu", "batchtopk", "matryoshka_batchtopk"):
        hook_name, sae_cfg, train_cfg, n_texts = pipeline.reference_configs(
            model, architecture=arch)
        assert (hook_name, n_texts) == (base[0], base[3])
        assert sae_cfg.architecture == arch and sae_cfg.d_sae == base[1].d_sae
        assert sae_cfg.k == (None if arch == "jumprelu" else 10)
        changed = set(train_cfg.diff(base[2]))
        assert changed == ({"l0_coefficient"} if arch == "jumprelu" else set())
    d_sae = base[1].d_sae
    assert pipeline.reference_configs(model, architecture="matryoshka_batchtopk")[
        1].matryoshka_widths == (d_sae // 8, d_sae // 4, d_sae // 2, d_sae)
    quick = pipeline.reference_configs(model, architecture="topk", quick=True)[2]
    assert quick.n_steps == pipeline.QUICK_STEPS and seen[-1] is True
    assert quick.resolved(d_sae, 64).lr_decay_steps < base[2].lr_decay_steps
    # the relu reference itself: its key, and so the cached SAE, unchanged
    assert pipeline.cache_key(model, hook, base[1], base[2]) == pipeline.cache_key(
        model, hook, *pipeline.reference_configs(model, architecture="relu")[1:3])
