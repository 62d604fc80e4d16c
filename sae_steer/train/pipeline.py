"""One call from texts to a trained SAE, a disk cache for it, and the offline reference SAE.

    texts -> train.harvest (lm.token_batches windows -> activations at the hook, no BOS,
             shuffled; streamed, or kept in the activation store for several epochs)
          -> train.loop.train (+ CE-increase eval on held-out texts) -> SAE

``train_sae`` is what notebooks call; ``fit_sae`` returns the metrics history too.
``load_or_train_sae`` caches under ``cache_dir()/saes/<hash of model, hook and configs>/``
(SAELens-format SAE + ``train_cfg.json`` + ``metrics.json``); an interrupted cached run
resumes from its checkpoints. ``reference_sae`` is the offline world's standard SAE.
"""
from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import os
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from transformer_lens import HookedTransformer

from sae_steer.config import SAEConfig, TrainConfig
from sae_steer.fingerprint import model_fingerprint
from sae_steer.fsutil import atomic_dir, cache_dir, exclusive_lock, write_json_atomic
from sae_steer.lm import (ce_loss, check_sae_fits, default_hook_name, hook_width, load_texts,
                          model_name, token_batches)
from sae_steer.sae import SAE
from sae_steer.train.harvest import harvest
from sae_steer.train.loop import EvalFn, Reconstruct, TrainResult, train

_CACHE_VERSION = 5
"""Bump when training changes the weights a config produces, even in the last bits.

5: a resampled topk-family feature is made orthogonal to its nearest live decoder rows
(``train.resample.ORTHOGONAL_TO``), so a topk SAE that resampled trains to other weights.

4: the default learning rate follows d_in, dead features are also counted by firing rate,
and the topk family is resampled, so a config with ``lr=None`` or a topk SAE trains to
other weights than before under the same key. (The relu reference recipe fixes its lr and
keeps the last-fired rule alone: retrained once, it gives the weights it gave before.)

3: SAEs cached by earlier code had the reference recipe's key but other weights (one from
before the activation store: explained variance 0.87646 against 0.87648, and a search of
it counts 66 sparse alive features where this code's SAE has 65), so figures measured on
an old cache did not match a clean clone's. Such entries are no longer reused.
"""


def fit_sae(
    model: HookedTransformer,
    texts: Iterable[str],
    hook_name: str,
    sae_cfg: SAEConfig,
    train_cfg: TrainConfig,
    *,
    checkpoint_dir: str | os.PathLike | None = None,
    resume: bool = False,
    progress: bool = True,
) -> TrainResult:
    """Train an SAE on ``model``'s activations at ``hook_name`` over ``texts``.

    The first ``train_cfg.eval_sequences`` texts are held out for the CE-loss-increase
    metric; the rest are read whole (windows of ``context_size``) and streamed, or kept in
    the activation store for several epochs (``TrainConfig.epochs`` / ``store``); the
    result's ``harvest`` says how much was read. The SAE's initial weights come from
    ``train_cfg.seed``, so one seed gives one result (and ``resume`` can replay it).
    """
    if not isinstance(sae_cfg, SAEConfig) or not isinstance(train_cfg, TrainConfig):
        raise ValueError("sae_cfg must be an SAEConfig and train_cfg a TrainConfig, got "
                         f"{type(sae_cfg).__name__} and {type(train_cfg).__name__}")
    if isinstance(texts, str):
        raise ValueError("texts must be an iterable of strings, not one string")
    check_sae_fits(model, sae_cfg, hook_name)
    if train_cfg.context_size > model.cfg.n_ctx:
        raise ValueError(f"context_size={train_cfg.context_size} is longer than the model's "
                         f"n_ctx={model.cfg.n_ctx}; lower TrainConfig.context_size")
    sae_cfg = _with_metadata(sae_cfg, model, hook_name, train_cfg)
    texts = iter(texts)
    eval_texts = list(itertools.islice(texts, train_cfg.eval_sequences))
    first = next(texts, None)  # peek: token_batches' "got no texts" would not say why
    if first is None and eval_texts:
        raise ValueError(f"only {len(eval_texts)} texts: all are held out for evaluation "
                         f"(eval_sequences={train_cfg.eval_sequences}); give more texts or "
                         "lower TrainConfig.eval_sequences")
    texts = itertools.chain([first] if first is not None else [], texts)
    eval_fn = ce_increase_fn(model, eval_texts, hook_name, train_cfg) if eval_texts else None
    data = harvest(model, texts, hook_name, train_cfg, sae_cfg.d_in, progress=progress)
    try:
        sae = SAE(sae_cfg, seed=train_cfg.seed)
        result = train(sae, data.batches, data.train_cfg, checkpoint_dir=checkpoint_dir,
                       resume=resume, eval_fn=eval_fn, progress=progress)
    finally:
        data.close()  # the store's file on disk, if it spilled
    result.harvest = data.report()
    return result


