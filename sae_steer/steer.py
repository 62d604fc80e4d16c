"""Steering: push a feature's direction into the residual stream while the model generates.

Three ways to steer with SAE feature ``i`` at the SAE's hook:

- ``decoder_row`` (the seed's method): add ``scale * W_dec[i]`` at every position.
- ``clamp`` (Anthropic's method): encode the activation, set feature i to ``scale``, decode,
  and add back the SAE's reconstruction error so every other feature passes through as is.
- ``decoder_onehot`` (a pitfall, kept only to show it): add ``scale * sae.decode(onehot_i)``,
  which is ``scale * (W_dec[i] + b_dec)`` -- the decoder bias swamps the feature.

Hooks are global state on the model, so every hook here lives inside a context manager
that removes it on exit -- normal, error or KeyboardInterrupt. Generation is our own short
sampling loop over TransformerLens's KV cache (see ``_sample``): it gives every sample its
own random stream, so the same seed gives the same text steered or not.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import numbers
from collections.abc import Iterator, Sequence
from typing import Any, Callable

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer
from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache

from sae_steer.collect import attached_hook_count, hook_activations, hook_width, validate_hook
from sae_steer.models import model_name

MODES = ("decoder_row", "clamp", "decoder_onehot")
SCALE_UNITS = ("absolute", "relative")


@dataclasses.dataclass
class SteeringStats:
    """What a steering hook did: how many forward passes and token positions it touched."""

    calls: int = 0
    positions: int = 0


# ---------------------------------------------------------------- validation helpers


def _check_scale(scale: float, name: str = "scale") -> float:
    try:
        value = float(scale)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {scale!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {scale!r}")
    return value


def _is_integer(value: Any) -> bool:
    """An integer scalar: int, numpy integer, or a one-element integer-dtype tensor.

    Floats and bools are refused: int() would silently turn 2.7 into feature 2.
    """
    if isinstance(value, Tensor):
        dtype = value.dtype
        return value.numel() == 1 and not (
            dtype.is_floating_point or dtype.is_complex or dtype == torch.bool)
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_feature(sae: Any, feature: int) -> int:
    # The same rules as SAE.feature_direction, checked here too because steering also takes
    # duck-typed SAEs (e.g. SAELens's) whose own feature_direction may not validate.
    d_sae = sae.cfg.d_sae
    if not _is_integer(feature):
        raise ValueError(f"feature must be an integer index, got {feature!r} "
                         "(pass an int, numpy integer or integer tensor)")
    feature = int(feature)
    if not 0 <= feature < d_sae:
        raise ValueError(
            f"feature {feature} is out of range: this SAE has {d_sae} features (0..{d_sae - 1})"
        )
    return feature


def _check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"unknown steering mode {mode!r}; choose one of {', '.join(MODES)}")
    return mode


def check_sae_matches(model: HookedTransformer, sae: Any, hook_name: str | None = None) -> str:
    """The hook to steer at; raises ValueError when the SAE does not fit ``model`` there.

    Width alone cannot tell a foreign SAE: another model, or another layer of this one,
    often has the same width, so the SAE's recorded hook and model name are checked too.
    """
    sae_hook = getattr(sae.cfg, "hook_name", None)
    if hook_name and sae_hook and hook_name != sae_hook:
        raise ValueError(f"hook_name={hook_name!r} but this SAE was trained at {sae_hook!r}; "
                         f"pass hook_name={sae_hook!r} or omit hook_name")
    hook_name = hook_name or sae_hook
    if hook_name is None:
        raise ValueError("the SAE's cfg.hook_name is not set; pass hook_name= explicitly")
    validate_hook(model, hook_name)
    width = hook_width(model, hook_name)
    if sae.cfg.d_in != width:
        raise ValueError(
            f"SAE width d_in={sae.cfg.d_in} does not match the model's activation width {width} "
            f"at {hook_name!r}: this SAE was trained on another model or hook"
        )
    _check_model_name(model, sae)
    return hook_name


def _check_model_name(model: HookedTransformer, sae: Any) -> None:
    # model_name() reads only x.cfg.model_name, so it names the SAE's model too, with the
    # same aliases resolved; "custom" (TransformerLens's default) means unknown: let it pass.
    ours, theirs = model_name(model), model_name(sae)
    if "custom" not in (ours, theirs) and ours != theirs:
        raise ValueError(f"this SAE was trained on model {theirs!r} but is used with model "
                         f"{ours!r}: load the SAE trained for {ours!r} (or the model {theirs!r})")


# ---------------------------------------------------------------- hooks in contexts


@contextlib.contextmanager
def _hooked(model: HookedTransformer, hook_name: str, fn: Callable) -> Iterator[None]:
    """Attach ``fn`` at ``hook_name`` for the block; always removed on exit."""
    before = attached_hook_count(model)
    # model.hooks removes exactly the hooks of its own context level in its finally clause,
    # so hooks a user attached before us survive and ours never leak.
    with model.hooks(fwd_hooks=[(hook_name, fn)]):
        yield
    assert attached_hook_count(model) == before, "steering hook leaked"


def _count(stats: SteeringStats, act: Tensor) -> None:
    stats.calls += 1
    stats.positions += act.shape[0] * act.shape[1] if act.ndim >= 3 else act.shape[0]


@contextlib.contextmanager
def steering(
    model: HookedTransformer,
    hook_name: str,
    direction: Float[Tensor, "d_model"],
    scale: float,
) -> Iterator[SteeringStats]:
    """Add ``scale * direction`` at ``hook_name`` at every position of every forward pass.

    That includes the prompt pass and each length-1 pass of KV-cached generation. Yields a
    ``SteeringStats`` that counts the passes and positions steered. Works with any
    ``HookedTransformer``; ``direction`` is moved to the activation's device and dtype.
    """
    scale = _check_scale(scale)
    validate_hook(model, hook_name)
    direction = torch.as_tensor(direction).detach()
    width = hook_width(model, hook_name)
    if direction.shape != (width,):
        raise ValueError(
            f"direction has shape {tuple(direction.shape)} but {hook_name!r} has width {width}"
        )
    if not torch.isfinite(direction).all():
        raise ValueError("direction contains NaN or inf")
    delta = scale * direction.float()
    stats = SteeringStats()
    moved: dict[tuple, Tensor] = {}

    def add(act: Float[Tensor, "batch pos d_model"], hook: Any) -> Tensor:
        _count(stats, act)
        key = (act.device, act.dtype)
        if key not in moved:  # move once, not on every one of the length-1 passes
            moved[key] = delta.to(device=act.device, dtype=act.dtype)
        return act + moved[key]

    with _hooked(model, hook_name, add):
        yield stats


@contextlib.contextmanager
def clamping(
    model: HookedTransformer, sae: Any, feature: int, value: float, hook_name: str | None = None
) -> Iterator[SteeringStats]:
    """Clamp SAE feature ``feature`` to ``value`` at every position, keeping the SAE's error.

    ``x -> decode(f with f_i := value) + (x - decode(f))``. Because the decoder is linear this
    equals ``x + (value - f_i) * W_dec[i]``, which we compute directly: it is exact when
    ``value`` equals the feature's own activation, and every other feature passes untouched.
    """
    value = _check_scale(value, "clamp value")
    feature = _check_feature(sae, feature)
    hook_name = check_sae_matches(model, sae, hook_name)
    stats = SteeringStats()
    w_dec = sae.W_dec.detach()

    def clamp(act: Float[Tensor, "batch pos d_model"], hook: Any) -> Tensor:
        _count(stats, act)
        x = act.to(device=w_dec.device, dtype=w_dec.dtype)
        with torch.no_grad():
            f_i = sae.encode(x)[..., feature : feature + 1]
        return act + ((value - f_i) * w_dec[feature]).to(device=act.device, dtype=act.dtype)

    with _hooked(model, hook_name, clamp):
        yield stats


def steering_direction(sae: Any, feature: int, mode: str = "decoder_row") -> Tensor:
    """The vector added per unit of scale: ``W_dec[i]``, or ``decode(onehot)`` for the pitfall."""
    feature, mode = _check_feature(sae, feature), _check_mode(mode)
    if mode == "decoder_onehot":
        onehot = torch.zeros(sae.cfg.d_sae, device=sae.W_dec.device, dtype=sae.W_dec.dtype)
        onehot[feature] = 1.0
        with torch.no_grad():
            return sae.decode(onehot).detach()  # = W_dec[i] + b_dec: the seed's pitfall
    if mode == "clamp":
        raise ValueError("clamp mode has no fixed direction; use clamping(...)")
    return sae.feature_direction(feature).detach()


@contextlib.contextmanager
def steered(
    model: HookedTransformer, sae: Any, feature: int, scale: float, mode: str = "decoder_row",
    hook_name: str | None = None,
) -> Iterator[SteeringStats]:
    """Steer with SAE feature ``feature`` in any of the three modes (scale in absolute units)."""
    _check_mode(mode)
    hook_name = check_sae_matches(model, sae, hook_name)
    if mode == "clamp":
        ctx = clamping(model, sae, feature, scale, hook_name)
    else:
        ctx = steering(model, hook_name, steering_direction(sae, feature, mode), scale)
    with ctx as stats:
        yield stats


# ---------------------------------------------------------------- scale units


@torch.no_grad()
def typical_resid_norm(
    model: HookedTransformer, hook_name: str, tokens: Int[Tensor, "batch pos"] | None = None,
    mask: Tensor | None = None,
) -> float:
    """Median L2 norm of the activation at ``hook_name`` over real tokens, BOS excluded.

    BOS positions carry an outsized norm in most models, so they are left out. Without
    ``tokens`` we measure on 8 of the model's own unsteered 64-token samples from
    "Once upon a time" (or from BOS when the model has no tokenizer).
    """
    if tokens is None:
        prompt: Any = "Once upon a time" if model.tokenizer is not None else [0]
        n_new = min(64, model.cfg.n_ctx - len(_prompt_tokens(model, prompt)))
        gen = generate_unsteered(model, prompt, n_new, n_samples=8, seed=12345)
        tokens = _pad(gen.tokens)[0]
        mask = tokens >= 0
        tokens = tokens.clamp(min=0)
    acts = hook_activations(model, tokens, hook_name)
    norms = acts.float().norm(dim=-1)[:, 1:]
    keep = torch.ones_like(norms, dtype=torch.bool) if mask is None else mask[:, 1:].to(norms.device)
    if not keep.any():
        raise ValueError("no tokens beyond BOS to measure the residual norm on")
    return float(norms[keep].median())


def to_absolute_scale(relative: float, resid_norm: float, direction: Tensor) -> float:
    """Absolute scale that makes ``scale * direction`` ``relative`` times the typical norm."""
    return float(relative * resid_norm / direction.float().norm().clamp(min=1e-12))


def to_relative_scale(absolute: float, resid_norm: float, direction: Tensor) -> float:
    """Inverse of ``to_absolute_scale``: the steering vector's norm over the typical norm."""
    return float(absolute * direction.float().norm() / resid_norm)


