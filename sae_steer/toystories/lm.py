"""Train the toy world's 4-layer HookedTransformer once, then load it from a disk cache.

The cache entry ``<cache_root>/toystories/<preset>-<hash>/`` holds ``model.safetensors``,
``config.json`` (the WorldConfig, the model's shape, validation loss, build time) and
``tokenizer.json``. The hash covers the whole WorldConfig and the grammar version, so
changing either builds a new model. Builds write to a temporary directory and rename it
into place under a file lock, so concurrent callers never see half a cache entry.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformer_lens import HookedTransformer, HookedTransformerConfig

from sae_steer.config import WorldConfig
from sae_steer.fsutil import atomic_dir, cache_dir, exclusive_lock, write_json_atomic
from sae_steer.toystories.grammar import GRAMMAR_VERSION, generate_stories
from sae_steer.toystories.tokenizer import build_tokenizer, build_vocab, load_tokenizer, save_tokenizer
from sae_steer.toystories.train import encode_stories, masked_loss, train_lm

PRESETS: dict[str, WorldConfig] = {
    # CI preset: ~0.4M training tokens; builds in about a minute on 2 CPU cores.
    "small": WorldConfig(name="small", n_train_stories=5000, n_val_stories=500, d_model=64,
                         n_heads=4, d_mlp=256, steps=450, batch_size=32, lr=3e-3),
    # Better text for the demo: 6x the data and a 2x wider model, a few minutes on CPU.
    "demo": WorldConfig(name="demo", n_train_stories=30000, n_val_stories=1000, d_model=128,
                        n_heads=4, d_mlp=512, steps=1000, batch_size=32, lr=2e-3, warmup_steps=50),
}

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
builds_run = 0
"""How many models this process has trained (tests use it to prove a cache hit)."""


def world_config(preset: str | WorldConfig) -> WorldConfig:
    """A preset by name (``small``/``demo``), or a WorldConfig passed through."""
    if isinstance(preset, WorldConfig):
        return preset
    if preset not in PRESETS:
        raise ValueError(f"unknown toystories preset {preset!r}; known presets: {sorted(PRESETS)}")
    return PRESETS[preset]


def entry_dir(cache_root: str | os.PathLike, kind: str, cfg, prefix: str = "") -> Path:
    """``<cache_root>/toystories/<prefix><name>-<hash>``: a world's cache entry, keyed by a
    hash of its whole config (filed under ``kind``) and the grammar version."""
    key = json.dumps({kind: cfg.to_dict(), "grammar": GRAMMAR_VERSION}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return Path(cache_root) / "toystories" / f"{prefix}{cfg.name}-{digest}"


def world_dir(cfg: WorldConfig, cache_root: str | os.PathLike) -> Path:
    """Where ``cfg``'s model is cached (whether or not it is built yet)."""
    return entry_dir(cache_root, "world", cfg)


def hooked_config(cfg: WorldConfig, d_vocab: int, device: str,
                  dtype: torch.dtype = torch.float32) -> HookedTransformerConfig:
    # No `seed=`: TransformerLens would reseed every global RNG on each load;
    # _build seeds torch itself right before initialising the weights.
    return HookedTransformerConfig(
        n_layers=cfg.n_layers, d_model=cfg.d_model, n_heads=cfg.n_heads,
        d_head=cfg.d_model // cfg.n_heads, d_mlp=cfg.d_mlp, n_ctx=cfg.n_ctx, d_vocab=d_vocab,
        act_fn="gelu", normalization_type="LN", positional_embedding_type="standard",
        model_name=f"toystories/{cfg.name}", device=device, dtype=dtype,
        default_prepend_bos=True,
    )


def load_toy_model(preset: str | WorldConfig = "small", *, cache_root: str | os.PathLike,
                   device: str, dtype: torch.dtype | None = None,
                   progress: bool = True) -> HookedTransformer:
    """Load the preset's model from the cache, building (training) it first if needed."""
    cfg = world_config(preset)
    path = world_dir(cfg, cache_root)
    if not (path / MODEL_FILE).exists():
        with exclusive_lock(path):  # two processes never train the same model
            if not (path / MODEL_FILE).exists():  # another process may have built it meanwhile
                _build(cfg, path, device, progress)
    return _load(path, device, dtype or torch.float32)


