"""inspect/search.py + state.py: streaming statistics equal brute force; bounded memory;
bad input; save/load."""
from __future__ import annotations


import pytest
import torch

from builders import HOOK, make_sae, seeded_model, tiny_config
from sae_steer.config import SearchConfig
from sae_steer.fingerprint import sae_fingerprint
from sae_steer.inspect.results import FeatureSearch
from sae_steer.inspect.search import search_token_batches
from sae_steer.inspect.state import SearchState
from sae_steer.lm import attached_hook_count, hook_activations
from sae_steer.sae import SAE

N_TEXTS, CTX = 40, 20


@pytest.fixture
def sae() -> SAE:
    s = make_sae(d_sae=24, seed=1)
    with torch.no_grad():
        s.b_enc[5] = -1e6  # feature 5 can never fire
    return s


@pytest.fixture
def data() -> tuple[torch.Tensor, torch.Tensor]:
    """40 random texts of 5..20 tokens (BOS id 1 at position 0, pad id 0)."""
    g = torch.Generator().manual_seed(1)
    toks = torch.randint(4, 50, (N_TEXTS, CTX), generator=g)
    lens = torch.randint(5, CTX + 1, (N_TEXTS,), generator=g)
    mask = torch.arange(CTX)[None] < lens[:, None]
    toks[:, 0] = 1
    toks[~mask] = 0
    return toks, mask


def batches(data, size):
    toks, mask = data
    return [(toks[i:i + size], mask[i:i + size]) for i in range(0, len(toks), size)]


CFG = SearchConfig(k=5, context_left=3, context_right=2, n_bands=4, samples_per_band=2,
                   n_top_tokens=64)


def run(model, sae, data, size=8, cfg=CFG) -> FeatureSearch:
    return search_token_batches(model, sae, batches(data, size), cfg, progress=False)


def brute_feats(model, sae, data) -> torch.Tensor:
    """The full texts x pos x d_sae matrix, BOS and padding zeroed (what search must match)."""
    toks, mask = data
    with torch.no_grad():
        feats = sae.encode(hook_activations(model, toks, HOOK))
    valid = mask.clone()
    valid[:, 0] = False
    return feats * valid[..., None]


def test_topk_equals_brute_force(tiny_model, sae, data):
    res = run(tiny_model, sae, data)
    feats = brute_feats(tiny_model, sae, data)
    toks, mask = data
    peak, peak_pos = feats.max(dim=1)  # [texts, F]
    for f in range(sae.d_sae):
        if f == 5:
            continue
        order = peak[:, f].argsort(descending=True)[:CFG.k]
        excerpts = res.top_excerpts(f)
        # Equal values (e.g. the same token right after BOS) may come in either order,
        # so compare the ranked values and check each excerpt is its text's real peak.
        assert [e.peak_act for e in excerpts] == pytest.approx(peak[order, f].tolist())
        assert len({e.text_index for e in excerpts}) == CFG.k
        assert [e.peak_act for e in excerpts] == pytest.approx(
            [float(peak[e.text_index, f]) for e in excerpts])
        for e in excerpts:
            t = e.text_index
            p = int(peak_pos[t, f])
            lo, hi = max(p - CFG.context_left, 1), min(p + CFG.context_right + 1, int(mask[t].sum()))
            assert e.token_ids == toks[t, lo:hi].tolist()
            assert e.acts == pytest.approx(feats[t, lo:hi, f].tolist())
        assert float(res.max_act[f]) == pytest.approx(float(peak[:, f].max()))


@pytest.fixture(params=["dense table", "top-C merges"])
def token_table(request, monkeypatch):
    """Run a test with both ways of counting (feature, token) pairs."""
    if request.param == "top-C merges":
        monkeypatch.setattr("sae_steer.inspect.state.DENSE_TOKEN_TABLE", 0)
        monkeypatch.setattr("sae_steer.inspect.state.TOKEN_FLUSH", 0)  # merge after every batch
    return request.param


