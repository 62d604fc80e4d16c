"""Every GPU figure the project still needs, as one prepared command for a lent GPU machine.

    python bench/gpu_suite.py --out $OUT/gpu_suite.json   # the GPU run: about 5 min, 6 at most
    python bench/gpu_suite.py --stage screen --out ...     # rerun one stage, merged into the JSON
    python bench/gpu_suite.py --quick --threads 1 --out /tmp/gpu_suite.json   # CI: CPU, tiny

On a bare GPU machine, start with ``source .whl/device-setup.sh;`` and carry ``.whl`` and a
cache holding the small offline world (docs/benchmarks.md, "The GPU suite", says how).

Each stage runs in a child process (this script with ``--child``), killed at its own time
limit (``LIMITS``; ``--limit screen=90`` changes one), so a slow stage cannot eat the rest:
its status is then ``timeout``, an exception makes it ``error`` (with the message), and the
next stage starts either way. The child prints ``RESULT <stage>_... <value>`` lines as it
measures; the parent echoes them, keeps them (a stage killed half-way keeps what it had
printed) and rewrites ``--out`` atomically after each one and after each stage, with the
device, torch version and date. Every stage then prints ``RESULT <stage>_status ok|timeout|
error`` and ``RESULT <stage>_seconds``.

Stages (sizes on a GPU; ``--quick`` shrinks each to seconds on a CPU, real measurements):

1. ``fair``: ``bench/train_vs_saelens.py``'s fair bench, topk (k 32), sae_steer vs SAELens:
   width 10,000 on 2**23 = 8.4 M tokens per side, then width 65,536 on 2**22 = 4.2 M
   (tokens/s, EV, L0 and dead fraction on 65,536 held-out tokens, both sides).
2. ``tf32`` and 3. ``bfloat16``: sae_steer alone at width 10,000 on 2**20 tokens, float32
   and then ``TrainConfig(tf32=True)`` or ``SAEConfig(dtype="bfloat16")`` (tokens/s, EV).
4. ``profile``: ``bench/train_step_profile.py``'s profile of one topk step at width 10,000,
   batch 4,096: step time, the top operations, kernels and host syncs per step.
5. ``screen``: stage 1 of ``sae_steer.screen_features`` on 256 features of a 10,000-feature
   SAE with random weights (untrained) on a model of TinyStories-33M's shape with random
   weights (GPT-Neo: 4 layers, d_model 768, 16 heads, d_mlp 3,072, local attention window
   256) whose vocabulary is the toy world's word-level one (built from its stories, no cache
   needed; not GPT-2's 50,257), 2 scales x 8 samples x 100 tokens: features per minute,
   and the minutes all 10,000 features would take at that rate (extrapolated, not run).
6. ``pipeline``: what ``python -m sae_steer demo`` runs, with the same functions and sizes,
   on the device: the offline world (``toystories/small``, loaded from ``$SAE_STEER_CACHE``:
   carry it), the reference SAE trained afresh, the feature search, ground-truth matching,
   the concept's feature chosen and measured, a steered sample re-scored; seconds per part
   and peak memory (``torch.cuda.max_memory_allocated``; peak RSS on a CPU).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # the other benches, imported by the stages
STAGES = ("fair", "tf32", "bfloat16", "profile", "screen", "pipeline")
LIMITS = {"fair": 195, "tf32": 15, "bfloat16": 15, "profile": 15, "screen": 40, "pipeline": 80}
"""Seconds per stage on a GPU, each counting its process's start (imports, CUDA context):
360 in all. Guessed from the H200 figures of the GPU machine's notes: fair ~170 s (SAELens
at width 65,536 alone ~100 s); the pipeline first writes the demo's 25,000 training stories
on the CPU (41 s on this project's loaded 2-core VM); the others 10-30 s each."""
QUICK_LIMITS = dict.fromkeys(STAGES, 90)
"""``--quick`` on one CPU thread: each stage takes 10-40 s; the whole run must stay under 3 min."""
TMP_ENV = "GPU_SUITE_TMP"  # the parent's temporary folder, removed even when a stage is killed


# ---- the stages: each runs in its own child process and prints RESULT lines -------------
def _fair_args(width: int, tokens: int, ctx: argparse.Namespace):
    import train_vs_saelens as fair

    quick = ["--quick", "--batch", "256", "--held-out", "1024"] if ctx.quick else []
    return fair, fair.parse_args(["--device", ctx.device, "--arch", "topk", "--d-sae",
                                  str(width), "--tokens", str(tokens), *quick])


def stage_fair(ctx: argparse.Namespace) -> None:
    runs = [(256, 2048), (512, 2048)] if ctx.quick else [(10_000, 2 ** 23), (65_536, 2 ** 22)]
    for width, tokens in runs:
        fair, args = _fair_args(width, tokens, ctx)
        truth, held_out, steps = fair.setup(args)
        w, tok_s = width, {}
        print(f"RESULT fair_w{w}_tokens {steps * args.batch}")
        # sae_steer first (the fair bench runs SAELens first against the drift of a shared
        # CPU's load; a GPU has none): a timeout then cuts the slower side, not both
        for side in ("sae_steer", "SAELens"):
            r = fair.bench("topk", side, truth, held_out, args, steps)
            side = side.lower()  # each side printed at once: a timeout keeps it
            tok_s[side] = r["tok_s"]
            print(f"RESULT fair_w{w}_tok_s_{side} {r['tok_s']:.0f}")
            print(f"RESULT fair_w{w}_ev_{side} {r['ev']:.4f}")
            print(f"RESULT fair_w{w}_l0_{side} {r['l0']:.2f}")
            print(f"RESULT fair_w{w}_dead_{side} {r['dead']:.4f}")
        print(f"RESULT fair_w{w}_ratio {tok_s['sae_steer'] / tok_s['saelens']:.2f}")
        del truth, held_out


def stage_precision(option: str, ctx: argparse.Namespace) -> None:
    """sae_steer alone, float32 then ``option``, on the same batches."""
    fair, args = _fair_args(256 if ctx.quick else 10_000, 2048 if ctx.quick else 2 ** 20, ctx)
    truth, held_out, steps = fair.setup(args)
    base = fair.bench("topk", "sae_steer", truth, held_out, args, steps)
    alt = fair.bench("topk", "sae_steer", truth, held_out, args, steps, option)
    print(f"RESULT {option}_d_sae {args.d_sae}")
    print(f"RESULT {option}_tokens {steps * args.batch}")
    print(f"RESULT {option}_tok_s_float32 {base['tok_s']:.0f}")
    print(f"RESULT {option}_tok_s {alt['tok_s']:.0f}")
    print(f"RESULT {option}_speedup {alt['tok_s'] / base['tok_s']:.2f}")
    print(f"RESULT {option}_ev_float32 {base['ev']:.4f}")
    print(f"RESULT {option}_ev {alt['ev']:.4f}")


def stage_profile(ctx: argparse.Namespace) -> None:
    import torch
    import train_step_profile as profile

    size = (dict(d_sae=1024, batch=1024, warmup=2, steps=3) if ctx.quick
            else dict(d_sae=10_000, batch=4096, warmup=10, steps=10))
    args = argparse.Namespace(device=torch.device(ctx.device), arch="topk", top=8, **size)
    out = profile.run(args, "fp32")
    print(f"RESULT profile_step_ms {out['step_ms']:.3f}")
    if "kernels" in out:
        print(f"RESULT profile_kernels_per_step {out['kernels']:.0f}")
        print(f"RESULT profile_syncs_per_step {out['syncs']:.0f}")
    for i, (name, ms) in enumerate(out["top"], 1):
        print(f"RESULT profile_op_{i} {ms:.3f} ms/step {' '.join(name.split())[:100]}")


def shaped_model(device: str, quick: bool):
    """TinyStories-33M's shape (``--quick``: d_model 64, 2 layers), random weights, with the
    toy world's word-level tokenizer built from its validation stories (no cache needed)."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    from sae_steer.lm.texts import load_stories
    from sae_steer.toystories import build_tokenizer
    from sae_steer.toystories.tokenizer import build_vocab

    tokenizer = build_tokenizer(build_vocab(s.tokens for s in load_stories("validation")))
    shape = (dict(n_layers=2, d_model=64, n_heads=4, d_head=16, d_mlp=256) if quick else
             dict(n_layers=4, d_model=768, n_heads=16, d_head=48, d_mlp=3072))
    cfg = HookedTransformerConfig(
        **shape, d_vocab=len(tokenizer), n_ctx=2048, act_fn="gelu_new",
        normalization_type="LN", original_architecture="GPTNeoForCausalLM",
        attn_types=["global", "local"] * (shape["n_layers"] // 2), window_size=256, seed=0,
        device=device, default_prepend_bos=True, model_name="tinystories-33M-shaped-random")
    model = HookedTransformer(cfg, tokenizer=tokenizer)
    return model.eval()


def stage_screen(ctx: argparse.Namespace) -> None:
    from sae_steer import SAE, SelectConfig, SteerConfig, feature_scores, screen_features
    from sae_steer.config import SAEConfig
    from sae_steer.inspect import search_features
    from sae_steer.lm import load_texts

    d_sae, n_features, n_texts, new = (512, 4, 64, 20) if ctx.quick else (10_000, 256, 512, 100)
    model = shaped_model(ctx.device, ctx.quick)
    hook = "blocks.1.hook_resid_post"
    sae = SAE(SAEConfig(d_in=model.cfg.d_model, d_sae=d_sae, architecture="relu",
                        hook_name=hook, model_name=model.cfg.model_name, device=ctx.device),
              seed=0)  # untrained: the screen's cost does not depend on what features mean
    t0 = time.perf_counter()
    search = search_features(model, sae, load_texts("toystories", split="validation",
                                                    n=n_texts), progress=False)
    alive = search.alive()[:n_features]
    t1 = time.perf_counter()
    scores = feature_scores(model, sae, search=search, progress=False)  # output-score order
    t2 = time.perf_counter()
    # ranking at its defaults; a token confirmation and report
    cfg = SelectConfig(n_confirm=1, confirm_rounds=(8,), n_report=8)
    with tempfile.TemporaryDirectory(dir=os.environ.get(TMP_ENV)) as tmp:
        screen = screen_features(model, sae, search, cfg, SteerConfig(max_new_tokens=new),
                                 features=alive, scores=scores, path=tmp, progress=False)
    wall = time.perf_counter() - t2
    stage1 = screen.meta.get("rank_s")  # the ranking stage's own clock; else the call's wall time
    seconds = stage1 if stage1 is not None else wall
    rate = len(screen.stage1) / seconds * 60
    print(f"RESULT screen_d_model {model.cfg.d_model}")
    print(f"RESULT screen_d_vocab {model.cfg.d_vocab}")
    print(f"RESULT screen_d_sae {d_sae}")
    print(f"RESULT screen_search_s {t1 - t0:.1f}")
    print(f"RESULT screen_scores_s {t2 - t1:.1f}")
    print(f"RESULT screen_stage1_features {len(screen.stage1)}")
    print(f"RESULT screen_stage1_s {seconds:.1f}")
    print(f"RESULT screen_stage1_clock {'rank_s' if stage1 is not None else 'wall'}")
    print(f"RESULT screen_features_per_min {rate:.1f}")
    print(f"RESULT screen_all_{d_sae}_minutes_extrapolated {d_sae / rate:.1f}")


def _linked_cache() -> Path:
    """A fresh cache that holds only the offline worlds (linked), so the SAE, the search
    and the rest are made again, not loaded."""
    from sae_steer.fsutil import cache_dir

    real = cache_dir()
    fresh = Path(tempfile.mkdtemp(prefix="cache_", dir=os.environ.get(TMP_ENV)))
    for world in ("toystories", "toystories-neo"):
        (real / world).mkdir(parents=True, exist_ok=True)
        (fresh / world).symlink_to(real / world, target_is_directory=True)
    return fresh


def stage_pipeline(ctx: argparse.Namespace) -> None:
    import resource

    import torch

    os.environ["SAE_STEER_CACHE"] = str(_linked_cache())
    from sae_steer import (SteerConfig, concept_matches, generate_steered, load_model,
                           load_or_search, load_texts, planted_concepts, reference_training,
                           rescore, steer_concept)
    from sae_steer.config import SelectConfig
    from sae_steer.train import train_sae
    from sae_steer.train.pipeline import reference_configs

    cuda = ctx.device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    # the demo's concept search (the preset's defaults); the quick run on few samples
    n_val, choose, new = ((200, SelectConfig.for_concept(n_candidates=2, n_rank=4,
                                                         confirm_rounds=(4,), n_report=4), 30)
                          if ctx.quick else (None, SelectConfig.for_concept(), 100))
    clock, parts = time.perf_counter(), {}

    def lap(part: str) -> None:
        nonlocal clock
        parts[part], clock = time.perf_counter() - clock, time.perf_counter()

    model = load_model("toystories", preset="small", device=ctx.device, progress=False)
    lap("world")
    if ctx.quick:  # the reference recipe for 40 steps on 2,000 texts
        hook, sae_cfg, train_cfg, _ = reference_configs(model, "small", quick=True)
        sae = train_sae(model, load_texts("toystories", n=2000), hook, sae_cfg,
                        train_cfg.replace(n_steps=40, resample_every=20, log_every=20),
                        progress=False)
    else:  # the demo's SAE, trained as it trains it
        sae = reference_training(model, "small", progress=False).sae
    lap("train")
    texts = list(load_texts("toystories", split="validation", n=n_val))
    search = load_or_search(model, sae, lambda: texts, source="gpu_suite/validation",
                            progress=False)
    concept_matches(model, sae, texts, list(planted_concepts().values()))
    lap("search")
    steer = SteerConfig(prompt="Once upon a time", max_new_tokens=new, scale_unit="relative")
    result = steer_concept(model, sae, texts[:400], planted_concepts()["danger"], choose, steer)
    lap("steer")
    one = steer.replace(n_samples=1, resid_norm=result.report.config.resid_norm)
    sample = generate_steered(model, sae, result.choice.feature, result.relative_scale, one)
    rescore(model, sae, [sample.tokens[0]], result.choice.feature,
            max_act=float(search.max_act[result.choice.feature]) or None)
    lap("rescore")
    for part, seconds in parts.items():
        print(f"RESULT pipeline_{part}_s {seconds:.2f}")
    print(f"RESULT pipeline_total_s {sum(parts.values()):.1f}")
    if cuda:
        print(f"RESULT pipeline_peak_mib {torch.cuda.max_memory_allocated() / 2 ** 20:.0f}")
    else:  # ru_maxrss is in KiB on Linux: the process's peak, imports included
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"RESULT pipeline_peak_rss_mib {peak:.0f}")


RUN = {"fair": stage_fair, "tf32": lambda ctx: stage_precision("tf32", ctx),
       "bfloat16": lambda ctx: stage_precision("bfloat16", ctx), "profile": stage_profile,
       "screen": stage_screen, "pipeline": stage_pipeline}


def run_child(name: str, ctx: argparse.Namespace) -> int:
    """Run one stage in this process; an exception prints ``SUITE_ERROR <message>``."""
    import traceback
    import warnings

    import torch

    warnings.filterwarnings("ignore")
    if ctx.threads:
        torch.set_num_threads(ctx.threads)
    try:
        RUN[name](ctx)
    except Exception as e:  # noqa: BLE001 -- the parent records any failure as the stage's
        traceback.print_exc()
        print(f"SUITE_ERROR {type(e).__name__}: {' '.join(str(e).split())[:500]}", flush=True)
        return 1
    return 0


# ---- the parent: one child per stage, each under its own limit ---------------------------
def parse_result(line: str) -> tuple[str, float | str] | None:
    """``RESULT name value...`` -> (name, value): a number when the value is one."""
    parts = line.split(maxsplit=2)
    if len(parts) < 3 or parts[0] != "RESULT":
        return None
    try:
        return parts[1], float(parts[2])
    except ValueError:
        return parts[1], parts[2].strip()


def supervise(cmd: list[str], limit: float, on_result=None, env=None) -> dict:
    """Run ``cmd``, echo its output, collect its RESULT lines; kill it (and anything it
    started) at ``limit`` seconds. Returns status (ok, timeout or error), results, seconds
    and, on an error, its message."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, env=env, bufsize=1)
    lines: queue.Queue = queue.Queue()
    def read() -> None:
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)  # end of output: the child has exited or closed it

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    out = {"status": "ok", "results": {}}
    tail: list[str] = []
    while True:
        left = start + limit - time.perf_counter()
        try:
            line = lines.get(timeout=max(left, 0.01)) if left > 0 else None
        except queue.Empty:
            continue
        if line is None and left <= 0:
            out["status"] = "timeout"
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # the child leads its own group
            except ProcessLookupError:
                pass  # it ended just now
            break
        if line is None:
            break
        print(line, end="", flush=True)
        tail = (tail + [line.rstrip()])[-20:]
        result = parse_result(line)
        if result:
            out["results"][result[0]] = result[1]
            if on_result:
                on_result(out)
    proc.wait()
    reader.join(timeout=5)
    if out["status"] == "ok" and proc.returncode != 0:
        errors = [t[len("SUITE_ERROR "):] for t in tail if t.startswith("SUITE_ERROR ")]
        out.update(status="error", error=(errors or tail[-1:] or [f"exit {proc.returncode}"])[-1])
    out["seconds"] = round(time.perf_counter() - start, 1)
    return out


