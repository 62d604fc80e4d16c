"""One entry point for models: the offline toy world, the real TinyStories-33M, or yours.

``load_model("toystories")`` needs no network: it trains (once, then caches) a 4-layer
model on a generated corpus. ``load_model("tiny-stories-33M")`` is the seed writeup's
model via ``HookedTransformer.from_pretrained``; without network it fails in one line
that points back to the offline default. ``load_model("toystories-neo")`` is the offline
world in the real format (an HF GPT-Neo with a byte-level BPE tokenizer, trained once and
cached), loaded by the same function as TinyStories-33M: :func:`from_hf`.
"""
from __future__ import annotations

import contextlib
import os
import socket
from urllib.parse import urlparse

import torch
from huggingface_hub import constants as hub_constants
from huggingface_hub import try_to_load_from_cache
from transformer_lens import HookedTransformer
from transformer_lens.model_bridge import TransformerBridge

from sae_steer.config import WorldConfig
from sae_steer.fsutil import cache_dir
from sae_steer.toystories.lm import load_toy_model
from sae_steer.toystories.neo import (NeoConfig, ensure_neo_world, from_pretrained_kwargs, load_neo_hf,
                                      neo_config)

TOY_NAME = "toystories"
NEO_NAME = "toystories-neo"
REAL_NAME = "tiny-stories-33M"
REAL_REPO = "roneneldan/TinyStories-33M"
_REAL_ALIASES = {REAL_NAME, "roneneldan/TinyStories-33M", "TinyStories-33M"}
KNOWN_MODELS = (TOY_NAME, f"{TOY_NAME}/small", f"{TOY_NAME}/demo", NEO_NAME, REAL_NAME, REAL_REPO)
HUB_PROBE_TIMEOUT = 1.0
"""Seconds to wait for a TCP connection to the hub before calling it unreachable: without
network the hub client's own retries took 23 s to give up (2-core dev VM, Dec 2026)."""


class ModelDownloadError(ConnectionError):
    """The real model could not be fetched (no network, or the hub refused)."""


