"""The offline world in the real format: an HF ``GPTNeoForCausalLM`` of TinyStories-33M's
family and a byte-level BPE tokenizer, both trained here on the generated stories.

The cache entry ``<cache_root>/toystories/neo-<name>-<hash>/`` is an ordinary HF model
directory (``config.json``, ``model.safetensors``, ``tokenizer.json`` and friends, all via
``save_pretrained``) plus ``world.json`` (the NeoConfig, losses, build time). The hash
covers the NeoConfig and the grammar version. Builds run under a file lock and publish
the directory atomically, like the word-level world's (``lm.py``).

``hub/`` inside the entry is a HuggingFace hub cache holding the same ``config.json``
under TinyStories-33M's repo id: ``HookedTransformer.from_pretrained`` reads the
architecture config by repo id (``AutoConfig.from_pretrained(official name, **kwargs)``),
and ``from_pretrained_kwargs()`` (``cache_dir=<hub>``, ``local_files_only=True``) points it
there, so the real model's loader runs unchanged and offline. This module imports nothing
from sae_steer above the world itself.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from tqdm.auto import tqdm
from transformers import AutoTokenizer, GPTNeoConfig, GPTNeoForCausalLM, PreTrainedTokenizerFast

from sae_steer.config import NeoConfig
from sae_steer.fsutil import atomic_dir, exclusive_lock, write_json_atomic
from sae_steer.toystories.grammar import GRAMMAR_VERSION, generate_stories
from sae_steer.toystories.lm import entry_dir
from sae_steer.toystories.train import _batch_indices, _cpu_threads, _lr_at

REAL_REPO = "roneneldan/TinyStories-33M"
"""The official name whose architecture (GPT-Neo, alternating global/local attention) this world copies."""
EOT = "<|endoftext|>"
N_CTX = 512
"""Position table size: TransformerLens sets n_ctx=512 for every roneneldan/TinyStories
name (their training length), so the world's table has that size too."""
RECORD_FILE = "world.json"
HUB_DIR = "hub"
builds_run = 0
"""How many neo worlds this process has trained (tests use it to prove a cache hit)."""


NEO_PRESETS: dict[str, NeoConfig] = {"small": NeoConfig()}


def neo_config(preset: str | NeoConfig) -> NeoConfig:
    if isinstance(preset, NeoConfig):
        return preset
    if preset not in NEO_PRESETS:
        raise ValueError(f"unknown toystories-neo preset {preset!r}; known presets: {sorted(NEO_PRESETS)}")
    return NEO_PRESETS[preset]


def neo_dir(cfg: NeoConfig, cache_root: str | os.PathLike) -> Path:
    """Where ``cfg``'s world is cached (whether or not it is built yet)."""
    return entry_dir(cache_root, "neo", cfg, prefix="neo-")


def ensure_neo_world(preset: str | NeoConfig = "small", *, cache_root: str | os.PathLike,
                     progress: bool = True) -> Path:
    """The world's HF model directory, trained first (once, under a lock) if needed."""
    cfg = neo_config(preset)
    path = neo_dir(cfg, cache_root)
    if not (path / RECORD_FILE).exists():  # written last: its presence means a whole entry
        with exclusive_lock(path):
            if not (path / RECORD_FILE).exists():
                _build(cfg, path, progress)
    return path


def load_neo_hf(path: str | os.PathLike, dtype: torch.dtype | None = None):
    """``(GPTNeoForCausalLM, tokenizer)`` from a built world directory, on CPU."""
    model = GPTNeoForCausalLM.from_pretrained(str(path), dtype=dtype or torch.float32)
    model.eval()
    return model, AutoTokenizer.from_pretrained(str(path))


def from_pretrained_kwargs(path: str | os.PathLike) -> dict:
    """What ``HookedTransformer.from_pretrained(REAL_REPO, ...)`` needs to read this world's
    architecture config offline instead of TinyStories-33M's from the hub."""
    return {"cache_dir": str(Path(path) / HUB_DIR), "local_files_only": True}


def neo_metrics(preset: str | NeoConfig, cache_root: str | os.PathLike) -> dict:
    """The build record (``validation_loss``, ``build_seconds``...) of a built world."""
    return json.loads((neo_dir(neo_config(preset), cache_root) / RECORD_FILE).read_text())