def train_sae(
    model: HookedTransformer,
    texts: Iterable[str],
    hook_name: str,
    sae_cfg: SAEConfig,
    train_cfg: TrainConfig,
    **kwargs,
) -> SAE:
    """``fit_sae(...).sae``: the trained SAE (keyword arguments as for ``fit_sae``)."""
    return fit_sae(model, texts, hook_name, sae_cfg, train_cfg, **kwargs).sae


def _with_metadata(sae_cfg: SAEConfig, model: HookedTransformer, hook_name: str,
                   train_cfg: TrainConfig) -> SAEConfig:
    return dataclasses.replace(
        sae_cfg, hook_name=hook_name, model_name=sae_cfg.model_name or model_name(model),
        context_size=train_cfg.context_size, prepend_bos=True)


def ce_increase_fn(model: HookedTransformer, texts: list[str], hook_name: str,
                   train_cfg: TrainConfig) -> EvalFn:
    """An ``eval_fn`` for ``train``: CE loss on ``texts`` clean and with the SAE spliced in
    (every window of a text longer than the context, unless ``long_texts="truncate"``)."""
    windows = list(token_batches(model, texts, train_cfg.context_size, len(texts),
                                 long_texts=train_cfg.long_texts))
    tokens, mask = torch.cat([t for t, _ in windows]), torch.cat([m for _, m in windows])
    clean = ce_loss(model, tokens, mask)

    def evaluate(reconstruct: Reconstruct) -> dict[str, float]:
        spliced = ce_loss(model, tokens, mask, hook_name, reconstruct,
                                  skip_bos=train_cfg.skip_bos)
        return {"ce_loss": clean, "ce_loss_spliced": spliced, "ce_increase": spliced - clean}

    return evaluate


# --- cache ------------------------------------------------------------------------------


_KEYED_WHEN_SET = ("tf32", "l0_coefficient", "jumprelu_bandwidth", "topk_threshold_lr",
                   "matryoshka_widths")
"""Config fields added after entries were cached: at their defaults they leave every
earlier SAE as it was, so they join the key only when set away from them, and those entries
(the reference SAE's among them) keep their keys."""


def _keyed(cfg: SAEConfig | TrainConfig) -> dict:
    defaults = {f.name: f.default for f in dataclasses.fields(cfg)}
    return {k: v for k, v in cfg.to_dict().items()
            if not (k in _KEYED_WHEN_SET and v == defaults[k])}