# ---------------------------------------------------------------- generation


@dataclasses.dataclass
class Generation:
    """Samples from one prompt. ``tokens[j]`` is prompt (+BOS) + new tokens, cut before EOS."""

    texts: list[str]
    tokens: list[Tensor]
    prompt_len: int
    seeds: list[int]
    feature: int | None = None
    scale: float = 0.0
    """Absolute scale actually applied (clamp mode: the clamp value)."""
    mode: str | None = None
    stats: SteeringStats | None = None

    def new_tokens(self, j: int) -> Tensor:
        return self.tokens[j][self.prompt_len :]


def sample_seed(seed: int, j: int) -> int:
    """Sample j of a call with ``seed`` uses this generator seed (so n=4 extends n=2)."""
    return (int(seed) * 1_000_003 + j) % (2**63 - 1)


def _prompt_tokens(model: HookedTransformer, prompt: Any) -> Tensor:
    if isinstance(prompt, str):
        if not prompt.strip():
            raise ValueError("prompt is empty; give some text such as 'Once upon a time'")
        if model.tokenizer is None:
            raise ValueError("this model has no tokenizer: pass the prompt as token ids")
        # truncate=False: to_tokens would cut at n_ctx and _check_lengths report the wrong length
        return model.to_tokens(prompt, truncate=False, move_to_device=False)[0].cpu()
    try:
        tokens = torch.as_tensor(prompt).flatten().cpu()
    except (TypeError, ValueError, RuntimeError):  # None, dicts, objects...
        tokens = None
    # an empty list comes back as float32: let the emptiness check below name it
    if tokens is None or (tokens.numel() and not _is_integer(tokens[:1])):
        raise ValueError("prompt must be text or token ids (a str, or a list / 1-D tensor of "
                         f"ints), got {type(prompt).__name__} {str(prompt)[:60]}")
    tokens = tokens.long()
    if tokens.numel() == 0:
        raise ValueError("prompt is empty: give at least one token")
    if (tokens < 0).any() or (tokens >= model.cfg.d_vocab).any():
        raise ValueError(f"prompt token ids must lie in 0..{model.cfg.d_vocab - 1}")
    return tokens


