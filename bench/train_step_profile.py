"""Where one SAE training step spends its time, on any device (torch.profiler).

    python bench/train_step_profile.py                       # topk, d_sae 10,000, batch 4096
    python bench/train_step_profile.py --device cuda --arch relu --options tf32
    python bench/train_step_profile.py --quick               # smoke run (CI): small, CPU

Runs ``sae_steer.train.train`` (the same step users get) on one batch of the fair bench's
ground truth repeated, untimed for ``--warmup`` steps, then profiles ``--steps`` steps and
prints the ops that took the most time (device time on a GPU, CPU time otherwise) and how
many kernels one step launches and how many host syncs it makes (on a GPU: a step that
waits for the device cannot queue the next step's kernels while the current ones run).

Prints ``RESULT profile_step_ms_<arch>[_<option>]`` (median wall time per step, measured
between synchronisations outside the profiler) and, on a GPU,
``RESULT profile_kernels_per_step_<arch>[_<option>]``.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_vs_saelens import D_IN, K, GroundTruth, synchronize  # noqa: E402

from sae_steer.config import SAEConfig, TrainConfig  # noqa: E402
from sae_steer.sae import SAE  # noqa: E402
from sae_steer.train import train  # noqa: E402


class Repeat:
    """One batch handed out ``n`` times; records the synchronised time between requests."""

    def __init__(self, x: torch.Tensor, n: int):
        self.x, self.n, self.times, self._last = x, n, [], None

    def __iter__(self):
        for _ in range(self.n):
            synchronize(self.x.device)
            now = time.perf_counter()
            if self._last is not None:
                self.times.append(now - self._last)
            self._last = now
            yield self.x


def run(args, option: str) -> dict[str, float]:
    truth = GroundTruth(args.d_sae, seed=12345, device=args.device, keep_bytes=0)
    x = truth.generate(0, args.batch)
    sae = SAE(SAEConfig(d_in=D_IN, d_sae=args.d_sae, architecture=args.arch,
                        k=K if args.arch == "topk" else None, device=str(args.device),
                        dtype="bfloat16" if option == "bfloat16" else "float32"), seed=0)
    cfg = TrainConfig(n_steps=args.warmup + args.steps, batch_size=args.batch, lr=4e-4,
                      dead_after_steps=2, log_every=10 ** 9, tf32=option == "tf32")
    timed = Repeat(x, args.warmup + args.steps)
    train(sae, timed, cfg, progress=False)  # warm-up and timing, no profiler overhead
    step_ms = 1e3 * statistics.median(timed.times[args.warmup:])
    gpu = args.device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if gpu else [])
    cfg = cfg.replace(n_steps=args.steps)
    with profile(activities=activities) as prof:
        train(sae, Repeat(x, args.steps), cfg, progress=False)
    synchronize(args.device)
    events = prof.key_averages()
    key = "self_device_time_total" if gpu else "self_cpu_time_total"
    print(events.table(sort_by=key, row_limit=args.top))
    top = sorted(events, key=lambda e: getattr(e, key), reverse=True)[:args.top]
    out = {"step_ms": step_ms,  # and the top ops: (name, ms per step), for bench/gpu_suite.py
           "top": [(e.key, getattr(e, key) / 1e3 / args.steps) for e in top]}
    if gpu:
        kernels = sum(e.count for e in events if e.device_type == torch.autograd.DeviceType.CUDA)
        syncs = sum(e.count for e in events if "Synchronize" in e.key or e.key in
                    ("aten::item", "aten::_local_scalar_dense", "aten::nonzero"))
        out.update(kernels=kernels / args.steps, syncs=syncs / args.steps)
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    p.add_argument("--arch", choices=("relu", "topk"), default="topk")
    p.add_argument("--d-sae", type=int, default=10_000)
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--top", type=int, default=15, help="ops shown")
    p.add_argument("--options", nargs="*", choices=("tf32", "bfloat16"), default=[])
    p.add_argument("--quick", action="store_true", help="smoke run: d_sae 1,024, batch 1024")
    args = p.parse_args(argv)
    args.device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.quick:
        args.d_sae, args.batch, args.warmup, args.steps = 1024, 1024, 2, 3
    warnings.filterwarnings("ignore")
    print(f"device {args.device}, torch {torch.__version__}, {args.arch} d_sae {args.d_sae:,}, "
          f"batch {args.batch}, {args.steps} profiled steps after {args.warmup}")
    lines = []
    for option in ["fp32", *args.options]:
        out = run(args, option)
        tag = args.arch if option == "fp32" else f"{args.arch}_{option}"
        lines.append(f"RESULT profile_step_ms_{tag} {out['step_ms']:.3f}")
        if "kernels" in out:
            lines += [f"RESULT profile_kernels_per_step_{tag} {out['kernels']:.0f}",
                      f"RESULT profile_syncs_per_step_{tag} {out['syncs']:.0f}"]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