def test_counts_equal_brute_force(tiny_model, sae, data, token_table):
    res = run(tiny_model, sae, data)
    feats = brute_feats(tiny_model, sae, data)
    toks, mask = data
    n_tokens = int(mask.sum()) - N_TEXTS  # BOS excluded
    assert res.n_tokens == n_tokens
    fired = feats > 0
    assert torch.equal(res.tensors["n_fire"], fired.sum((0, 1)))
    assert torch.allclose(res.density, fired.sum((0, 1)).double() / n_tokens)
    for f in (0, 3, 17):
        vals = feats[..., f][fired[..., f]]
        edges = res.hist_edges()
        counts = torch.histogram(vals.double().clamp(edges[0], edges[-1]), bins=edges).hist
        assert res.histogram(f)[1].tolist() == counts.long().tolist()
        # n_top_tokens (64) > vocab (50): the fires-on table is exact
        sums: dict[int, float] = {}
        for t, v in zip(toks[fired[..., f]].tolist(), vals.tolist()):
            sums[t] = sums.get(t, 0.0) + v
        best = sorted(sums.items(), key=lambda kv: -kv[1])[:10]
        got = res.top_tokens(f, n=10)
        assert [int(name) for name, _, _ in got] == [t for t, _ in best]
        assert [s for _, s, _ in got] == pytest.approx([s for _, s in best], rel=1e-5)


def test_batch_size_does_not_change_topk(tiny_model, sae, data):
    a, b = run(tiny_model, sae, data, size=8), run(tiny_model, sae, data, size=3)
    for name in ("top_val", "top_seq", "top_tok", "top_act", "max_act", "n_fire", "hist"):
        assert torch.allclose(a.tensors[name].double(), b.tensors[name].double(), atol=1e-5), name


def test_band_samples_are_real_peaks_in_their_band(tiny_model, sae, data):
    res = run(tiny_model, sae, data)
    peak = brute_feats(tiny_model, sae, data).max(dim=1).values
    for f in (0, 3, 17):
        top = {e.text_index for e in res.top_excerpts(f)}
        samples = res.band_excerpts(f)
        assert samples, "expected lower-band samples"
        mx = float(res.max_act[f])
        for e in samples:
            assert e.text_index not in top
            assert e.peak_act == pytest.approx(float(peak[e.text_index, f]))
            assert e.band * mx / CFG.n_bands < e.peak_act <= (e.band + 1) * mx / CFG.n_bands + 1e-6
        assert [e.peak_act for e in samples] == sorted((e.peak_act for e in samples), reverse=True)


def test_state_memory_is_bounded(tiny_model, sae, data, token_table):
    """The state's size is fixed by (d_sae, k, bands, window), not by tokens scanned."""
    state = SearchState(sae.d_sae, 50, CFG, "cpu")
    toks, mask = data
    feats = brute_feats(tiny_model, sae, data)
    state.update(toks[:5], mask[:5], feats[:5])
    state._merge_tokens()
    size_1x = state.nbytes()
    sizes = []
    for _ in range(8):  # 8 passes over all 40 texts = 64x the first update's data
        for i in range(0, N_TEXTS, 5):
            state.update(toks[i:i + 5], mask[i:i + 5], feats[i:i + 5])
            sizes.append(state.nbytes())
    state._merge_tokens()
    assert state.nbytes() == size_1x
    # pending (feature, token) entries are flushed at TOKEN_FLUSH x d_sae x n_top_tokens,
    # so even between merges the state stays under a fixed bound (12 bytes an entry)
    bound = size_1x + (8 * 24 * 64 + 20 * 5 * 24) * 12
    assert max(sizes) <= bound


def test_dead_feature_and_bad_indices(tiny_model, sae, data):
    res = run(tiny_model, sae, data)
    n = res.n_tokens
    with pytest.raises(ValueError, match=f"feature 5 never fired on {n:,} tokens"):
        res.top_excerpts(5)
    with pytest.raises(ValueError, match=r"feature 24 is out of range: this SAE has 24 features \(0..23\)"):
        res.top_excerpts(24)
    with pytest.raises(ValueError, match="out of range"):
        res.histogram(-1)
    for bad in (1.5, "3", True, torch.tensor(2.0)):
        with pytest.raises(ValueError, match="must be"):
            res.top_excerpts(bad)
    assert res.top_excerpts(torch.tensor(3))[0].feature == 3


