"""CI's run of the TinyStories-33M code path, offline: a tiny GPT-Neo world is trained from
scratch, loaded through ``HookedTransformer.from_pretrained``'s GPT-Neo conversion (the
function ``load_model("tiny-stories-33M")`` uses), and the whole pipeline runs on it:
train an SAE -> search -> steer -> re-score."""
from __future__ import annotations

import os

import pytest
import torch

from sae_steer import generate_steered, planted_concepts, rescore
from sae_steer.config import SAEConfig, SearchConfig, TrainConfig
from sae_steer.inspect import search_features
from sae_steer.lm import load_model, load_texts
from sae_steer.lm.models import default_hook_name, model_name
from sae_steer.toystories import neo
from sae_steer.train import train_sae

pytestmark = pytest.mark.slow
TINY_NEO = neo.NeoConfig(name="test", n_train_stories=400, n_val_stories=20, vocab_size=384,
                         steps=100, batch_size=16, warmup_steps=10)
HOOK = "blocks.1.hook_resid_post"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    cache = tmp_path_factory.mktemp("neo_cache")
    before_env, before_builds = os.environ.get("SAE_STEER_CACHE"), neo.builds_run
    os.environ["SAE_STEER_CACHE"] = str(cache)
    try:
        model = load_model("toystories-neo", preset=TINY_NEO, device="cpu", progress=False)
        again = load_model("toystories-neo", preset=TINY_NEO, device="cpu", progress=False)
        assert neo.builds_run == before_builds + 1  # the second load is a cache hit
        assert torch.equal(model.W_E, again.W_E)
        yield model, neo.neo_dir(TINY_NEO, cache)
    finally:
        if before_env is None:
            os.environ.pop("SAE_STEER_CACHE", None)
        else:
            os.environ["SAE_STEER_CACHE"] = before_env


def test_the_world_is_an_ordinary_hf_model_directory(world):
    _, path = world
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
            "world.json"} <= {p.name for p in path.iterdir()}
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".tmp_")]  # published whole
    hf, tok = neo.load_neo_hf(path)
    assert type(hf).__name__ == "GPTNeoForCausalLM" and hf.config.attention_layers == ["global", "local"] * 2
    record = neo.neo_metrics(TINY_NEO, path.parent.parent)
    assert record["validation_loss"] > 0 and record["neo"] == TINY_NEO.to_dict()


def test_loaded_like_tiny_stories_33m(world):
    model, path = world
    assert model_name(model) == "toystories-neo/test" and default_hook_name(model) == HOOK
    cfg = model.cfg
    assert (cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.d_mlp, cfg.n_ctx) == (4, 64, 4, 256, 512)
    assert cfg.attn_types == ["global", "local", "global", "local"] and cfg.window_size == 32
    assert cfg.original_architecture == "GPTNeoForCausalLM"
    text = "Once upon a time, there was a storm near the castle."
    _, cache = model.run_with_cache(text, names_filter=HOOK)
    assert cache[HOOK].shape[-1] == 64
    hf, _ = neo.load_neo_hf(path)
    tokens = model.to_tokens(text)
    assert tokens[0, 0] == model.tokenizer.bos_token_id == 0  # <|endoftext|> as BOS
    with torch.no_grad():  # from_pretrained centres the unembedding: compare log-probs
        ours = model(tokens).log_softmax(-1)
        theirs = hf(tokens).logits.log_softmax(-1)
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)
    pieces = model.to_str_tokens(text)
    assert pieces[0] == neo.EOT and pieces[1] == "Once" and " upon" in pieces
    assert len(pieces) > len(text.split()) + 2  # sub-word pieces
    assert model.to_string(tokens[0, 1:]) == text


def test_planted_concepts_on_the_bpe_world(world):
    model, _ = world
    text = "Then a big earthquake shook the town, and a fire started."
    ids = model.to_tokens(text)[0]
    mask = planted_concepts()["danger"].mask(model, ids)
    flagged = "".join(p for p, on in zip(model.to_str_tokens(ids), mask) if on)
    assert flagged.replace(" ", "") == "earthquakefire" and sum(mask) > 2