def default_device() -> str:
    """CUDA when available, else CPU."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def _dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    value = getattr(torch, str(dtype).removeprefix("torch."), None)
    if not isinstance(value, torch.dtype):
        raise ValueError(f"unknown dtype {dtype!r}; use e.g. 'float32', 'bfloat16' or torch.float16")
    return value


def load_model(name_or_model: str | HookedTransformer = TOY_NAME, *,
               preset: str | WorldConfig | NeoConfig = "small",
               device: str | torch.device | None = None, dtype: str | torch.dtype | None = None,
               progress: bool = True, bridge: bool = False) -> HookedTransformer | TransformerBridge:
    """A HookedTransformer with a tokenizer, on ``device`` (default: CUDA when available).

    ``"toystories"`` (or ``"toystories/<preset>"``): the offline toy world, built on first
    use and cached under :func:`cache_dir`. ``"toystories-neo"`` (or ``"toystories-neo/<preset>"``,
    ``preset`` may be a NeoConfig): the GPT-Neo + BPE offline world, built on first use, then
    loaded like the real model. ``"tiny-stories-33M"``: the real model (needs network on first
    use). A HookedTransformer is returned as is (moved if ``device`` is given).

    ``bridge=True`` returns TransformerLens 3's ``TransformerBridge`` of the same HF model
    instead (``toystories-neo`` or ``tiny-stories-33M``), in compatibility mode so that its
    hook names are the HookedTransformer's; every stage of the library runs on either.
    """
    dt = _dtype(dtype)
    if bridge and not isinstance(name_or_model, str):
        raise ValueError("bridge=True boots a TransformerBridge from a model name; pass the name")
    if isinstance(name_or_model, TransformerBridge):
        return name_or_model.to(device) if device is not None else name_or_model
    if isinstance(name_or_model, HookedTransformer):
        model = name_or_model
        if device is not None:  # TransformerLens's .to also updates model.cfg.device
            model = model.to(device, print_details=False)
        return model.to(dt, print_details=False) if dt is not None else model
    if not isinstance(name_or_model, str):
        raise TypeError(f"load_model takes a model name or a HookedTransformer, got {type(name_or_model).__name__}")
    device = str(device) if device is not None else default_device()
    if name_or_model == NEO_NAME or name_or_model.startswith(NEO_NAME + "/"):
        if "/" in name_or_model:
            preset = name_or_model.split("/", 1)[1]
        return _load_neo(preset, device, dt, progress, bridge)
    if name_or_model == TOY_NAME or name_or_model.startswith(TOY_NAME + "/"):
        if bridge:
            raise ValueError(f"bridge=True needs an HF model; {TOY_NAME!r} is a HookedTransformer built "
                             f"directly. Use '{NEO_NAME}' (the offline world as an HF GPT-Neo) or '{REAL_NAME}'")
        if "/" in name_or_model:
            preset = name_or_model.split("/", 1)[1]
        return load_toy_model(preset, cache_root=cache_dir(), device=device, dtype=dt, progress=progress)
    if name_or_model in _REAL_ALIASES:
        return _load_real(device, dt, bridge)
    raise ValueError(f"unknown model {name_or_model!r}; known models: {', '.join(KNOWN_MODELS)} "
                     "(or pass a HookedTransformer)")


def from_hf(name: str, hf_model=None, tokenizer=None, device: str | None = None,
            dtype: torch.dtype | None = None, **hf_kwargs) -> HookedTransformer:
    """The one loader of HF checkpoints: ``HookedTransformer.from_pretrained(name, ...)``.

    ``name`` is an official TransformerLens name (it picks the weight conversion);
    ``hf_model``/``tokenizer`` are used instead of downloading them when given; ``hf_kwargs``
    go to HuggingFace's ``from_pretrained`` (``cache_dir``, ``local_files_only``...).
    """
    kwargs = {"dtype": dtype} if dtype is not None else {}
    return HookedTransformer.from_pretrained(name, hf_model=hf_model, tokenizer=tokenizer, device=device,
                                             **kwargs, **hf_kwargs)


def boot_bridge(name: str, hf_model=None, tokenizer=None, device: str | None = None,
                dtype: torch.dtype | None = None) -> TransformerBridge:
    """``TransformerBridge.boot_transformers`` in compatibility mode (HookedTransformer hook
    names: ``blocks.1.hook_resid_post``...), the Bridge counterpart of :func:`from_hf`."""
    kwargs = {"dtype": dtype} if dtype is not None else {}
    model = TransformerBridge.boot_transformers(name, hf_model=hf_model, tokenizer=tokenizer, device=device,
                                                **kwargs)
    model.enable_compatibility_mode()
    return model


def _load_neo(preset: str | NeoConfig, device: str, dtype: torch.dtype | None,
              progress: bool, bridge: bool = False) -> HookedTransformer | TransformerBridge:
    cfg = neo_config(preset)
    path = ensure_neo_world(cfg, cache_root=cache_dir(), progress=progress)
    hf_model, tokenizer = load_neo_hf(path, dtype)
    if bridge:  # the Bridge reads the architecture from the directory's own config.json
        model = boot_bridge(str(path), hf_model, tokenizer, device, dtype)
        model.cfg.model_name = f"{NEO_NAME}/{cfg.name}"
        return model
    # TinyStories-33M's name selects its GPT-Neo conversion; the config is read from the
    # world's own hub-format copy (cache_dir=..., local_files_only=True), never downloaded
    model = from_hf(REAL_REPO, hf_model, tokenizer, device, dtype, **from_pretrained_kwargs(path))
    model.cfg.model_name = f"{NEO_NAME}/{cfg.name}"  # not TinyStories-33M's name
    return model


def _load_real(device: str, dtype: torch.dtype | None, bridge: bool = False) -> HookedTransformer | TransformerBridge:
    # Decide "offline" once, up front: left to itself the hub client retries for 23 s
    offline = "HF_HUB_OFFLINE is set" if _hub_offline() else None
    if offline is None and not _hub_reachable():
        offline = f"{_hub_address()[0]} is unreachable"
    if offline and not _real_model_cached():
        raise _download_error(f"{offline} and the model is not in the local HF cache")
    try:
        with _offline_mode(bool(offline)):  # a cached copy then loads without touching the network
            if bridge:
                return boot_bridge(REAL_REPO, device=device, dtype=dtype)
            return from_hf(REAL_REPO, None, None, device, dtype)
    except Exception as e:  # hub errors come in many types (OSError, HTTPError, LocalEntryNotFound...)
        if not _looks_like_download_failure(e):
            raise
        raise _download_error(type(e).__name__) from e


def _download_error(why: str) -> ModelDownloadError:
    return ModelDownloadError(f"could not download {REAL_NAME} from the HuggingFace hub ({why}); "
                              f"without network use the offline model: load_model('{TOY_NAME}')")


def _hub_offline() -> bool:
    """HF_HUB_OFFLINE, read now (the hub reads it once, at import)."""
    flag = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}
    return flag or hub_constants.HF_HUB_OFFLINE


def _hub_address() -> tuple[str, int]:
    """Host and port of the hub (``HF_ENDPOINT`` when set, e.g. a mirror)."""
    url = urlparse(hub_constants.ENDPOINT)
    return url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http" else 443)


def _hub_reachable(timeout: float = HUB_PROBE_TIMEOUT) -> bool:
    """One TCP connection to the hub; DNS failure, refusal or timeout all mean no."""
    try:
        socket.create_connection(_hub_address(), timeout=timeout).close()
    except OSError:
        return False
    return True


def _real_model_cached() -> bool:
    """Whether the real model's config is in the local HF cache (an earlier download)."""
    return isinstance(try_to_load_from_cache(REAL_REPO, "config.json"), str)