def _check_lengths(model: HookedTransformer, prompt_len: int, max_new_tokens: int) -> None:
    n_ctx = model.cfg.n_ctx
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens <= 0:
        raise ValueError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}")
    if prompt_len >= n_ctx:
        raise ValueError(f"prompt is {prompt_len} tokens; the model's context is {n_ctx}")
    if prompt_len + max_new_tokens > n_ctx:
        raise ValueError(
            f"prompt ({prompt_len} tokens) + max_new_tokens ({max_new_tokens}) exceeds the "
            f"model's context of {n_ctx}; use max_new_tokens <= {n_ctx - prompt_len}"
        )


def _pad(rows: Sequence[Tensor], fill: int = -1) -> tuple[Tensor, Tensor]:
    """Right-pad 1-D token rows into ``[n, max_len]`` with ``fill``; also the real-token mask."""
    out = torch.full((len(rows), max(len(r) for r in rows)), fill, dtype=torch.long)
    for j, row in enumerate(rows):
        out[j, : len(row)] = row
    return out, out != fill


@torch.no_grad()
def _sample(
    model: HookedTransformer, prompt: Tensor, max_new_tokens: int, seeds: list[int],
    temperature: float, use_kv_cache: bool = True, stop_at_eos: bool = True,
) -> Int[Tensor, "n new"]:
    """Sample ``len(seeds)`` continuations of ``prompt`` in one batch.

    Each row draws one uniform number per step from its own CPU generator and samples by
    inverse CDF, so a row's text depends only on its seed and its logits: batching, device and
    steering do not reshuffle the random numbers (steered vs unsteered share them).
    """
    device = model.cfg.device
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    n = len(seeds)
    eos = model.tokenizer.eos_token_id if model.tokenizer is not None and stop_at_eos else None
    tokens = prompt.to(device).unsqueeze(0).expand(n, -1).contiguous()
    cache = TransformerLensKeyValueCache.init_cache(model.cfg, device, n) if use_kv_cache else None
    finished = torch.zeros(n, dtype=torch.bool, device=device)
    new: list[Tensor] = []
    step_input = tokens
    for _ in range(max_new_tokens):
        # An explicit all-ones mask: otherwise TransformerLens masks any sampled token that
        # equals the tokenizer's pad id, and cached and uncached runs would disagree.
        ones = torch.ones_like(step_input)
        logits = model(step_input, past_kv_cache=cache, attention_mask=ones)[:, -1].float()
        u = torch.cat([torch.rand(1, generator=g) for g in gens]).to(device)
        nxt = _pick(logits, u, temperature)
        if eos is not None:
            nxt = torch.where(finished, torch.full_like(nxt, eos), nxt)
            finished |= nxt == eos
        new.append(nxt)
        tokens = torch.cat([tokens, nxt[:, None]], dim=1)
        step_input = nxt[:, None] if use_kv_cache else tokens
        if eos is not None and bool(finished.all()):
            break
    return torch.stack(new, dim=1).cpu()


