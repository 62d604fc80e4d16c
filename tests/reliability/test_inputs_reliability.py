"""Bad inputs across the public API: each is refused up front with a message that says
what is wrong and what to do, and nothing is left attached to the model.

``CASES`` is also the source of docs/troubleshooting.md (input -> message -> fix);
``test_every_case_is_in_the_troubleshooting_table`` keeps the two in step.
"""
from __future__ import annotations

import dataclasses
import types
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch

from builders import HOOK, assert_clean, make_sae
from sae_steer.config import SAEConfig, SearchConfig, SelectConfig, SteerConfig, TrainConfig
from sae_steer.inspect.search import search_features
from sae_steer.lm import hook_activations, load_model, load_texts
from sae_steer.measure import feature_scores, rescore, scale_sweep, screen_features
from sae_steer.render import render_blocks, render_html
from sae_steer.sae import SAE
from sae_steer.steer import clamping, generate_steered, steering
from sae_steer.train import pipeline
from sae_steer.train.loop import train

P = torch.tensor([1, 2, 3, 4])  # a token prompt for the tokenizer-less tiny model
TEXTS = ["Once upon a time there was a little girl named Lily ."] * 6
DOC = Path(__file__).resolve().parents[2] / "docs" / "troubleshooting.md"


@dataclasses.dataclass
class Case:
    id: str
    input: str
    """What the user did, as it appears in the troubleshooting table."""
    call: Callable[[Any], Any]
    match: str
    fix: str
    error: type[Exception] = ValueError


def _tc(**kw) -> TrainConfig:
    base = dict(n_steps=4, batch_size=32, lr_warmup_steps=1, lr_decay_steps=1,
                l1_warmup_steps=1, resample_every=0, context_size=16, model_batch_size=4,
                buffer_batches=2, eval_sequences=0, log_every=2)
    return TrainConfig(**{**base, **kw})


def _steer(e, model=None, sae=None, **kw):
    args = dict(feature=1, scale=4.0, prompt=P, max_new_tokens=4, n_samples=1)
    args.update(kw)
    return generate_steered(model if model is not None else e.m, sae or e.sae, **args)


_SCREEN = SelectConfig(scales=(0.5,), n_rank=2, n_confirm=1, confirm_rounds=(2,), n_report=2)
_SHORT = SteerConfig(prompt="Once upon a time", max_new_tokens=3)


def _screen_twice(e):
    search = e.search()
    screen_features(e.tm, e.sae, search, _SCREEN, _SHORT, progress=False, path=e.tmp / "s")
    screen_features(e.tm, e.sae, search, _SCREEN.replace(n_rank=3), _SHORT, progress=False,
                    path=e.tmp / "s")


