"""The CUDA paths of training: run where a CUDA device exists, skipped (with the reason)
elsewhere. The GPU figures themselves come from ``bench/train_vs_saelens.py --device cuda``;
these tests say the paths work and agree with the CPU."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sae_steer.config import SAEConfig, TrainConfig
from sae_steer.sae import SAE
from sae_steer.train.loop import explained_variance, train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="no CUDA device here: the CUDA training paths are "
                                "tested on a machine with a GPU")

D_IN, D_SAE = 32, 128
ROOT = Path(__file__).resolve().parents[2]


def _batches(n: int, device: str, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    dirs = torch.randn(48, D_IN, generator=g)
    dirs /= dirs.norm(dim=1, keepdim=True)
    for _ in range(n):
        coef = torch.rand(256, 48, generator=g) * (torch.rand(256, 48, generator=g) < 0.1)
        yield (4 * coef @ dirs).to(device)


ARCHITECTURES = ["relu", "topk", "jumprelu", "batchtopk", "matryoshka_batchtopk"]


def _shape(arch: str, d_sae: int) -> dict:
    return {"architecture": arch, "k": None if arch in ("relu", "jumprelu") else 4,
            "matryoshka_widths": (d_sae // 4, d_sae) if arch == "matryoshka_batchtopk" else None}


def _train(arch: str, device: str, *, dtype: str = "float32", tf32: bool = False,
           n_steps: int = 60) -> SAE:
    sae = SAE(SAEConfig(d_in=D_IN, d_sae=D_SAE, device=device, dtype=dtype, **_shape(arch, D_SAE)),
              seed=0)
    cfg = TrainConfig(n_steps=n_steps, batch_size=256, lr=3e-3, l1_coefficient=1.0,
                      l0_coefficient=0.1,
                      dead_after_steps=10, resample_every=20, log_every=n_steps, tf32=tf32)
    train(sae, _batches(n_steps, device), cfg, progress=False)
    return sae


def _ev(sae: SAE) -> float:
    x = next(_batches(1, str(sae.device), seed=1))
    with torch.no_grad():
        return explained_variance(x, sae(x))


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_cuda_training_agrees_with_cpu(arch):
    cpu, gpu = _train(arch, "cpu"), _train(arch, "cuda")
    for name, p in cpu.named_parameters():
        torch.testing.assert_close(getattr(gpu, name).cpu(), p, atol=2e-3, rtol=2e-3,
                                   msg=f"{arch} {name}")
    assert abs(_ev(cpu) - _ev(gpu)) < 1e-3


@pytest.mark.parametrize("arch", ["relu", "topk"])
def test_tf32_is_switched_on_only_around_the_sae(arch):
    before = torch.backends.cuda.matmul.fp32_precision
    sae = _train(arch, "cuda", tf32=True)
    assert torch.backends.cuda.matmul.fp32_precision == before  # the user's model untouched
    assert abs(_ev(sae) - _ev(_train(arch, "cuda"))) < 0.02


@pytest.mark.parametrize("arch", ["relu", "topk"])
def test_bfloat16_sae_trains_on_cuda(arch):
    sae = _train(arch, "cuda", dtype="bfloat16")
    assert sae.dtype == torch.bfloat16
    assert all(torch.isfinite(p).all() for p in sae.parameters())
    assert _ev(sae) > _ev(_train(arch, "cuda")) - 0.05


def test_fair_bench_runs_on_cuda():
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "train_vs_saelens.py"),
                          "--quick", "--device", "cuda", "--options", "tf32", "bfloat16"],
                         capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    for name in ("fair_device cuda", "fair_ratio_topk", "fair_ev_gap_topk", "fair_dead_topk",
                 "fair_ev_gap_topk_tf32", "fair_ev_gap_relu_bfloat16"):
        assert f"RESULT {name}" in out.stdout, out.stdout[-2000:]


@pytest.mark.parametrize("arch", ARCHITECTURES)
@pytest.mark.parametrize("dead", [False, True])
def test_cuda_kernels_match_plain_autograd(arch, dead):
    """The sparse kernels (embedding_bag, sampled_addmm, CSR) on CUDA give the plain-autograd
    losses and gradients, in float64: a CUDA-only kernel bug would show here first."""
    from sae_steer.sae import kernels

    torch.manual_seed(0)
    sae = SAE(SAEConfig(d_in=12, d_sae=40, device="cuda", dtype="float64", **_shape(arch, 40)),
              seed=0)
    with torch.no_grad():
        for p in sae.parameters():
            p.copy_(torch.randn_like(p))
        if arch == "jumprelu":  # >= 0, as training keeps them; dead: most codes sparse
            sae.threshold.abs_().add_(2.0 if dead else 0.0)
    x = torch.randn(64, 12, dtype=torch.float64, device="cuda")
    kw = ({"dead_mask": torch.rand(40, device="cuda") < 0.5, "aux_k_coefficient": 0.3,
           "aux_k": 6} if arch not in ("relu", "jumprelu") and dead else {"l1_coefficient": 0.7})
    if arch == "relu" and dead:
        kw = {"l1_coefficient": 0.0}
    if arch == "jumprelu":
        kw = {"l0_coefficient": 0.7, "bandwidth": 0.5}
    grads = []
    for fn in (lambda: kernels.dense_training_forward(sae, x, **kw),
               lambda: sae.training_forward(x, **kw)):
        sae.zero_grad(set_to_none=True)
        out = fn()
        out.loss.backward()
        grads.append((out, [p.grad.clone() for p in sae.parameters()]))
    (ref, g_ref), (fast, g_fast) = grads
    torch.testing.assert_close(fast.loss, ref.loss)
    assert torch.equal(fast.fires, ref.fires)
    for (name, _), a, b in zip(sae.named_parameters(), g_fast, g_ref):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-8, msg=name)
