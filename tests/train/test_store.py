"""The activation store: harvest once, train over epochs, in memory or spilled to disk."""
from __future__ import annotations

import pytest
import torch

from sae_steer.config import SAEConfig, TrainConfig
from sae_steer.lm import default_hook_name, load_model, load_texts
from sae_steer.train import checkpoint, pipeline
from sae_steer.train.store import ActivationStore, EpochBatches


def _rows(n=300, d=8, seed=0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def test_memory_and_disk_stores_give_the_same_batches(tmp_path):
    data = _rows()
    mem = ActivationStore(8, budget_bytes=10**9, directory=tmp_path)
    disk = ActivationStore(8, budget_bytes=1000, directory=tmp_path)  # spills at 31 rows
    for store in (mem, disk):
        for chunk in data.split(40):
            store.append(chunk)
    a = list(EpochBatches(mem, 64, seed=3, epochs=3))
    b = list(EpochBatches(disk, 64, seed=3, epochs=3))
    assert not mem.on_disk and disk.on_disk and disk.path.stat().st_size == data.numel() * 4
    assert len(a) == len(b) == 3 * (300 // 64)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    epoch1 = torch.cat(a[:4])  # one epoch: distinct rows of the store, a fresh order each time
    assert len(torch.unique(epoch1, dim=0)) == 256
    assert not torch.equal(torch.cat(a[:4]), torch.cat(a[4:8]))
    disk.close()
    assert not list(tmp_path.iterdir())  # the file and its folder are gone


def test_store_over_budget_without_spill_gives_up(tmp_path):
    store = ActivationStore(8, budget_bytes=1000, spill=False, directory=tmp_path)
    store.append(_rows(20))
    store.append(_rows(20))
    assert store.dropped and not store.on_disk
    first = [torch.zeros(4, 8)] * 2
    assert len(list(EpochBatches(store, 4, 0, first_pass=first))) == 2  # no epochs after it


@pytest.fixture(scope="module")
def world():
    model = load_model("toystories", preset="small", device="cpu", progress=False)
    return model, default_hook_name(model), load_texts("toystories", n=60)


def _cfgs(model, **kw):
    sae_cfg = SAEConfig(d_in=model.cfg.d_model, d_sae=2 * model.cfg.d_model, device="cpu")
    base = dict(n_steps=40, batch_size=256, lr=3e-3, lr_warmup_steps=5, lr_decay_steps=5,
                l1_coefficient=1.0, l1_warmup_steps=10, dead_after_steps=10, resample_every=0,
                context_size=64, model_batch_size=16, buffer_batches=4, log_every=10,
                eval_sequences=4)
    return sae_cfg, TrainConfig(**{**base, **kw})


def _same(a, b):
    return all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())


def test_small_corpus_trains_every_step_over_epochs_of_the_store(world):
    model, hook, texts = world
    sae_cfg, cfg = _cfgs(model)
    result = pipeline.fit_sae(model, texts, hook, sae_cfg, cfg, progress=False)
    h = result.harvest
    assert h["activations"] < cfg.n_steps * cfg.batch_size  # the corpus is smaller ...
    assert result.steps == 40 and h["epochs"] >= 3 and h["store"] == "memory"  # ... yet all 40
    assert result.history[-1]["epoch"] == h["epochs"]
    assert h["texts"] == 56 and h["windows"] > 56 and h["truncated"] == 0  # whole texts
    with pytest.warns(UserWarning, match="ran out"):  # streaming only: the old behaviour
        short = pipeline.fit_sae(model, texts, hook, sae_cfg, cfg.replace(store="stream"),
                                 progress=False)
    assert short.steps < 40


def test_auto_store_gives_the_streamed_sae_while_the_texts_last(world):
    model, hook, texts = world
    sae_cfg, cfg = _cfgs(model, n_steps=12)
    stored = pipeline.train_sae(model, texts, hook, sae_cfg, cfg, progress=False)
    streamed = pipeline.train_sae(model, texts, hook, sae_cfg, cfg.replace(store="stream"),
                                  progress=False)
    assert _same(stored, streamed)


def test_epochs_spill_to_disk_same_sae_and_file_removed(world, tmp_path, monkeypatch):
    monkeypatch.setenv("SAE_STEER_CACHE", str(tmp_path))
    model, hook, texts = world
    sae_cfg, cfg = _cfgs(model, epochs=3)
    in_memory = pipeline.fit_sae(model, texts, hook, sae_cfg, cfg, progress=False)
    on_disk = pipeline.fit_sae(model, texts, hook, sae_cfg,
                               cfg.replace(store_budget_bytes=4096), progress=False)
    assert in_memory.harvest["store"] == "memory" and on_disk.harvest["store"] == "disk"
    per_epoch = in_memory.harvest["activations"] // cfg.batch_size
    assert in_memory.steps == on_disk.steps == 3 * per_epoch and on_disk.harvest["epochs"] == 3
    assert _same(in_memory.sae, on_disk.sae)
    assert not [p for p in (tmp_path / "activation_stores").rglob("*") if p.is_file()]
    with pytest.raises(ValueError, match="store_budget_bytes"):
        pipeline.fit_sae(model, texts, hook, sae_cfg,
                         cfg.replace(store="memory", store_budget_bytes=4096), progress=False)


def test_resume_over_store_epochs_is_bit_identical(world, tmp_path, monkeypatch):
    model, hook, texts = world
    sae_cfg, cfg = _cfgs(model, epochs=3, checkpoint_every=10)
    straight = pipeline.fit_sae(model, texts, hook, sae_cfg, cfg, progress=False)
    assert straight.steps > 30
    save = checkpoint.save_training

    def save_then_crash(root, sae, optimizer, state, cfg):
        save(root, sae, optimizer, state, cfg)
        if state.step == 30:  # in the second epoch
            raise RuntimeError("simulated crash")

    monkeypatch.setattr(checkpoint, "save_training", save_then_crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        pipeline.fit_sae(model, texts, hook, sae_cfg, cfg, checkpoint_dir=tmp_path,
                         progress=False)
    monkeypatch.setattr(checkpoint, "save_training", save)
    resumed = pipeline.fit_sae(model, texts, hook, sae_cfg, cfg, checkpoint_dir=tmp_path,
                               resume=True, progress=False)
    assert resumed.start_step == 30 and _same(straight.sae, resumed.sae)
    assert resumed.history == straight.history


def test_reference_recipe_cache_key_follows_its_fields(world):
    model, hook, _ = world
    _, sae_cfg, train_cfg, _ = pipeline.reference_configs(model)
    assert (train_cfg.long_texts, train_cfg.store) == ("truncate", "stream")
    key = pipeline.cache_key(model, hook, sae_cfg, train_cfg)
    assert key == pipeline.cache_key(model, hook, sae_cfg, train_cfg.replace(epochs=None))
    assert key != pipeline.cache_key(model, hook, sae_cfg, train_cfg.replace(long_texts="window"))