def test_big_count_message_uses_thousands_separators(tiny_model, sae, data):
    res = run(tiny_model, sae, data)
    res.meta["n_tokens"] = 1234567
    with pytest.raises(ValueError, match="feature 5 never fired on 1,234,567 tokens"):
        res.check_feature(5)


def test_empty_and_short_text_sets(tiny_model, sae, data):
    with pytest.raises(ValueError, match="text set is empty"):
        search_token_batches(tiny_model, sae, [], CFG, progress=False)
    toks, mask = data
    only_bos = (toks[:8, :1], mask[:8, :1])
    with pytest.raises(ValueError, match="text set is empty"):
        search_token_batches(tiny_model, sae, [only_bos], CFG, progress=False)
    with pytest.raises(ValueError, match="too short: 3 texts for top-5"):
        search_token_batches(tiny_model, sae, [(toks[:3], mask[:3])], CFG, progress=False)


def test_no_hooks_left_and_missing_hook_name(tiny_model, sae, data):
    run(tiny_model, sae, data)
    assert attached_hook_count(tiny_model) == 0
    sae.cfg.hook_name = None
    with pytest.raises(ValueError, match="hook_name"):
        run(tiny_model, sae, data)


def test_save_reload_and_different_sae(tiny_model, sae, data, tmp_path):
    res = run(tiny_model, sae, data)
    res.save(tmp_path / "s")
    back = FeatureSearch.load(tmp_path / "s", sae=sae)
    assert back.cfg == res.cfg and back.meta == res.meta
    assert set(back.tensors) == set(res.tensors)
    for name, t in res.tensors.items():
        assert torch.equal(back.tensors[name], t), name
    assert [e.acts for e in back.top_excerpts(3)] == [e.acts for e in res.top_excerpts(3)]

    other = make_sae(d_sae=24, seed=2)
    with pytest.raises(ValueError, match="computed for a different SAE"):
        FeatureSearch.load(tmp_path / "s", sae=other)
    with torch.no_grad():
        sae.W_dec[0, 0] += 1e-3  # even a tiny change of weights is caught
    with pytest.raises(ValueError, match="different SAE"):
        FeatureSearch.load(tmp_path / "s", sae=sae)
    with pytest.raises(FileNotFoundError, match="no saved feature search"):
        FeatureSearch.load(tmp_path / "missing")


def test_fingerprint_of_a_stand_in_object():
    class StandIn:
        W_enc = torch.eye(4)
        b_enc = torch.zeros(4)
        W_dec = torch.eye(4)
        b_dec = torch.zeros(4)

    a = sae_fingerprint(StandIn())
    StandIn.b_dec = torch.ones(4)
    assert sae_fingerprint(StandIn()) != a and len(a) == 64


@pytest.fixture(scope="module")
def toy_words():
    """A random 2-layer model with the toy world's word tokenizer, and 60 stories."""
    from sae_steer.toystories.grammar import generate_stories
    from sae_steer.toystories.tokenizer import build_tokenizer, build_vocab

    stories = generate_stories(60, seed=3, split="validation")
    tokenizer = build_tokenizer(build_vocab(s.tokens for s in stories))
    cfg = tiny_config(n_ctx=128, d_mlp=32, d_vocab=len(tokenizer))
    model = seeded_model(cfg, tokenizer, seed=0)
    sae = make_sae(d_sae=24, seed=2)
    return model, sae, [s.text for s in stories]