def cache_key(model: HookedTransformer, hook_name: str, sae_cfg: SAEConfig,
              train_cfg: TrainConfig) -> str:
    """Hash of what determines a trained SAE: the model's weights, hook, both configs and
    ``_CACHE_VERSION``.

    Texts are identified by ``sae_cfg.dataset_path``: give different text sources
    different dataset_path values, or they share a cache entry.
    """
    cfg = {k: v for k, v in _keyed(sae_cfg).items() if k != "device"}
    train = _keyed(train_cfg)
    model_key = f"{model_name(model)}:{model_fingerprint(model)[:16]}"
    blob = json.dumps({"version": _CACHE_VERSION, "model": model_key,
                       "hook": hook_name, "sae": cfg, "train": train},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def load_or_train(
    model: HookedTransformer,
    texts_fn: Callable[[], Iterable[str]],
    hook_name: str,
    sae_cfg: SAEConfig,
    train_cfg: TrainConfig,
    *,
    progress: bool = True,
) -> TrainResult:
    """Like ``fit_sae`` but cached on disk; ``texts_fn`` is only called on a cache miss."""
    directory = cache_dir() / "saes" / cache_key(model, hook_name, sae_cfg, train_cfg)
    if not (directory / "metrics.json").is_file():
        with exclusive_lock(directory):  # two processes never train the same entry at once
            if not (directory / "metrics.json").is_file():
                result = fit_sae(model, texts_fn(), hook_name, sae_cfg, train_cfg,
                                 progress=progress, resume=True,
                                 checkpoint_dir=directory.with_name(directory.name + ".ckpt"))
                _store(directory, result, train_cfg)
    metrics = json.loads((directory / "metrics.json").read_text())
    sae = SAE.load(directory, device=sae_cfg.device)
    return TrainResult(sae, metrics["history"], metrics["steps"], metrics["seconds"],
                       metrics["scale"], harvest=metrics.get("harvest", {}))


def load_or_train_sae(model, texts_fn, hook_name, sae_cfg, train_cfg, *, progress=True) -> SAE:
    """``load_or_train(...).sae``: a cached SAE, trained on the first call."""
    return load_or_train(model, texts_fn, hook_name, sae_cfg, train_cfg, progress=progress).sae


def _store(directory: Path, result: TrainResult, train_cfg: TrainConfig) -> None:
    with atomic_dir(directory, replace=True) as tmp:  # a crash never leaves half an entry
        result.sae.save(tmp)
        train_cfg.save_json(tmp / "train_cfg.json")
        write_json_atomic(tmp / "metrics.json", {
            "history": result.history, "steps": result.steps, "seconds": result.seconds,
            "scale": result.scale, "harvest": result.harvest})
    shutil.rmtree(directory.with_name(directory.name + ".ckpt"), ignore_errors=True)


# --- the offline world's reference SAE -------------------------------------------------

_SMALL_RECIPE = dict(n_steps=1500, batch_size=1024, lr=1e-3, lr_warmup_steps=50,
                     lr_decay_steps=300, l1_coefficient=2.0, l1_warmup_steps=300,
                     dead_after_steps=200, resample_every=250, context_size=128,
                     dead_below_mean=0.0,  # measured with the last-fired rule alone
                     model_batch_size=64, buffer_batches=16, log_every=100,
                     eval_sequences=32, checkpoint_every=500, seed=0,
                     # the recipe as measured: texts cut at 128 tokens (747 of the 25,000 are
                     # longer), streamed once; docs/results.md's figures are of this SAE
                     long_texts="truncate", store="stream")

REFERENCE_PRESETS: dict[str, dict] = {
    # d_sae = expansion * d_model. "small" measured on toystories/small (d_model 64):
    # explained variance 0.88, L0 10, no dead features, CE increase 0.10 nats (1.5M tokens).
    "small": {"expansion": 8, "n_texts": 25_000, "train": _SMALL_RECIPE},
    # The same recipe for toystories/demo (d_model 128), with twice the tokens. Not tuned.
    "demo": {"expansion": 8, "n_texts": 50_000,
             "train": {**_SMALL_RECIPE, "n_steps": 3000, "lr_decay_steps": 600,
                       "l1_warmup_steps": 600}},
}


QUICK_STEPS = 300
"""``quick=True``'s budget in ``reference_configs``: enough to see each architecture's
trade-off take shape in a minute or two (the notebooks' fast runs and tests use it)."""
REFERENCE_L0_COEFFICIENT = 0.3
"""jumprelu's ``l0_coefficient`` in ``reference_configs``: the one of 0.1 and 0.3 whose L0
on toystories/small ends nearer the relu reference's 10.5 (0.1: L0 22.7; 0.3: L0 11.9;
2026-12-05, see docs/results.md). SAELens's default 1.0 suits wider models, whose
reconstruction error per token is larger."""


def reference_configs(model: HookedTransformer, preset: str = "small", *,
                      architecture: str = "relu", quick: bool = False,
                      ) -> tuple[str, SAEConfig, TrainConfig, int]:
    """``(hook_name, sae_cfg, train_cfg, n_texts)`` of the reference SAE for ``model``.

    ``architecture``: the same recipe (texts, steps, optimiser, seed) for another
    architecture, to compare them at one budget: the topk family keeps the relu reference's
    final L0 (its ``k``, which trains that SAE first, or loads it), Matryoshka with the
    prefixes ``d_sae / 8, / 4, / 2``; jumprelu uses ``REFERENCE_L0_COEFFICIENT``.
    ``quick``: ``QUICK_STEPS`` steps, the schedules then fractions of them.
    """
    if preset not in REFERENCE_PRESETS:
        raise ValueError(f"unknown reference preset {preset!r}; known: {sorted(REFERENCE_PRESETS)}")
    spec = REFERENCE_PRESETS[preset]
    hook_name = default_hook_name(model)
    d_model = hook_width(model, hook_name)
    d_sae = spec["expansion"] * d_model
    sae_cfg = SAEConfig(d_in=d_model, d_sae=d_sae, architecture="relu",
                        dataset_path=f"toystories/{preset}/train", device=str(model.cfg.device))
    train_cfg = TrainConfig(**spec["train"])
    if quick:
        n_steps = QUICK_STEPS
        train_cfg = train_cfg.replace(
            n_steps=n_steps, lr_warmup_steps=None, lr_decay_steps=None, l1_warmup_steps=None,
            resample_every=min(train_cfg.resample_every, n_steps // 4),
            checkpoint_every=0, log_every=max(1, min(train_cfg.log_every, n_steps // 5)))
    shape = {"architecture": architecture}
    if architecture == "jumprelu":
        train_cfg = train_cfg.replace(l0_coefficient=REFERENCE_L0_COEFFICIENT)
    elif architecture != "relu":
        relu = reference_training(model, preset, quick=quick, progress=False)
        shape["k"] = max(1, round(relu.final["l0"]))
    if architecture == "matryoshka_batchtopk":
        shape["matryoshka_widths"] = tuple(d_sae // m for m in (8, 4, 2)) + (d_sae,)
    return hook_name, sae_cfg.replace(**shape), train_cfg, spec["n_texts"]


def reference_training(model: HookedTransformer, preset: str = "small", *,
                       architecture: str = "relu", quick: bool = False,
                       progress: bool = True) -> TrainResult:
    """The reference SAE with its training curves (trained once, then loaded from the
    cache); ``architecture`` and ``quick`` as ``reference_configs`` takes them."""
    hook_name, sae_cfg, train_cfg, n_texts = reference_configs(
        model, preset, architecture=architecture, quick=quick)
    return load_or_train(
        model, lambda: load_texts("toystories", split="train", n=n_texts, preset=preset),
        hook_name, sae_cfg, train_cfg, progress=progress)


def reference_sae(model: HookedTransformer, preset: str = "small", *,
                  progress: bool = True) -> SAE:
    """The offline world's standard ReLU SAE at ``default_hook_name(model)`` (cached)."""
    return reference_training(model, preset, progress=progress).sae


def tinystories_configs(small: bool = False) -> tuple[str, SAEConfig, TrainConfig]:
    """The seed writeup's setup: 10,000 ReLU features on TinyStories-33M's
    ``blocks.1.hook_resid_post`` ("the residual stream after the 2nd layer"; the other
    reading is ``blocks.2.hook_resid_post``: pass that hook instead to try it).
    ``small``: a few hundred steps, to check the plumbing rather than to get features."""
    hook_name = "blocks.1.hook_resid_post"
    sae_cfg = SAEConfig(d_in=768, d_sae=10_000, architecture="relu",
                        dataset_path="roneneldan/TinyStories")
    train_cfg = TrainConfig(n_steps=200 if small else 20_000, batch_size=4096, lr=4e-4,
                            lr_warmup_steps=20 if small else 500,
                            lr_decay_steps=40 if small else 4000, l1_coefficient=5.0,
                            l1_warmup_steps=100 if small else 1000,
                            dead_after_steps=100 if small else 1000, resample_every=0 if small else 2500,
                            context_size=128, model_batch_size=32, log_every=20 if small else 250,
                            checkpoint_every=0 if small else 1000)
    return hook_name, sae_cfg, train_cfg