def _pick(logits: Float[Tensor, "n vocab"], u: Float[Tensor, "n"], temperature: float) -> Tensor:
    if temperature == 0:
        return logits.argmax(-1)
    cdf = torch.softmax(logits / temperature, dim=-1).cumsum(-1)
    idx = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None]).squeeze(-1)
    return idx.clamp(max=logits.shape[-1] - 1)


def _to_text(model: HookedTransformer, tokens: Tensor) -> str:
    if model.tokenizer is None:
        return " ".join(str(int(t)) for t in tokens)
    return model.tokenizer.decode(tokens.tolist(), skip_special_tokens=True)


def _finish(model: HookedTransformer, prompt: Tensor, new: Tensor, seeds: list[int],
            stop_at_eos: bool = True) -> Generation:
    eos = model.tokenizer.eos_token_id if model.tokenizer is not None and stop_at_eos else None
    rows = []
    for row in new:
        if eos is not None and (row == eos).any():  # generation pads finished rows with EOS
            row = row[: int((row == eos).nonzero()[0, 0])]
        rows.append(torch.cat([prompt, row]))
    return Generation([_to_text(model, r) for r in rows], rows, len(prompt), list(seeds))


def _check_sampling(n_samples: int, temperature: float, seed: int = 0) -> None:
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples <= 0:
        raise ValueError(f"n_samples must be a positive integer, got {n_samples!r}")
    if _check_scale(temperature, "temperature") < 0:  # also refuses "hot", NaN and inf
        raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature!r}")
    if not _is_integer(seed):
        raise ValueError(f"seed must be an integer (e.g. 0), got {type(seed).__name__} {seed!r}")