CASES = [
    # -- feature index -------------------------------------------------------------------
    Case("feature-out-of-range", "`generate_steered(model, sae, feature=8, ...)` on an 8-feature SAE",
         lambda e: _steer(e, feature=8),
         r"feature 8 is out of range: this SAE has 8 features \(0\.\.7\)",
         "pick a feature in 0..d_sae-1 (`sae.cfg.d_sae`)"),
    Case("feature-negative", "`feature=-1`", lambda e: _steer(e, feature=-1),
         r"feature -1 is out of range: this SAE has 8 features \(0\.\.7\)",
         "negative indices are not wrapped: use `d_sae - 1` for the last feature"),
    Case("feature-not-int", "`feature=2.5`", lambda e: _steer(e, feature=2.5),
         r"feature index must be an integer, got float 2\.5", "pass an int (e.g. `int(idx)`)"),
    Case("feature-str", "`sae.feature_direction('3')`", lambda e: e.sae.feature_direction("3"),
         r"feature index must be an integer, got str '3'", "pass `3`, not `'3'`"),
    Case("search-feature-out-of-range", "`search.top_excerpts(99)` on an 8-feature SAE's search",
         lambda e: e.search().top_excerpts(99),
         r"feature 99 is out of range: this SAE has 8 features \(0\.\.7\)",
         "pick a feature in 0..d_sae-1"),
    # -- scale ---------------------------------------------------------------------------
    Case("scale-nan", "`scale=float('nan')`", lambda e: _steer(e, scale=float("nan")),
         r"scale must be finite, got nan", "use a finite number; 0 means no steering"),
    Case("scale-inf", "`scale=float('inf')`", lambda e: _steer(e, scale=float("inf")),
         r"scale must be finite, got inf", "use a finite number (try `scale_sweep` to pick one)"),
    Case("scale-not-a-number", "`scale='big'`", lambda e: _steer(e, scale="big"),
         r"scale must be a number, got 'big'", "pass a float"),
    Case("clamp-value-nan", "`clamping(model, sae, 0, float('nan'))`",
         lambda e: clamping(e.m, e.sae, 0, float("nan")).__enter__(),
         r"clamp value must be finite, got nan", "clamp to a finite activation value"),
    Case("scales-empty", "`scale_sweep(model, sae, f, scales=[])`",
         lambda e: scale_sweep(e.m, e.sae, 1, []),
         r"scales is empty: give a list such as \[0\.1, 0\.3, 0\.5, 1\.0\]", "give some scales"),
    Case("direction-nan", "`steering(model, hook, direction_with_nan, 1.0)`",
         lambda e: steering(e.m, HOOK, torch.full((16,), float("nan")), 1.0).__enter__(),
         r"direction contains NaN or inf", "check the SAE's weights (`torch.isfinite(sae.W_dec).all()`)"),
    Case("direction-wrong-shape", "`steering(model, 'blocks.0.hook_resid_post', torch.ones(12), 1.0)` (d_model 16)",
         lambda e: steering(e.m, HOOK, torch.ones(12), 1.0).__enter__(),
         r"direction has shape \(12,\) but 'blocks\.0\.hook_resid_post' has width 16",
         "use a `[d_model]` vector such as `sae.W_dec[i]` from an SAE for this model"),
    # -- prompt and lengths --------------------------------------------------------------
    Case("prompt-empty", "`prompt=''` (or only spaces)", lambda e: _steer(e, model=e.tm, prompt="  "),
         r"prompt is empty; give some text such as 'Once upon a time'", "give some text"),
    Case("prompt-empty-tokens", "`prompt=torch.tensor([])`",
         lambda e: _steer(e, prompt=torch.tensor([], dtype=torch.long)),
         r"prompt is empty: give at least one token", "give at least one token id"),
    Case("prompt-text-without-tokenizer", "a text prompt for a model without a tokenizer",
         lambda e: _steer(e, prompt="Once upon a time"),
         r"this model has no tokenizer: pass the prompt as token ids",
         "pass token ids, or load a model with a tokenizer (`load_model()`)"),
    Case("prompt-token-out-of-vocab", "`prompt=torch.tensor([1, 99])` with d_vocab 50",
         lambda e: _steer(e, prompt=torch.tensor([1, 99])),
         r"prompt token ids must lie in 0\.\.49", "use ids below `model.cfg.d_vocab`"),
    Case("prompt-longer-than-context", "a prompt of 40 tokens for a 32-token model",
         lambda e: _steer(e, prompt=torch.ones(40, dtype=torch.long)),
         r"prompt is 40 tokens; the model's context is 32",
         "shorten the prompt below `model.cfg.n_ctx`"),
    Case("prompt-plus-new-tokens-too-long", "`max_new_tokens=100` with a 4-token prompt, n_ctx 32",
         lambda e: _steer(e, max_new_tokens=100),
         r"prompt \(4 tokens\) \+ max_new_tokens \(100\) exceeds the model's context of 32; "
         r"use max_new_tokens <= 28", "lower `max_new_tokens` as the message says"),
    Case("max-new-tokens-zero", "`max_new_tokens=0`", lambda e: _steer(e, max_new_tokens=0),
         r"max_new_tokens must be a positive integer, got 0", "ask for at least 1 token"),
    Case("max-new-tokens-negative", "`max_new_tokens=-5`", lambda e: _steer(e, max_new_tokens=-5),
         r"max_new_tokens must be a positive integer, got -5", "ask for at least 1 token"),
    Case("n-samples-zero", "`n_samples=0`", lambda e: _steer(e, n_samples=0),
         r"n_samples must be a positive integer, got 0", "ask for at least 1 sample"),
    Case("seed-negative", "`SteerConfig(seed=-1)`", lambda e: SteerConfig(seed=-1),
         r"seed must be a non-negative integer \(seeds are 0, 1, 2, \.\.\.\), got -1",
         "use a seed >= 0"),
    Case("temperature-negative", "`temperature=-1`", lambda e: _steer(e, temperature=-1.0),
         r"temperature must be >= 0 \(0 = greedy\), got -1\.0", "use 0 (greedy) or a positive value"),
    # -- hooks and widths ----------------------------------------------------------------
    Case("hook-typo", "`hook_activations(model, tokens, 'blocks.1.hook_resid_pots')`",
         lambda e: hook_activations(e.m, P[None], "blocks.1.hook_resid_pots"),
         r"unknown hook 'blocks\.1\.hook_resid_pots' for this model \(2 layers\); "
         r"did you mean blocks\.1\.hook_resid_post", "use one of the suggested names"),
    Case("hook-layer-too-deep", "an SAE whose `cfg.hook_name` is `blocks.7.hook_resid_post` on a 2-layer model",
         lambda e: _steer(e, sae=make_sae(hook_name="blocks.7.hook_resid_post")),
         r"unknown hook 'blocks\.7\.hook_resid_post' for this model \(2 layers\); did you mean",
         "use an SAE trained on this model (or pass the right `hook_name=`)"),
    Case("sae-width-mismatch", "steering with an SAE of d_in=12 on a d_model=16 model",
         lambda e: _steer(e, sae=make_sae(d_in=12)),
         r"SAE width d_in=12 does not match the model's activation width 16 at "
         r"'blocks\.0\.hook_resid_post': build the SAE with SAEConfig\(d_in=16, \.\.\.\), "
         r"or this SAE was trained on another model or hook",
         "load the SAE trained on this model and hook"),
    Case("train-width-mismatch", "`train_sae(model, texts, hook, SAEConfig(d_in=32, ...))` on d_model 16",
         lambda e: pipeline.train_sae(e.tm, TEXTS, HOOK, SAEConfig(d_in=32, d_sae=64), _tc()),
         r"SAE width d_in=32 does not match the model's activation width 16 at "
         r"'blocks\.0\.hook_resid_post': build the SAE with SAEConfig\(d_in=16, \.\.\.\), "
         r"or this SAE was trained on another model or hook", "set `d_in=model.cfg.d_model`"),
    # -- SAE and training configs --------------------------------------------------------
    Case("k-above-d-sae", "`SAEConfig(architecture='topk', d_sae=8, k=9)`",
         lambda e: SAEConfig(d_in=16, d_sae=8, architecture="topk", k=9),
         r"topk needs 0 < k <= d_sae \(8\), got k=9", "choose 1 <= k <= d_sae"),
    Case("k-zero", "`SAEConfig(architecture='topk', k=0)`",
         lambda e: SAEConfig(d_in=16, d_sae=8, architecture="topk", k=0),
         r"topk needs 0 < k <= d_sae \(8\), got k=0", "choose 1 <= k <= d_sae"),
    Case("d-sae-zero", "`SAEConfig(d_in=16, d_sae=0)`", lambda e: SAEConfig(d_in=16, d_sae=0),
         r"d_sae must be a positive integer, got 0", "use a positive number of features"),
    Case("architecture-unknown", "`SAEConfig(architecture='gated')`",
         lambda e: SAEConfig(d_in=16, d_sae=8, architecture="gated"),
         r"architecture must be one of 'relu', 'topk', 'jumprelu', 'batchtopk', "
         r"'matryoshka_batchtopk', got 'gated'",
         "use one of the five listed (a gated SAE is neither trained nor loaded here)"),
    Case("l1-negative", "`TrainConfig(l1_coefficient=-1)`", lambda e: _tc(l1_coefficient=-1.0),
         r"l1_coefficient must be a non-negative finite number, got -1\.0", "use >= 0"),
    Case("lr-negative", "`TrainConfig(lr=-1e-3)`", lambda e: _tc(lr=-1e-3),
         r"lr must be None or a positive finite number, got -0\.001", "leave lr=None or use a small positive lr"),
    Case("lr-nan", "`TrainConfig(lr=float('nan'))`", lambda e: _tc(lr=float("nan")),
         r"lr must be None or a positive finite number, got nan", "leave lr=None or use a small positive lr"),
    Case("schedule-longer-than-run", "`TrainConfig(n_steps=10, lr_warmup_steps=8, lr_decay_steps=8)`",
         lambda e: _tc(n_steps=10, lr_warmup_steps=8, lr_decay_steps=8),
         r"lr_warmup_steps \+ lr_decay_steps \(8 \+ 8\) must not exceed n_steps \(10\)",
         "shorten warm-up/decay or train longer"),
    Case("train-context-longer-than-model", "`TrainConfig(context_size=128)` for a 64-token model",
         lambda e: pipeline.train_sae(e.tm, TEXTS, HOOK, SAEConfig(d_in=16, d_sae=32), _tc(context_size=128)),
         r"context_size=128 is longer than the model's n_ctx=64; lower TrainConfig\.context_size",
         "set `context_size <= model.cfg.n_ctx`"),
    Case("resume-without-checkpoint-dir", "`train(..., resume=True)` without `checkpoint_dir`",
         lambda e: train(make_sae(), [], _tc(), resume=True, progress=False),
         r"resume=True needs checkpoint_dir", "pass the `checkpoint_dir` of the interrupted run"),
    # -- names, modes, dtypes ------------------------------------------------------------
    Case("model-unknown", "`load_model('gpt-5')`", lambda e: load_model("gpt-5"),
         r"unknown model 'gpt-5'; known models: toystories, .*tiny-stories-33M",
         "use 'toystories' (offline), 'tiny-stories-33M', or pass a HookedTransformer"),
    Case("world-preset-unknown", "`load_model('toystories', preset='huge')`",
         lambda e: load_model("toystories", preset="huge", device="cpu"),
         r"unknown toystories preset 'huge'; known presets: \['demo', 'small'\]",
         "use preset='small' or 'demo'"),
    Case("reference-preset-unknown", "`reference_sae(model, preset='huge')`",
         lambda e: pipeline.reference_configs(e.m, "huge"),
         r"unknown reference preset 'huge'; known: \['demo', 'small'\]", "use preset='small' or 'demo'"),
    Case("mode-unknown", "`generate_steered(..., mode='onehot')`", lambda e: _steer(e, mode="onehot"),
         r"unknown steering mode 'onehot'; choose one of decoder_row, clamp, decoder_onehot",
         "use one of the listed modes"),
    Case("scale-unit-unknown", "`scale_unit='percent'`", lambda e: _steer(e, scale_unit="percent"),
         r"scale_unit must be 'absolute' or 'relative', got 'percent'", "use 'absolute' or 'relative'"),
    Case("model-dtype-unknown", "`load_model(..., dtype='float33')`",
         lambda e: load_model(e.m, dtype="float33"),
         r"unknown dtype 'float33'; use e\.g\. 'float32', 'bfloat16' or torch\.float16",
         "use a torch dtype name"),
    Case("sae-dtype-unknown", "`SAEConfig(dtype='fp8')`", lambda e: SAEConfig(d_in=16, d_sae=8, dtype="fp8"),
         r"dtype must be one of float32/float16/bfloat16/float64, got 'fp8'", "use one of those four"),
    # -- paths ---------------------------------------------------------------------------
    Case("sae-path-missing", "`SAE.load('no/such/dir')`", lambda e: SAE.load(e.tmp / "no" / "such"),
         r"SAE directory .*such does not exist", "check the path (a directory with cfg.json)",
         FileNotFoundError),
    Case("search-path-missing", "`FeatureSearch.load('no/such/dir')`",
         lambda e: __import__("sae_steer.inspect.results", fromlist=["x"]).FeatureSearch.load(e.tmp / "none"),
         r"no saved feature search in .*none \(expected search\.json and search\.safetensors",
         "run `search_features(...)` and `.save(dir)` first", FileNotFoundError),
    Case("data-file-missing", "`load_texts('tinystories', data_files='missing.json')`",
         lambda e: load_texts("tinystories", data_files=str(e.tmp / "missing.json")),
         r"data file .*missing\.json does not exist", "check the path of your JSON-lines file",
         FileNotFoundError),
    # -- text sets -----------------------------------------------------------------------
    Case("text-source-unknown", "`load_texts('wikipedia')`", lambda e: load_texts("wikipedia"),
         r"unknown text source 'wikipedia'; known sources: 'toystories' \(offline\), 'tinystories'",
         "use 'toystories', 'tinystories', or `data_files=`"),
    Case("split-unknown", "`load_texts('toystories', split='test')`",
         lambda e: load_texts("toystories", split="test"),
         r"split must be one of \('train', 'validation'\), got 'test'", "use 'train' or 'validation'"),
    Case("n-texts-zero", "`load_texts('toystories', n=0)`", lambda e: load_texts("toystories", n=0),
         r"n must be None or a positive integer, got 0", "use None (all) or n >= 1"),
    Case("texts-one-string", "`train_sae(model, 'one story', ...)`",
         lambda e: pipeline.train_sae(e.tm, "one story", HOOK, SAEConfig(d_in=16, d_sae=32), _tc()),
         r"texts must be an iterable of strings, not one string", "wrap it in a list: `[text]`"),
    Case("texts-empty-search", "`search_features(model, sae, [])`",
         lambda e: search_features(e.tm, e.sae, [], SearchConfig(k=2, context_size=16), progress=False),
         r"no texts|text set is empty", "pass a non-empty list of texts"),
    Case("texts-too-few-for-k", "3 texts for `SearchConfig(k=5)`",
         lambda e: search_features(e.tm, e.sae, TEXTS[:3], SearchConfig(k=5, context_size=16), progress=False),
         r"the text set is too short: 3 texts for top-5 excerpts", "give at least k texts or lower k"),
    Case("search-context-longer-than-model", "`SearchConfig()` (context 128) on a 64-token model",
         lambda e: search_features(e.tm, e.sae, TEXTS, SearchConfig(k=2), progress=False),
         r"context_size must be in 1\.\.64 \(the model's n_ctx\), got 128",
         "set `SearchConfig(context_size=model.cfg.n_ctx)` or less"),
    Case("rescore-text-without-tokenizer", "`rescore(model, sae, ['some text'], f)` on a model without a tokenizer",
         lambda e: rescore(e.m, e.sae, ["some text"], 1),
         r"this model has no tokenizer: pass token tensors", "pass token tensors"),
    # -- the screen of what steers --------------------------------------------------------
    Case("feature-scores-no-prompts", "`feature_scores(model, sae, prompts=[])`",
         lambda e: feature_scores(e.tm, e.sae, prompts=[], progress=False),
         r"prompts is empty: pass at least one prompt, or leave it out for the default "
         r"NEUTRAL_PROMPTS \('Once upon a time', 'One day,', 'The', \.\.\.\)",
         "give some prompts, or leave `prompts` out"),
    Case("screen-feature-out-of-range", "`screen_features(model, sae, search, features=[99])` on an 8-feature SAE",
         lambda e: screen_features(e.tm, e.sae, e.search(), _SCREEN, _SHORT, features=[99],
                                   progress=False, path=e.tmp / "s"),
         r"feature 99 is out of range: this SAE has 8 features \(0\.\.7\)", "pick features in 0..d_sae-1"),
    Case("screen-scale-not-positive", "`SelectConfig(scales=(0.0, 0.5))`",
         lambda e: SelectConfig(scales=(0.0, 0.5)),
         r"scales must be positive multiples of the residual norm, got \(0\.0, 0\.5\)",
         "relative scales such as (0.35, 0.5)"),
    Case("screen-same-seeds", "`SelectConfig(rank_seed=3, confirm_seed=3)`",
         lambda e: SelectConfig(rank_seed=3, confirm_seed=3),
         r"rank_seed, confirm_seed and report_seed must be distinct non-negative integers \(each "
         r"stage uses fresh seeds\), got \(3, 3, 3000\)", "use three different seeds"),
    Case("screen-path-holds-another", "`screen_features(..., path=dir)` where `dir` holds a screen with other settings",
         lambda e: _screen_twice(e), r"holds a screen with other settings or candidates; pass another "
         r"path= or remove it", "pass another `path=`, or remove the old screen"),
    # -- rendering -----------------------------------------------------------------------
    Case("render-length-mismatch", "`render_html(['a', 'b', 'c'], [1.0, 2.0], 2.0)`",
         lambda e: render_html(["a", "b", "c"], [1.0, 2.0], 2.0),
         r"got 3 tokens but 2 activations; pass one activation per token",
         "pass the tokens and activations of the same sequence"),
    Case("render-max-act-zero", "`render_blocks(tokens, acts, max_act=0)`",
         lambda e: render_blocks(["a"], [0.0], 0.0),
         r"max_act must be a positive finite number \(the feature's max activation\), got 0\.0",
         "pass the feature's max activation (e.g. `search.max_act[f]`)"),
    Case("render-nan-activation", "`render_html(tokens, [1.0, nan], 2.0)`",
         lambda e: render_html(["a", "b"], [1.0, float("nan")], 2.0),
         r"activation at position\(s\) \[1\] is NaN", "check the SAE / activations for NaN"),
]


