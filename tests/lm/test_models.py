"""load_model: the offline toy world (built once, then cached), the real model's error
path without network, pass-through models, and naming helpers."""
from __future__ import annotations

import json

import pytest
import torch

from sae_steer.config import WorldConfig
from sae_steer.fsutil import cache_dir
from sae_steer.lm.models import (ModelDownloadError, default_device, default_hook_name, load_model,
                                 model_name)
from sae_steer.toystories import CONCEPTS, concept_count, lm

TINY_WORLD = WorldConfig(name="test", n_train_stories=200, n_val_stories=20, d_model=16, n_heads=2,
                         d_mlp=32, n_ctx=128, steps=8, batch_size=8, warmup_steps=2)


@pytest.fixture
def tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SAE_STEER_CACHE", str(tmp_path))
    return tmp_path


def test_cache_dir_and_device(tmp_cache):
    assert cache_dir() == tmp_cache.resolve()
    assert default_device() == ("cuda" if torch.cuda.is_available() else "cpu")


def test_toy_model_is_built_once_then_loaded(tmp_cache):
    before = lm.builds_run
    model = load_model("toystories", preset=TINY_WORLD, device="cpu", progress=False)
    assert lm.builds_run == before + 1
    entry = lm.world_dir(TINY_WORLD, tmp_cache)
    assert {p.name for p in entry.iterdir()} >= {"model.safetensors", "config.json", "tokenizer.json"}
    assert not [p for p in entry.parent.iterdir() if p.is_dir() and p.name.startswith(".")]  # no temp dirs
    mtime = (entry / "model.safetensors").stat().st_mtime_ns
    again = load_model("toystories", preset=TINY_WORLD, device="cpu", progress=False)
    assert lm.builds_run == before + 1 and (entry / "model.safetensors").stat().st_mtime_ns == mtime
    for (name, a), b in zip(model.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), name
    record = json.loads((entry / "config.json").read_text())
    assert record["world"] == TINY_WORLD.to_dict() and record["validation_loss"] > 0
    assert lm.world_metrics(TINY_WORLD) == record


def test_concurrent_loads_build_once(tmp_cache):
    """Two callers at once: the file lock makes one build and the other wait, then load."""
    from concurrent.futures import ThreadPoolExecutor
    before = lm.builds_run
    with ThreadPoolExecutor(2) as pool:
        models = list(pool.map(lambda _: load_model("toystories", preset=TINY_WORLD, device="cpu",
                                                    progress=False), range(2)))
    assert lm.builds_run == before + 1
    assert torch.equal(models[0].W_E, models[1].W_E)


def test_incomplete_cache_entry_is_rebuilt(tmp_cache):
    entry = lm.world_dir(TINY_WORLD, tmp_cache)
    entry.mkdir(parents=True)
    (entry / "config.json").write_text("{}")  # e.g. a copy interrupted before the weights
    before = lm.builds_run
    model = load_model("toystories", preset=TINY_WORLD, device="cpu", progress=False)
    assert lm.builds_run == before + 1 and (entry / "model.safetensors").exists()
    assert model_name(model) == "toystories/test"


def test_toy_model_text_interface(tmp_cache):
    model = load_model("toystories", preset=TINY_WORLD, device="cpu", progress=False)
    assert model.cfg.n_layers == 4 and model_name(model) == "toystories/test"
    assert default_hook_name(model) == "blocks.2.hook_resid_post"
    text = "Once upon a time, there was a little girl named Lily."
    tokens = model.to_tokens(text)
    assert model.to_string(tokens[0, 1:]) == text
    assert model.to_str_tokens(text)[:3] == ["<bos>", "Once", "upon"]
    torch.manual_seed(0)
    out = model.generate("Once upon a time", max_new_tokens=10, verbose=False)
    assert isinstance(out, str) and out.startswith("Once upon a time")
    f64 = load_model("toystories", preset=TINY_WORLD, device="cpu", dtype="float64", progress=False)
    assert f64.W_E.dtype == torch.float64


def test_preset_names(tmp_cache):
    assert lm.world_config("small").name == "small" and lm.world_config("demo").d_model > 64
    with pytest.raises(ValueError, match="known presets"):
        load_model("toystories/huge")
    with pytest.raises(ValueError, match="dtype"):
        load_model("toystories", preset=TINY_WORLD, dtype="float7")


def test_unknown_model_name_lists_known_ones():
    with pytest.raises(ValueError, match="known models: toystories.*tiny-stories-33M"):
        load_model("gpt-5")
    with pytest.raises(TypeError):
        load_model(42)