def test_whole_pipeline_runs_on_the_gpt_neo_path(world):
    model, _ = world
    texts = list(load_texts("toystories", split="train", n=120, progress=False))
    sae = train_sae(model, texts, HOOK, SAEConfig(d_in=64, d_sae=128, device="cpu"),
                    TrainConfig(n_steps=40, batch_size=128, context_size=128, model_batch_size=16,
                                lr_warmup_steps=5, lr_decay_steps=5, l1_warmup_steps=10, dead_after_steps=10,
                                resample_every=0, log_every=20, eval_sequences=4),
                    progress=False)
    assert sae.cfg.hook_name == HOOK and sae.cfg.model_name == "toystories-neo/test"
    val = list(load_texts("toystories", split="validation", n=40, progress=False))
    search = search_features(model, sae, val, SearchConfig(k=5, context_size=128, batch_size=16),
                             progress=False)
    assert search.n_tokens > 40 * 50  # BPE pieces of every validation text
    feature = int(search.max_act.argmax())
    excerpt = search.top_excerpts(feature, model)[0]
    assert any(t.startswith(" ") for t in excerpt.str_tokens)
    gen = generate_steered(model, sae, feature, 0.5, n_samples=2, max_new_tokens=20,
                           scale_unit="relative", seed=0)
    assert len(gen.texts) == 2 and all(t.startswith("Once upon a time") for t in gen.texts)
    scored = rescore(model, sae, gen, feature)
    assert len(scored) == 2 and len(scored[0].acts) == len(scored[0].token_ids)
    assert all(len(planted_concepts()["danger"].mask(model, r.token_ids)) == len(r.token_ids) for r in scored)
    # the concept's context direction on BPE pieces: a word split in pieces starts once
    from sae_steer import concept_candidates
    from sae_steer.measure import Concept
    from sae_steer.toystories.vocab import DANGER_WORDS

    danger = Concept.words(list(DANGER_WORDS))
    split = [w for w in DANGER_WORDS if len(model.to_str_tokens(" " + w, prepend_bos=False)) > 1]
    assert split  # this small BPE vocabulary cuts danger words into pieces
    cands = concept_candidates(model, sae, val, danger, n_effect_texts=4, n_candidates=3)
    assert cands.direction is not None and cands.direction.shape == (model.cfg.d_model,)
    assert float(cands.direction.norm()) == pytest.approx(1.0, abs=1e-5)
    assert len(cands.aligned) == 3


def test_pipeline_runs_on_a_transformer_bridge(world):
    """TransformerLens 3's TransformerBridge, booted by load_model(..., bridge=True) from the
    same local HF directory, in compatibility mode: same hook names, same pipeline."""
    from transformer_lens.model_bridge import TransformerBridge

    model, _ = world  # the fixture's cache holds the built world: this load boots from it
    bridge = load_model("toystories-neo", preset=TINY_NEO, device="cpu", progress=False, bridge=True)
    assert isinstance(bridge, TransformerBridge) and model_name(bridge) == "toystories-neo/test"
    assert load_model(bridge) is bridge
    tokens = model.to_tokens("Once upon a time")
    torch.testing.assert_close(bridge(tokens), model(tokens), atol=1e-3, rtol=1e-3)
    texts = list(load_texts("toystories", split="train", n=60, progress=False))
    sae = train_sae(bridge, texts, HOOK, SAEConfig(d_in=64, d_sae=128, device="cpu"),
                    TrainConfig(n_steps=20, batch_size=128, context_size=128, model_batch_size=16,
                                lr_warmup_steps=5, lr_decay_steps=5, l1_warmup_steps=10, dead_after_steps=10,
                                resample_every=0, log_every=10, eval_sequences=4), progress=False)
    search = search_features(bridge, sae, texts[:40], SearchConfig(k=5, context_size=128, batch_size=16),
                             progress=False)
    feature = int(search.max_act.argmax())
    gen = generate_steered(bridge, sae, feature, 0.5, n_samples=2, max_new_tokens=10, scale_unit="relative")
    assert len(gen.texts) == 2 and len(rescore(bridge, sae, gen, feature)) == 2