@contextlib.contextmanager
def _offline_mode(on: bool):
    """The hub and transformers in offline mode (cache only, no retries) inside the block.

    Both read ``hub_constants.HF_HUB_OFFLINE`` on every call; it is restored
    however the block ends."""
    before = hub_constants.HF_HUB_OFFLINE
    hub_constants.HF_HUB_OFFLINE = before or on
    try:
        yield
    finally:
        hub_constants.HF_HUB_OFFLINE = before


def _looks_like_download_failure(e: BaseException) -> bool:
    names = {type(x).__name__ for x in _chain(e)}
    hub = {"OSError", "ConnectionError", "HTTPError", "LocalEntryNotFoundError", "OfflineModeIsEnabled",
           "HfHubHTTPError", "Timeout", "ConnectTimeout", "ReadTimeout", "MaxRetryError",
           "ConnectError", "RepositoryNotFoundError", "GatedRepoError"}
    return bool(names & hub) or isinstance(e, (OSError, ConnectionError))


def _chain(e: BaseException | None):
    while e is not None:
        yield e
        e = e.__cause__ or e.__context__


def canonical_model_name(name: str | None) -> str:
    """``name`` with the real model's aliases resolved; None or empty is ``"custom"``
    (TransformerLens's default name, which here means "unknown")."""
    name = name or "custom"
    return REAL_NAME if name in _REAL_ALIASES else name


def model_name(model: HookedTransformer) -> str:
    """A short name for metadata: ``toystories/small``, ``tiny-stories-33M``..."""
    return canonical_model_name(getattr(model.cfg, "model_name", None))


def default_hook_name(model: HookedTransformer) -> str:
    """The residual stream the SAEs read by default.

    The seed writeup used the stream after the 2nd layer (``blocks.1``) of TinyStories-33M;
    in the toy world a probe found cleaner, better-steering features one layer later.
    """
    if model_name(model).startswith(TOY_NAME + "/") and model.cfg.n_layers >= 3:
        return "blocks.2.hook_resid_post"
    return "blocks.1.hook_resid_post" if model.cfg.n_layers >= 2 else "blocks.0.hook_resid_post"