def test_real_model_without_network_fails_in_one_line(monkeypatch):
    # Offline mode makes the hub fail at once instead of waiting on the network.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelDownloadError, match="load_model\\('toystories'\\)") as err:
        load_model("tiny-stories-33M", device="cpu")
    assert "\n" not in str(err.value) and isinstance(err.value, ConnectionError)


@pytest.fixture
def no_hub(monkeypatch):
    """The hub unreachable (the probe says so) and HF_HUB_OFFLINE unset; every attempt to
    load is recorded instead of made."""
    import huggingface_hub.constants

    from sae_steer.lm import models
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(models, "_hub_reachable", lambda timeout=models.HUB_PROBE_TIMEOUT: False)
    calls = []

    def record(*a, **kw):
        calls.append((a, kw, huggingface_hub.constants.HF_HUB_OFFLINE))
        return SimpleModel()
    monkeypatch.setattr(models, "from_hf", record)
    monkeypatch.setattr(models, "boot_bridge", record)
    return calls


@pytest.mark.parametrize("bridge", [False, True])
def test_real_model_with_the_hub_unreachable_fails_at_once(no_hub, monkeypatch, bridge):
    """No download is attempted (the hub client's retries took ~25 s): the message comes first."""
    from sae_steer.lm import models
    monkeypatch.setattr(models, "_real_model_cached", lambda: False)
    with pytest.raises(ModelDownloadError, match=r"\(huggingface\.co is unreachable and the model is "
                       r"not in the local HF cache\); without network use the offline model: "
                       r"load_model\('toystories'\)") as err:
        load_model("tiny-stories-33M", device="cpu", bridge=bridge)
    assert no_hub == [] and "\n" not in str(err.value)


def test_real_model_with_hf_hub_offline_set_fails_without_probing(no_hub, monkeypatch):
    from sae_steer.lm import models
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # set after import: read at the call
    monkeypatch.setattr(models, "_hub_reachable", lambda **kw: pytest.fail("probed the hub"))
    monkeypatch.setattr(models, "_real_model_cached", lambda: False)
    with pytest.raises(ModelDownloadError, match=r"HF_HUB_OFFLINE is set"):
        load_model("tiny-stories-33M", device="cpu")
    assert no_hub == []


def test_a_cached_real_model_loads_offline_from_the_cache(no_hub, monkeypatch):
    import huggingface_hub.constants

    from sae_steer.lm import models
    monkeypatch.setattr(models, "_real_model_cached", lambda: True)
    load_model("tiny-stories-33M", device="cpu")
    (args, kwargs, offline), = no_hub
    assert args[0] == "roneneldan/TinyStories-33M" and offline is True  # cache only, no retries
    assert huggingface_hub.constants.HF_HUB_OFFLINE is False  # restored after the load


def test_the_probe_is_one_short_connection_to_the_hub(monkeypatch):
    from sae_steer.lm import models
    seen = []

    def refuse(address, timeout):
        seen.append((address, timeout))
        raise OSError("unreachable")
    monkeypatch.setattr(models.socket, "create_connection", refuse)
    assert models._hub_reachable() is False
    assert seen == [(("huggingface.co", 443), models.HUB_PROBE_TIMEOUT)] and models.HUB_PROBE_TIMEOUT <= 1.0
    monkeypatch.setattr(models.hub_constants, "ENDPOINT", "http://mirror.example:8080")
    models._hub_reachable()
    assert seen[-1][0] == ("mirror.example", 8080)


def test_hooked_transformer_passes_through(tiny_model):
    assert load_model(tiny_model) is tiny_model
    assert load_model(tiny_model, device="cpu") is tiny_model and tiny_model.cfg.device == "cpu"
    as64 = load_model(tiny_model, dtype=torch.float64)
    assert as64.W_E.dtype == torch.float64
    assert default_hook_name(tiny_model) == "blocks.1.hook_resid_post"  # the seed writeup's layer
    assert model_name(tiny_model) == (tiny_model.cfg.model_name or "custom")