def generate_unsteered(
    model: HookedTransformer, prompt: Any = "Once upon a time", max_new_tokens: int = 100,
    n_samples: int = 2, seed: int = 0, temperature: float = 1.0, use_kv_cache: bool = True,
    stop_at_eos: bool = True,
) -> Generation:
    """Samples without steering, with the same per-sample seeds as ``generate_steered``."""
    _check_sampling(n_samples, temperature, seed)
    prompt_t = _prompt_tokens(model, prompt)
    _check_lengths(model, len(prompt_t), max_new_tokens)
    seeds = [sample_seed(seed, j) for j in range(n_samples)]
    new = _sample(model, prompt_t, max_new_tokens, seeds, float(temperature), use_kv_cache,
                  stop_at_eos)
    return _finish(model, prompt_t, new, seeds, stop_at_eos)


def generate_steered(
    model: HookedTransformer, sae: Any, feature: int, scale: float,
    prompt: Any = "Once upon a time", max_new_tokens: int = 100, n_samples: int = 2,
    seed: int = 0, temperature: float = 1.0, mode: str = "decoder_row", *,
    scale_unit: str = "absolute", resid_norm: float | None = None, use_kv_cache: bool = True,
    hook_name: str | None = None, stop_at_eos: bool = True,
) -> Generation:
    """``n_samples`` texts from ``prompt`` while steering with SAE feature ``feature``.

    Batched; sample j uses generator seed ``sample_seed(seed, j)`` for both steered and
    unsteered runs, so they are comparable token by token. Stops at end-of-text (texts and
    tokens are cut before the first EOS). ``scale_unit="relative"`` reads ``scale`` as a
    multiple of the typical residual norm at the hook (``resid_norm``; measured when None).
    Every input is checked before any hook is attached; no hook is left afterwards.
    """
    _check_mode(mode)
    feature = _check_feature(sae, feature)
    scale = _check_scale(scale)
    _check_sampling(n_samples, temperature, seed)
    if scale_unit not in SCALE_UNITS:
        raise ValueError(f"scale_unit must be 'absolute' or 'relative', got {scale_unit!r}")
    hook_name = check_sae_matches(model, sae, hook_name)
    prompt_t = _prompt_tokens(model, prompt)
    _check_lengths(model, len(prompt_t), max_new_tokens)
    if scale_unit == "relative":
        norm = resid_norm if resid_norm is not None else typical_resid_norm(model, hook_name)
        unit = sae.W_dec[feature] if mode == "clamp" else steering_direction(sae, feature, mode)
        scale = to_absolute_scale(scale, norm, unit.detach())
    seeds = [sample_seed(seed, j) for j in range(n_samples)]
    with steered(model, sae, feature, scale, mode, hook_name) as stats:
        new = _sample(model, prompt_t, max_new_tokens, seeds, float(temperature), use_kv_cache,
                      stop_at_eos)
    out = _finish(model, prompt_t, new, seeds, stop_at_eos)
    out.feature, out.scale, out.mode, out.stats = feature, scale, mode, stats
    return out
