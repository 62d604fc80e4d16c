"""Feature-search throughput vs plain harvest + encode, and its memory at 1x and 8x data.

    /work/venv/bin/python bench/search_throughput.py [--texts 256] [--mem-texts 64]

Throughput: the same pre-tokenized batches go through (a) the plain loop
``sae.encode(hook_activations(...))`` and (b) ``search_token_batches`` (the same loop +
merging into the bounded state); tokens/s of each, best of 3 alternating runs.
Target: search >= 0.8x harvest.

Memory: the search's state is a fixed set of tensors (plus a bounded buffer of pending
(feature, token) entries), so we report its peak size in bytes (``SearchState.nbytes``
after every batch, recorded as ``meta["state_peak_bytes"]``) on N and 8N texts streamed
lazily. tracemalloc cannot see torch's allocations, and RSS mixes in the model, the
allocator's caching and the batch's transient activations, so RSS (peak minus before,
for the search only, measured in a fresh child process per size) is printed for
information. Target: state peak at 8x / at 1x == 1.0.

Uses the offline world (``load_model("toystories")`` + ``reference_sae``) when
/work/status/world and /work/status/pipeline say they are ready, else a random model
of the toy world's shape (4 layers, d_model 64) and a random SAE of 8x width.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch

from sae_steer.lm import hook_activations
from sae_steer.config import SAEConfig, SearchConfig
from sae_steer.inspect import search_token_batches

CFG = SearchConfig(context_size=128, batch_size=32)


def build(world: bool):
    """(model, sae, texts or None, hook, label)."""
    if world:
        from sae_steer import load_model, load_texts
        from sae_steer.train import reference_sae

        model = load_model("toystories", preset="small", progress=False)
        sae = reference_sae(model, preset="small", progress=False)
        texts = list(load_texts("toystories", split="validation"))
        return model, sae, texts, sae.cfg.hook_name, "offline world (toystories/small + reference SAE)"
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    from sae_steer.sae import SAE

    torch.manual_seed(0)
    cfg = HookedTransformerConfig(n_layers=4, d_model=64, n_heads=4, d_head=16, d_mlp=256,
                                  n_ctx=128, d_vocab=400, act_fn="gelu", normalization_type="LN",
                                  device="cpu")
    model = HookedTransformer(cfg).eval()
    hook = "blocks.2.hook_resid_post"
    sae = SAE(SAEConfig(d_in=64, d_sae=512, hook_name=hook, device="cpu"))
    with torch.no_grad():
        sae.b_enc.fill_(-2.5)  # sparse-ish like a trained SAE (a few % of features per token)
    return model, sae, None, hook, "random model of the toy world's shape (no world cache yet)"


def batches(model, texts, n_texts: int, seed: int = 0):
    """Lazily yield (tokens, mask) batches: real texts when given, else random stories."""
    if texts is not None:
        from sae_steer.lm import token_batches

        yield from token_batches(model, texts[:n_texts], CFG.context_size, CFG.batch_size)
        return
    g = torch.Generator().manual_seed(seed)
    for start in range(0, n_texts, CFG.batch_size):
        b = min(CFG.batch_size, n_texts - start)
        toks = torch.randint(4, model.cfg.d_vocab, (b, CFG.context_size), generator=g)
        toks[:, 0] = 1
        lens = torch.randint(60, CFG.context_size + 1, (b,), generator=g)
        mask = torch.arange(CFG.context_size)[None] < lens[:, None]
        yield toks.masked_fill(~mask, 0), mask


def harvest(model, sae, data, hook) -> int:
    n = 0
    with torch.no_grad():
        for tokens, mask in data:
            feats = sae.encode(hook_activations(model, tokens, hook).to(sae.W_dec.device))
            n += int(mask.sum()) + int(feats[0, 0, 0] > 0) * 0
    return n


def throughput(model, sae, texts, hook, n_texts: int) -> tuple[float, float]:
    data = list(batches(model, texts, n_texts))
    n_tok = int(sum(int(m.sum()) for _, m in data))
    harvest(model, sae, data[:2], hook)  # warm-up
    t_h, t_s = [], []
    for _ in range(3):
        t0 = time.perf_counter()
        harvest(model, sae, data, hook)
        t_h.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        search_token_batches(model, sae, data, CFG, progress=False)
        t_s.append(time.perf_counter() - t0)
    return n_tok / min(t_h), n_tok / min(t_s)


def mem_child(world: bool, n_texts: int) -> None:
    """In a fresh process: search n_texts lazily, print state peak and RSS growth."""
    model, sae, texts, hook, _ = build(world)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    res = search_token_batches(model, sae, batches(model, texts, n_texts), CFG, progress=False)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"state_peak_bytes": res.meta["state_peak_bytes"], "rss_growth_kib": after - before,
                      "n_tokens": res.n_tokens}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--texts", type=int, default=256, help="texts for the throughput runs")
    ap.add_argument("--mem-texts", type=int, default=60, help="1x size for the memory runs")
    ap.add_argument("--mem-child", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--world", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    from pathlib import Path

    world = bool(args.world) if args.world is not None else all(
        Path(f"/work/status/{s}").exists() for s in ("world", "pipeline"))
    if args.mem_child is not None:
        return mem_child(world, args.mem_child)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    model, sae, texts, hook, label = build(world)
    n_texts = min(args.texts, len(texts)) if texts is not None else args.texts
    print(f"setup: {label}; d_sae={sae.W_dec.shape[0]}, hook={hook}, {n_texts} texts, "
          f"torch threads={torch.get_num_threads()}")
    h, s = throughput(model, sae, texts, hook, n_texts)
    print(f"{'':24}{'tokens/s':>12}")
    print(f"{'harvest + encode':24}{h:12,.0f}")
    print(f"{'search (same + merge)':24}{s:12,.0f}")
    sizes = [args.mem_texts, 8 * args.mem_texts]
    if texts is not None:
        sizes = [min(n, len(texts)) for n in sizes]
    mem = []
    for n in sizes:
        out = subprocess.run([sys.executable, __file__, "--mem-child", str(n), "--world", str(int(world))],
                             capture_output=True, text=True, check=True)
        mem.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"{'texts':>8}{'tokens':>10}{'state peak (bytes)':>20}{'RSS growth (KiB)':>18}")
    for n, m in zip(sizes, mem):
        print(f"{n:8}{m['n_tokens']:10}{m['state_peak_bytes']:20,}{m['rss_growth_kib']:18,}")
    if sizes[1] != 8 * sizes[0]:
        print(f"note: the text set holds only {sizes[1]} texts, not 8x{sizes[0]}")
    print(f"RESULT search_ratio {s / h:.3f}")
    print(f"RESULT search_mem_growth {mem[1]['state_peak_bytes'] / mem[0]['state_peak_bytes']:.3f}")


if __name__ == "__main__":
    main()