@pytest.mark.slow
def test_small_preset_learns_the_stories():
    """The real CI preset (cached in the test session's cache after the first run)."""
    model = load_model("toystories", preset="small", device="cpu")
    metrics = lm.world_metrics("small")
    assert metrics == lm.world_metrics("small", cache_dir() / "toystories")
    assert metrics["validation_loss"] < 1.0  # an untrained model scores ~6 nats (log of the vocab)
    vocab = set(model.tokenizer.get_vocab())
    torch.manual_seed(0)
    for kwargs in ({"do_sample": False}, {"temperature": 0.8}):
        text = model.generate("Once upon a time", max_new_tokens=60, verbose=False, **kwargs)
        words = model.to_str_tokens(text, prepend_bos=False)
        assert text.startswith("Once upon a time,") and "." in text
        assert "<unk>" not in words and set(words) <= vocab
    # Sampled stories contain the planted concepts at roughly their training rates.
    prompt = model.to_tokens("Once upon a time").repeat(40, 1)
    out = model.generate(prompt, max_new_tokens=100, verbose=False, temperature=1.0)  # [40, n + 100]
    seen = {c: 0 for c in CONCEPTS}
    for row in out:
        str_tokens = model.to_str_tokens(row)
        end = str_tokens.index("<eos>") if "<eos>" in str_tokens else len(str_tokens)
        for c in CONCEPTS:
            seen[c] += concept_count(str_tokens[:end], c) > 0
    assert sum(n > 0 for n in seen.values()) >= 3, seen
    assert all(n < 30 for n in seen.values()), seen  # a minority of stories, as in training


def test_real_and_neo_worlds_share_one_loader(monkeypatch):
    """load_model("tiny-stories-33M") and load_model("toystories-neo") both end in from_hf,
    i.e. HookedTransformer.from_pretrained(<TinyStories-33M>, hf_model=..., tokenizer=...)."""
    from sae_steer.lm import models
    calls = []
    monkeypatch.setattr(models, "from_hf", lambda *a, **kw: calls.append((a, kw)) or SimpleModel())
    monkeypatch.setattr(models, "_hub_offline", lambda: False)
    monkeypatch.setattr(models, "_hub_reachable", lambda: True)  # the network path is unchanged
    models._load_real("cpu", None)
    assert calls[-1] == (("roneneldan/TinyStories-33M", None, None, "cpu", None), {})
    monkeypatch.setattr(models, "ensure_neo_world", lambda cfg, **kw: kw["cache_root"] / "neo-x")
    monkeypatch.setattr(models, "load_neo_hf", lambda path, dtype: ("HF", "TOK"))
    model = load_model("toystories-neo", device="cpu")
    (name, hf, tok, device, dtype), kw = calls[-1]
    assert (name, hf, tok, device) == ("roneneldan/TinyStories-33M", "HF", "TOK", "cpu")
    assert kw["local_files_only"] is True and kw["cache_dir"].endswith("neo-x/hub")
    assert model.cfg.model_name == "toystories-neo/small"
    with pytest.raises(ValueError, match="known presets"):
        load_model("toystories-neo/huge")


def test_bridge_boots_the_same_hf_models(monkeypatch):
    """bridge=True: the real model and the GPT-Neo world boot a TransformerBridge (the neo
    world from its own directory), in compatibility mode; the word-level world cannot."""
    from sae_steer.lm import models
    calls = []

    def boot(name, hf_model=None, tokenizer=None, device=None, **kw):
        calls.append((name, hf_model, tokenizer, device))
        return SimpleModel()

    monkeypatch.setattr(models.TransformerBridge, "boot_transformers", staticmethod(boot))
    monkeypatch.setattr(SimpleModel, "enable_compatibility_mode",
                        lambda self: setattr(self, "compat", True), raising=False)
    monkeypatch.setattr(models, "_hub_offline", lambda: False)
    monkeypatch.setattr(models, "_hub_reachable", lambda: True)
    real = models._load_real("cpu", None, bridge=True)
    assert calls[-1] == ("roneneldan/TinyStories-33M", None, None, "cpu") and real.compat
    monkeypatch.setattr(models, "ensure_neo_world", lambda cfg, **kw: kw["cache_root"] / "neo-x")
    monkeypatch.setattr(models, "load_neo_hf", lambda path, dtype: ("HF", "TOK"))
    neo_bridge = load_model("toystories-neo", device="cpu", bridge=True)
    assert calls[-1][0].endswith("neo-x") and calls[-1][1:] == ("HF", "TOK", "cpu")
    assert neo_bridge.compat and neo_bridge.cfg.model_name == "toystories-neo/small"
    with pytest.raises(ValueError, match="needs an HF model"):
        load_model("toystories", bridge=True)


class SimpleModel:
    def __init__(self):
        self.cfg = type("Cfg", (), {"model_name": "TinyStories-33M"})()