def world_metrics(preset: str | WorldConfig = "small",
                  cache_root: str | os.PathLike | None = None) -> dict:
    """The saved build record of a built world: ``validation_loss`` (nats/token),
    ``train_loss``, ``build_seconds``, ``d_vocab``, ``world`` (its WorldConfig)...

    ``cache_root`` defaults to ``sae_steer.fsutil.cache_dir()``; its ``toystories``
    subdirectory is accepted too.
    """
    root = Path(cache_root if cache_root is not None else cache_dir())
    root = root.parent if root.name == "toystories" else root
    path = world_dir(world_config(preset), root) / CONFIG_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: build it with load_model('toystories')")
    record = json.loads(path.read_text())
    record.setdefault("validation_loss", record.get("val_loss"))  # entries built before the rename
    return record


def _load(path: Path, device: str, dtype: torch.dtype) -> HookedTransformer:
    record = json.loads((path / CONFIG_FILE).read_text())
    cfg = WorldConfig.from_dict(record["world"])
    tokenizer = load_tokenizer(path)
    model = HookedTransformer(hooked_config(cfg, record["d_vocab"], device, dtype), tokenizer=tokenizer)
    state = load_file(str(path / MODEL_FILE), device=str(device))
    model.load_state_dict({k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()})
    model.eval()
    return model


def _build(cfg: WorldConfig, path: Path, device: str, progress: bool) -> None:
    """Generate the corpus, train on it, evaluate, and atomically publish the cache entry."""
    global builds_run
    start, cpu_start = time.perf_counter(), time.process_time()
    load_avg = os.getloadavg()[0] if hasattr(os, "getloadavg") else None  # timings depend on it
    train = generate_stories(cfg.n_train_stories, cfg.seed, "train")
    val = generate_stories(cfg.n_val_stories, cfg.seed, "validation")
    tokenizer = build_tokenizer(build_vocab(s.tokens for s in train + val))
    torch.manual_seed(cfg.seed)  # reproducible initialisation
    model = HookedTransformer(hooked_config(cfg, len(tokenizer), device), tokenizer=tokenizer)
    train_tokens = encode_stories(tokenizer, [s.text for s in train], cfg.n_ctx)
    val_tokens = encode_stories(tokenizer, [s.text for s in val], cfg.n_ctx)
    train_loss = train_lm(model, train_tokens, cfg, progress=progress)
    val_loss = evaluate(model, val_tokens)
    builds_run += 1
    record = {
        "world": cfg.to_dict(), "grammar_version": GRAMMAR_VERSION, "d_vocab": len(tokenizer),
        "validation_loss": val_loss, "train_loss": train_loss,
        "build_seconds": time.perf_counter() - start,
        "build_cpu_seconds": time.process_time() - cpu_start, "load_avg_at_start": load_avg,
        "train_tokens": int((train_tokens != tokenizer.pad_token_id).sum()), "device": str(device),
    }
    _publish(model, tokenizer, record, path)
    if progress:
        print(f"built toystories/{cfg.name} in {record['build_seconds']:.0f} s: "
              f"validation loss {val_loss:.3f} nats/token -> {path}")


@torch.no_grad()
def evaluate(model: HookedTransformer, tokens: torch.Tensor, batch_size: int = 64) -> float:
    """Mean next-token loss (nats) over real tokens of ``tokens [n, ctx]`` (padding = 0)."""
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(tokens), batch_size):
        batch = tokens[i:i + batch_size].to(model.cfg.device)
        loss, n = masked_loss(model, batch)
        total, count = total + loss.item() * n, count + n
    return total / max(count, 1)


def _publish(model: HookedTransformer, tokenizer, record: dict, path: Path) -> None:
    # replace=True: an existing entry here is stale or incomplete (it has no model file)
    with atomic_dir(path, replace=True) as tmp:
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(tmp / MODEL_FILE))
        save_tokenizer(tokenizer, tmp)
        write_json_atomic(tmp / CONFIG_FILE, record)