@pytest.fixture
def env(tiny_model, tok_model, sae, tmp_path):
    def search():
        return search_features(tok_model, sae, TEXTS, SearchConfig(k=2, context_size=16),
                               progress=False)
    return types.SimpleNamespace(m=tiny_model, tm=tok_model, sae=sae, tmp=tmp_path, search=search)


def test_at_least_fifteen_distinct_cases():
    assert len({c.id for c in CASES}) == len(CASES) >= 15


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_refused_with_a_clear_message(case, env):
    with pytest.raises(case.error, match=case.match):
        case.call(env)
    assert_clean(env.m)
    assert_clean(env.tm)


def test_every_case_is_in_the_troubleshooting_table():
    table = DOC.read_text()
    missing = [c.id for c in CASES if f"`{c.id}`" not in table]
    assert not missing, f"add these cases to {DOC}: {missing}"


# --- missing validations found by this battery, now fixed (kept as regression tests) ----


def test_float_tensor_feature_is_refused(env):
    with pytest.raises(ValueError, match="integer"):
        _steer(env, feature=torch.tensor(2.7))


def test_numpy_integer_feature_is_accepted(env):
    out = _steer(env, feature=np.int64(2))
    assert out.feature == 2


def test_temperature_not_a_number(env):
    with pytest.raises(ValueError, match="temperature"):
        _steer(env, temperature="hot")


def test_seed_not_an_integer(env):
    with pytest.raises(ValueError, match="seed"):
        _steer(env, seed="a")


def test_prompt_none(env):
    with pytest.raises(ValueError, match="prompt"):
        _steer(env, prompt=None)


def test_long_text_prompt_reports_its_real_length(env):
    with pytest.raises(ValueError, match="prompt is 81 tokens"):
        _steer(env, model=env.tm, prompt="Once " * 80)


def test_all_texts_held_out_for_eval(env):
    with pytest.raises(ValueError, match="eval_sequences"):
        pipeline.train_sae(env.tm, TEXTS, HOOK, SAEConfig(d_in=16, d_sae=32, device="cpu"),
                           _tc(eval_sequences=16), progress=False)
