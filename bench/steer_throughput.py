"""Steered vs unsteered generation speed with the KV cache on, and a steered-positions check.

Two models: the offline toy world (``load_model("toystories")``) and a randomly initialised
model shaped like TinyStories-33M (GPT-Neo: 4 layers, d_model 768, 16 heads, d_vocab 50257;
built from a HookedTransformerConfig, nothing downloaded). Steering adds a fixed random
direction at ``blocks.1.hook_resid_post``; it needs no SAE to measure the hook's cost.

Timing: steered and unsteered runs alternate (``--repeats`` pairs, median time each) so
load from other processes hits both alike. Coverage: the hook counts the token positions it
touched, and a counting hook at ``blocks.0.hook_resid_pre`` counts the positions the model
computed on every forward pass (the prompt pass and each length-1 KV-cached pass); the ratio
must be 1.0 -- for our sampler and for TransformerLens's own ``model.generate`` (SAELens's
tutorial hook misses the length-1 passes and would score about prompt / total).

Run: ``python bench/steer_throughput.py [--threads 1] [--repeats 3]``.
Ends with ``RESULT steer_ratio <x>`` (worst model's steered/unsteered tokens/s) and
``RESULT steered_fraction <x>``.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

from sae_steer.config import SteerConfig
from sae_steer.steer import generate_unsteered, steering

HOOK = "blocks.1.hook_resid_post"


def tinystories_shaped(device: str) -> HookedTransformer:
    cfg = HookedTransformerConfig(
        n_layers=4, d_model=768, n_heads=16, d_head=48, d_mlp=3072, d_vocab=50257, n_ctx=2048,
        act_fn="gelu_new", normalization_type="LN", original_architecture="GPTNeoForCausalLM",
        attn_types=["global", "local"] * 2, window_size=256, seed=0, device=device,
    )
    model = HookedTransformer(cfg)
    model.eval()
    return model


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(model: HookedTransformer, prompt, n_samples: int, new: int, repeats: int) -> dict:
    direction = torch.randn(model.cfg.d_model, generator=torch.Generator().manual_seed(0))
    direction = direction / direction.norm()
    # stop_at_eos=False: every run makes exactly n_samples x new tokens, steered or not
    cfg = SteerConfig(prompt=prompt, max_new_tokens=new, n_samples=n_samples, seed=0,
                      stop_at_eos=False)
    run = lambda: generate_unsteered(model, cfg)
    run()  # warm-up (allocator, lazy init)
    plain, steered = [], []
    for _ in range(repeats):
        plain.append(timed(run))
        with steering(model, HOOK, direction, 4.0):
            steered.append(timed(run))
    n_tok = n_samples * new
    tokens = torch.tensor(prompt)[None] if not isinstance(prompt, str) else model.to_tokens(prompt)
    tl_run = lambda: model.generate(tokens.repeat(n_samples, 1), max_new_tokens=new,
                                    do_sample=False, stop_at_eos=False, use_past_kv_cache=True,
                                    verbose=False)
    return {"plain_tok_s": n_tok / statistics.median(plain),
            "steered_tok_s": n_tok / statistics.median(steered),
            "covered_ours": coverage(model, run, direction),
            "covered_tl": coverage(model, tl_run, direction)}


def coverage(model: HookedTransformer, run, direction: torch.Tensor) -> float:
    """Positions the steering hook touched / positions the model computed.

    The denominator counts positions entering block 0 on every forward pass (prompt pass
    and each length-1 KV-cached pass), whoever drives generation.
    """
    seen = {"positions": 0}

    def count(act, hook) -> None:
        seen["positions"] += act.shape[0] * act.shape[1]

    with steering(model, HOOK, direction, 4.0) as stats:
        with model.hooks(fwd_hooks=[("blocks.0.hook_resid_pre", count)]):
            run()
    return stats.positions / seen["positions"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from sae_steer.lm import default_device, load_model

    device = args.device or default_device()
    rows = {
        "toystories/small": (load_model("toystories", preset="small", device=device,
                                        progress=False), "Once upon a time", 16, 100),
        "tinystories-33M-shaped": (tinystories_shaped(device), [1, 2, 3, 4, 5], 4, 20),
    }
    print(f"device {device}, {args.threads} thread(s), KV cache on, sampled, no EOS stop, median of "
          f"{args.repeats}")
    print(f"{'model':24} {'samples x new':>13} {'unsteered tok/s':>16} {'steered tok/s':>14} "
          f"{'ratio':>6} {'steered/positions (ours, TL generate)':>38}")
    ratios, covered = [], []
    for name, (model, prompt, n, new) in rows.items():
        m = measure(model, prompt, n, new, args.repeats)
        ratio = m["steered_tok_s"] / m["plain_tok_s"]
        ratios.append(ratio)
        covered += [m["covered_ours"], m["covered_tl"]]
        print(f"{name:24} {f'{n} x {new}':>13} {m['plain_tok_s']:16.0f} {m['steered_tok_s']:14.0f} "
              f"{ratio:6.3f} {m['covered_ours']:19.3f} {m['covered_tl']:18.3f}")
    print(f"RESULT steer_ratio {min(ratios):.3f}")
    print(f"RESULT steered_fraction {min(covered):.3f}")


if __name__ == "__main__":
    main()
