"""The fair bench (``bench/train_vs_saelens.py``) with the newer architectures, at a tiny
size on CPU: SAELens's side of jumprelu, batchtopk and matryoshka_batchtopk, the inference
encoder it is measured with, and the whole bench once sae_steer trains them."""
from __future__ import annotations

import importlib.util
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sae_steer.config import sae as sae_config

ROOT = Path(__file__).resolve().parents[2]
NEW = ("jumprelu", "batchtopk", "matryoshka_batchtopk")


@pytest.fixture(scope="module")
def fair():
    spec = importlib.util.spec_from_file_location(
        "train_vs_saelens", ROOT / "bench" / "train_vs_saelens.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_matryoshka_widths_nest_to_d_sae(fair):
    assert fair.matryoshka_widths(10_000) == (1250, 2500, 5000, 10_000)
    assert fair.matryoshka_widths(1024) == (128, 256, 512, 1024)


@pytest.mark.parametrize("matryoshka", [False, True])
def test_batchtopk_inference_encoder_is_the_saved_jumprelu(fair, tmp_path, matryoshka):
    """The bench measures SAELens's BatchTopK / Matryoshka SAEs as SAELens saves them: a
    JumpReLU SAE whose every threshold is the learned ``topk_threshold``."""
    from sae_lens import SAE as LensSAE

    torch.manual_seed(0)
    if matryoshka:
        sae = fair.MatryoshkaBatchTopKTrainingSAE(fair.MatryoshkaBatchTopKTrainingSAEConfig(
            d_in=16, d_sae=64, k=4, matryoshka_widths=[16, 32, 64]))
    else:
        sae = fair.BatchTopKTrainingSAE(fair.BatchTopKTrainingSAEConfig(d_in=16, d_sae=64, k=4))
    with torch.no_grad():
        sae.W_dec.mul_(torch.rand(64, 1) * 2 + 0.5)  # uneven decoder norms, as after training
        sae.b_enc.normal_(0, 0.1)
        sae.topk_threshold.fill_(0.05)
    sae.save_inference_model(tmp_path)
    saved = LensSAE.load_from_disk(tmp_path)
    x = torch.randn(256, 16)
    with torch.no_grad():
        ours = fair.batchtopk_inference_encode(sae)(x)
        torch.testing.assert_close(ours, saved.encode(x), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(sae.decode(ours), saved.decode(saved.encode(x)),
                                   atol=1e-5, rtol=1e-5)
    assert 0 < (ours > 0).float().mean() < 1


@pytest.mark.parametrize("arch", NEW)
def test_saelens_side_of_the_new_architectures_runs(fair, arch):
    torch.set_num_threads(1)
    args = fair.parse_args(["--quick", "--device", "cpu", "--d-sae", "128", "--batch", "256",
                            "--arch", "relu"])
    truth = fair.GroundTruth(args.n_true, seed=12345, device=args.device, keep_bytes=10 ** 8)
    held_out = [truth.generate(10_000_000, 512)]
    out = fair.bench(arch, "SAELens", truth, held_out, args, steps=4)
    assert out["steps"] == 4 and math.isfinite(out["ev"]) and 0 <= out["dead"] <= 1
    assert 0 < out["l0"] <= 128


@pytest.mark.skipif(not set(NEW) <= set(getattr(sae_config, "TRAINED_HERE",
                                                    sae_config.ARCHITECTURES)),
                    reason="sae_steer does not train the new architectures yet")
def test_fair_bench_runs_the_new_architectures():
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "train_vs_saelens.py"), "--quick",
         "--device", "cpu", "--threads", "1", "--arch", "new", "--d-sae", "128",
         "--batch", "256", "--tokens", "1536", "--held-out", "1024",
         "--calibrate-l0", "30", "--calib-probes", "2"],
        capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    for arch in NEW:
        for name in ("ratio", "ev_gap", "l0", "dead", "recovery"):
            assert f"RESULT fair_{name}_{arch} " in out.stdout, out.stdout[-2000:]
    assert "RESULT fair_l0_coefficient_jumprelu " in out.stdout
    assert "calibrating SAELens jumprelu, probe 1" in out.stdout
