"""Training from the activation store vs re-harvesting the model every epoch (CPU, fp32).

    python bench/train_store.py            # 1,000 texts, 4 epochs
    python bench/train_store.py --quick    # 200 texts, 3 epochs, smoke run

The offline world (``load_model("toystories")``, its default hook, d_model 64) and a small
ReLU SAE (256 features). Both sides train the same number of steps over the same texts
for the same number of epochs:

- store: ``TrainConfig(epochs=E)``: the texts are harvested once into the activation
  store, then E whole-store shuffles feed the loop;
- re-harvest: ``store="stream"`` over the texts repeated E times, so the model runs again
  every epoch (the only way to train several epochs before the store existed).

Training tokens/s = steps x batch_size / wall time of ``fit_sae`` (harvest included on
both sides), best of two interleaved runs after a warm-up. Prints
``RESULT store_epoch_speedup <x>`` (store / re-harvest).
"""
from __future__ import annotations

import argparse
import itertools
import time

from sae_steer.config import SAEConfig, TrainConfig
from sae_steer.lm import default_hook_name, load_model, load_texts
from sae_steer.train.pipeline import fit_sae


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small smoke run")
    args = parser.parse_args()
    n_texts, epochs = (200, 3) if args.quick else (1000, 4)
    model = load_model("toystories", device="cpu", progress=False)
    hook = default_hook_name(model)
    texts = load_texts("toystories", n=n_texts)
    sae_cfg = SAEConfig(d_in=model.cfg.d_model, d_sae=4 * model.cfg.d_model, device="cpu")
    base = dict(batch_size=1024, lr=1e-3, lr_warmup_steps=5, lr_decay_steps=5,
                l1_coefficient=2.0, l1_warmup_steps=10, resample_every=0, context_size=128,
                model_batch_size=64, buffer_batches=4, log_every=10_000, eval_sequences=0)

    def run_store():
        return fit_sae(model, texts, hook, sae_cfg, TrainConfig(epochs=epochs, **base),
                       progress=False)

    def run_again(steps):
        return fit_sae(model, itertools.chain.from_iterable([texts] * epochs), hook, sae_cfg,
                       TrainConfig(n_steps=steps, store="stream", **base), progress=False)

    fit_sae(model, texts[:50], hook, sae_cfg, TrainConfig(n_steps=10, **base),
            progress=False)  # warm-up
    t_store, t_again = [], []
    for _ in range(2):  # interleaved, best of two: load from other users hits both alike
        start = time.perf_counter()
        stored = run_store()
        t_store.append(time.perf_counter() - start)
        steps = stored.steps
        start = time.perf_counter()
        again = run_again(steps)
        t_again.append(time.perf_counter() - start)
        assert again.steps == steps, (again.steps, steps)
    t_store, t_again = min(t_store), min(t_again)
    tok = steps * base["batch_size"]
    print(f"{n_texts} texts, {stored.harvest['activations']:,} activations, {epochs} epochs, "
          f"{steps} steps of {base['batch_size']}: store {t_store:.1f} s "
          f"({tok / t_store:,.0f} tok/s), re-harvest {t_again:.1f} s ({tok / t_again:,.0f} tok/s)")
    print(f"RESULT store_tokens_per_s {tok / t_store:.0f}")
    print(f"RESULT reharvest_tokens_per_s {tok / t_again:.0f}")
    print(f"RESULT store_epoch_speedup {t_again / t_store:.2f}")


if __name__ == "__main__":
    main()