def test_search_features_on_texts_reads_like_the_seed(toy_words, tmp_path, monkeypatch):
    from sae_steer.render import render_blocks
    from sae_steer.inspect.search import load_or_search, search_features

    model, sae, texts = toy_words
    cfg = SearchConfig(k=5, context_size=64, batch_size=16)
    res = search_features(model, sae, texts, cfg, progress=False, source="toy")
    assert res.meta["n_texts"] == 60 and res.meta["source"] == "toy"
    f = int(res.density.argmax())
    ex = res.top_excerpts(f, model)[0]
    # display strings carry the decoder's spaces: joined, they are a piece of the story
    assert "".join(ex.str_tokens).strip() in texts[ex.text_index]
    line = render_blocks(ex.str_tokens, ex.acts, float(res.max_act[f]))
    # word tokens carry their leading space, so blocks sit between words: "time ▁, ▁ there ▁"
    assert any(t.startswith(" ") for t in ex.str_tokens[1:])
    assert len(line) == sum(len(t) + 2 for t in ex.str_tokens)  # token, space, block
    with pytest.raises(ValueError, match="not one string"):
        search_features(model, sae, "Once upon a time", cfg, progress=False)
    with pytest.raises(ValueError, match="too short: 3 texts"):
        search_features(model, sae, [texts[0][:60]] * 3, cfg, progress=False)

    # load_or_search: computed once, then loaded (texts_fn is not called again)
    monkeypatch.setenv("SAE_STEER_CACHE", str(tmp_path))
    calls = []

    def texts_fn():
        calls.append(1)
        return texts

    a = load_or_search(model, sae, texts_fn, cfg, source="toy", progress=False)
    b = load_or_search(model, sae, texts_fn, cfg, source="toy", progress=False)
    assert len(calls) == 1 and torch.equal(a.tensors["top_val"], b.tensors["top_val"])
    assert str(tmp_path) in str(list(tmp_path.glob("searches/*"))[0])
    other = make_sae(d_sae=24, seed=3)
    path = list(tmp_path.glob("searches/*"))[0]
    with pytest.raises(ValueError, match="different SAE"):
        load_or_search(model, other, texts_fn, cfg, source="toy", path=path, progress=False)


def test_concept_matches_on_word_texts(toy_words):
    from sae_steer.inspect.groundtruth import concept_matches, match_rows
    from sae_steer.toystories import planted_concepts
    from sae_steer.toystories.labels import CONCEPTS

    model, sae, texts = toy_words
    concepts = list(planted_concepts().values())
    matches = concept_matches(model, sae, texts, concepts, n_texts=60, context_size=128)
    assert list(matches) == list(CONCEPTS)
    for row in match_rows(matches):
        assert 0 <= row["feature"] < 24 and 0.0 <= row["f1"] <= 1.0
    with pytest.raises(ValueError):
        concept_matches(model, sae, [], concepts, n_texts=10)


def test_saved_search_refuses_another_model(toy_words, tmp_path):
    """Token ids only decode right with the model/tokenizer that produced them."""
    from sae_steer.inspect.search import search_features

    model, sae, texts = toy_words
    cfg = SearchConfig(k=5, context_size=32, batch_size=32)
    res = search_features(model, sae, texts, cfg, progress=False, source="toy")
    res.save(tmp_path / "s")
    FeatureSearch.load(tmp_path / "s", sae=sae, model=model)  # same model: fine
    with torch.no_grad():
        model.W_E[0, 0] += 1.0
    try:
        with pytest.raises(ValueError, match="different model or tokenizer"):
            FeatureSearch.load(tmp_path / "s", sae=sae, model=model)
    finally:
        with torch.no_grad():
            model.W_E[0, 0] -= 1.0


def test_texts_longer_than_the_context_are_scanned_whole(toy_words):
    """Every token of every text is scanned, in windows that each start with BOS."""
    from sae_steer.inspect.search import search_features

    model, sae, texts = toy_words
    long_texts = [" ".join(texts[i:i + 4]) for i in range(0, 60, 4)]  # 15 texts, ~130 tokens
    ids = model.tokenizer(long_texts, add_special_tokens=False)["input_ids"]
    assert min(map(len, ids)) > 32  # each is longer than the context
    cfg = SearchConfig(k=5, context_size=32, batch_size=8)
    res = search_features(model, sae, long_texts, cfg, progress=False, source="long")
    assert res.n_tokens == sum(map(len, ids))  # all of them (the windows' BOS not counted)
    assert res.meta["n_texts"] == 15
    assert res.meta["n_windows"] == sum(-(-len(s) // 31) for s in ids)
    for f in range(sae.cfg.d_sae):  # excerpts name their text, not the window
        for ex in res.top_excerpts(f, model) if res.density[f] > 0 else []:
            assert 0 <= ex.text_index < 15
            own = [t for t in ex.token_ids if t >= 0 and t != model.tokenizer.bos_token_id]
            text_ids = ids[ex.text_index]
            assert any(text_ids[i:i + len(own)] == own for i in range(len(text_ids)))