def device_info(device: str) -> dict:
    import torch

    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    return {"device": gpu if device.startswith("cuda") and gpu else "cpu", "gpu": gpu,
            "torch": torch.__version__, "cpu_count": os.cpu_count()}


def run_suite(names, out: Path, command, limits: dict, meta: dict, env=None) -> dict:
    """Run each stage's ``command(name)`` under ``limits[name]``, merging into ``out`` (an
    existing file keeps the stages not rerun), rewritten after every RESULT and stage."""
    from sae_steer.fsutil import write_json_atomic

    def now() -> str:
        return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")

    doc = json.loads(out.read_text()) if out.is_file() else {}
    doc.update(meta, date=now())
    stages = doc.setdefault("stages", {})
    out.parent.mkdir(parents=True, exist_ok=True)
    for name in names:
        def flush(partial, name=name, started=now()):  # a merged rerun keeps its own date
            stages[name] = {**partial, "limit_s": limits[name], "date": started}
            write_json_atomic(out, doc)

        print(f"\n== stage {name} (limit {limits[name]:g} s)", flush=True)
        flush({"status": "running", "results": {}})
        done = supervise(command(name), limits[name], on_result=flush, env=env)
        flush(done)
        print(f"RESULT {name}_status {done['status']}")
        print(f"RESULT {name}_seconds {done['seconds']}", flush=True)
        if done["status"] == "error":
            print(f"(stage {name}: {done['error']})", flush=True)
    return doc


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="gpu_suite.json", help="the JSON file (merged into)")
    p.add_argument("--stage", choices=STAGES, action="append",
                   help="run only this stage (repeatable); merged into --out")
    p.add_argument("--quick", action="store_true", help="every stage tiny, on the CPU (CI)")
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available; "
                   "cpu with --quick)")
    p.add_argument("--threads", type=int, default=None, help="torch threads in each stage")
    p.add_argument("--limit", action="append", default=[], metavar="STAGE=SECONDS",
                   help="another time limit for a stage")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.device is None:
        import torch

        args.device = "cuda" if torch.cuda.is_available() and not args.quick else "cpu"
    args.limits = dict(QUICK_LIMITS if args.quick else LIMITS)
    for item in args.limit:
        name, _, seconds = item.partition("=")
        if name not in STAGES or not seconds.replace(".", "", 1).isdigit():
            p.error(f"--limit {item!r}: give STAGE=SECONDS with STAGE one of {', '.join(STAGES)}")
        args.limits[name] = float(seconds)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    names = args.stage or list(STAGES)
    if args.child:
        return run_child(names[0], args)
    flags = ["--device", args.device] + ["--quick"] * args.quick + \
        (["--threads", str(args.threads)] if args.threads else [])
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gpu_suite_") as tmp:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "TQDM_DISABLE": "1", TMP_ENV: tmp}
        doc = run_suite(names, Path(args.out),
                        lambda name: [sys.executable, __file__, "--child", "--stage", name,
                                      *flags],
                        args.limits, {**device_info(args.device), "quick": args.quick,
                                      "command": " ".join(sys.argv)}, env=env)
    status = {n: doc["stages"][n]["status"] for n in names}
    print(f"\n{args.out}: " + ", ".join(f"{n} {s}" for n, s in status.items())
          + f" in {time.perf_counter() - start:.0f} s")
    return 0 if set(status.values()) == {"ok"} else 1  # CI's --quick run fails on any other


if __name__ == "__main__":
    sys.exit(main())