def build_bpe_tokenizer(texts: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """GPT-2/GPT-Neo style byte-level BPE: leading-space pieces, ``<|endoftext|>`` as bos/eos/unk."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOT], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=EOT, eos_token=EOT, unk_token=EOT,
                                   model_max_length=None)


def hf_config(cfg: NeoConfig, tokenizer) -> GPTNeoConfig:
    eot = tokenizer.convert_tokens_to_ids(EOT)
    return GPTNeoConfig(
        vocab_size=len(tokenizer), max_position_embeddings=N_CTX, hidden_size=cfg.d_model,
        num_layers=cfg.n_layers, num_heads=cfg.n_heads, window_size=cfg.window_size,
        attention_types=[[["global", "local"], cfg.n_layers // 2]],  # as TinyStories-33M
        intermediate_size=None, activation_function="gelu_new",  # d_mlp = 4 d_model, as TL assumes
        resid_dropout=0.0, embed_dropout=0.0, attention_dropout=0.0,
        bos_token_id=eot, eos_token_id=eot, architectures=["GPTNeoForCausalLM"],
    )


def encode(tokenizer, texts: list[str], n_ctx: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``<|endoftext|> story <|endoftext|>`` right-padded (with eot) to n_ctx, and the lengths."""
    eot = tokenizer.convert_tokens_to_ids(EOT)
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    out = torch.full((len(texts), n_ctx), eot, dtype=torch.long)
    lengths = torch.zeros(len(texts), dtype=torch.long)
    for row, seq in enumerate(ids):
        seq = ([eot] + seq + [eot])[:n_ctx]
        out[row, :len(seq)] = torch.tensor(seq)
        lengths[row] = len(seq)
    return out, lengths


def masked_loss(model: GPTNeoForCausalLM, tokens: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Mean next-token loss over each story's own tokens (padding after it is not a target)."""
    n = int(lengths.max())
    logits = model(input_ids=tokens[:, :n - 1]).logits
    targets = tokens[:, 1:n]
    real = torch.arange(1, n)[None, :] < lengths[:, None]
    losses = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), reduction="none")
    count = int(real.sum())
    return (losses * real.flatten()).sum() / max(count, 1), count


def train_neo(model: GPTNeoForCausalLM, tokens: torch.Tensor, lengths: torch.Tensor, cfg: NeoConfig,
              progress: bool = True) -> float:
    """``cfg.steps`` AdamW steps on one CPU thread (weights independent of machine load)."""
    with _cpu_threads("cpu"):
        model.train()
        decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "wpe" not in n]
        rest = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "wpe" not in n)]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                 {"params": rest, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.98))
        batches = _batch_indices(lengths, cfg.batch_size, cfg.seed)
        smooth = None
        bar = tqdm(range(cfg.steps), desc=f"training toystories-neo/{cfg.name}", disable=not progress)
        for step in bar:
            idx = next(batches)
            for group in opt.param_groups:
                group["lr"] = _lr_at(step, cfg)
            loss, _ = masked_loss(model, tokens[idx], lengths[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            smooth = loss.item() if smooth is None else 0.95 * smooth + 0.05 * loss.item()
            bar.set_postfix(loss=f"{smooth:.3f}", refresh=False)
        model.eval()
    return float(smooth)


@torch.no_grad()
def evaluate(model: GPTNeoForCausalLM, tokens: torch.Tensor, lengths: torch.Tensor, batch_size: int = 64) -> float:
    total, count = 0.0, 0
    with _cpu_threads("cpu"):
        for i in range(0, len(tokens), batch_size):
            loss, n = masked_loss(model, tokens[i:i + batch_size], lengths[i:i + batch_size])
            total, count = total + loss.item() * n, count + n
    return total / max(count, 1)


def _build(cfg: NeoConfig, path: Path, progress: bool) -> None:
    global builds_run
    start, cpu_start = time.perf_counter(), time.process_time()
    load_avg = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    train = [s.text for s in generate_stories(cfg.n_train_stories, cfg.seed, "train")]
    val = [s.text for s in generate_stories(cfg.n_val_stories, cfg.seed, "validation")]
    tokenizer = build_bpe_tokenizer(train, cfg.vocab_size)
    torch.manual_seed(cfg.seed)  # reproducible initialisation
    model = GPTNeoForCausalLM(hf_config(cfg, tokenizer))
    train_tokens, train_len = encode(tokenizer, train, N_CTX)
    val_tokens, val_len = encode(tokenizer, val, N_CTX)
    train_loss = train_neo(model, train_tokens, train_len, cfg, progress)
    val_loss = evaluate(model, val_tokens, val_len)
    builds_run += 1
    record = {"neo": cfg.to_dict(), "grammar_version": GRAMMAR_VERSION, "d_vocab": len(tokenizer),
              "validation_loss": val_loss, "train_loss": train_loss,
              "build_seconds": time.perf_counter() - start, "build_cpu_seconds": time.process_time() - cpu_start,
              "load_avg_at_start": load_avg, "train_tokens": int(train_len.sum())}
    with atomic_dir(path, replace=True) as tmp:
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        _write_hub_snapshot(tmp, REAL_REPO)
        write_json_atomic(tmp / RECORD_FILE, record)
    if progress:
        print(f"built toystories-neo/{cfg.name} in {record['build_seconds']:.0f} s: "
              f"validation loss {val_loss:.3f} nats/token -> {path}")


def _write_hub_snapshot(path: Path, repo: str) -> None:
    """``path/hub`` as a HuggingFace hub cache holding this model's config.json under ``repo``."""
    config = (path / "config.json").read_bytes()
    revision = hashlib.sha1(config).hexdigest()  # a commit-like id, stable per config
    repo_dir = path / HUB_DIR / f"models--{repo.replace('/', '--')}"
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text(revision)
    snapshot = repo_dir / "snapshots" / revision
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_bytes(config)
