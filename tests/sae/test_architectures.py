"""Training the JumpReLU, BatchTopK and Matryoshka BatchTopK SAEs: each fast training
forward equals the plain-autograd reference (losses, metrics and every gradient, the
thresholds' included), the inference threshold, the configs, and short real trainings."""
from __future__ import annotations

import pytest
import torch

from builders import make_sae
from sae_steer.config import SAEConfig, TrainConfig
from sae_steer.sae import SAE, kernels
from sae_steer.sae.model import JUMPRELU_INIT_THRESHOLD
from sae_steer.train.loop import train
from sae_steer.train.resample import resample_dead

D_IN, D_SAE = 12, 48
NEW = ["jumprelu", "batchtopk", "matryoshka_batchtopk"]


def _sae(arch: str, threshold: float | None = None, **kw) -> SAE:
    sae = make_sae(d_in=D_IN, d_sae=D_SAE, arch=arch, k=3, hook_name=None, seed=1,
                   **kw).to(torch.float64)
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.3, generator=torch.Generator().manual_seed(2))
        if threshold is not None:
            sae.threshold.fill_(threshold)
    return sae


def _grads(sae: SAE, out, x: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    sae.zero_grad(set_to_none=True)
    if x is not None:
        x.grad = None
    out.loss.backward()
    grads = {name: p.grad.clone() for name, p in sae.named_parameters() if p.grad is not None}
    if x is not None:
        grads["x"] = x.grad.clone()
    return grads


def _assert_same(fast, ref, g_fast, g_ref):
    for field in ("loss", "mse_loss", "inner_mse_loss", "sparsity_loss", "aux_loss", "l0"):
        torch.testing.assert_close(getattr(fast, field).double(), getattr(ref, field).double(),
                                   msg=field)
    assert torch.equal(fast.fires, ref.fires)
    torch.testing.assert_close(fast.x_hat, ref.x_hat)
    assert set(g_fast) == set(g_ref)
    for name in g_ref:
        torch.testing.assert_close(g_fast[name], g_ref[name], msg=name)


@pytest.mark.parametrize("threshold", [0.05, 1.3], ids=["dense_codes", "sparse_codes"])
def test_jumprelu_kernel_equals_plain_autograd(threshold):
    """Both branches: dense early in training, the listed entries once codes are sparse."""
    sae = _sae("jumprelu", threshold)
    x = torch.randn(60, D_IN, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    x.requires_grad_(True)
    kw = dict(l0_coefficient=0.7, bandwidth=0.5)
    fast = sae.training_forward(x, **kw)
    g_fast = _grads(sae, fast, x)
    ref = kernels.dense_training_forward(sae, x, **kw)
    g_ref = _grads(sae, ref, x)
    _assert_same(fast, ref, g_fast, g_ref)
    assert g_ref["threshold"].abs().max() > 0  # the estimators reached the thresholds
    assert 0 < fast.l0 < (D_SAE / 2 if threshold > 1 else D_SAE)


@pytest.mark.parametrize("arch", ["batchtopk", "matryoshka_batchtopk"])
@pytest.mark.parametrize("with_dead", [False, True])
def test_batchtopk_kernels_equal_plain_autograd(arch, with_dead):
    sae = _sae(arch, matryoshka_widths=(6, 20, D_SAE)) if arch != "batchtopk" else _sae(arch)
    x = torch.randn(40, D_IN, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    x.requires_grad_(True)
    dead = (torch.rand(D_SAE, generator=torch.Generator().manual_seed(5)) < 0.4
            if with_dead else None)
    kw = dict(dead_mask=dead, aux_k_coefficient=0.1, aux_k=5)
    fast = sae.training_forward(x, **kw)
    g_fast = _grads(sae, fast, x)
    ref = kernels.dense_training_forward(sae, x, **kw)
    g_ref = _grads(sae, ref, x)
    _assert_same(fast, ref, g_fast, g_ref)
    assert fast.l0 == 3  # k per token on average over the batch
    assert (fast.aux_loss > 0) == with_dead
    assert (fast.inner_mse_loss > 0) == (arch == "matryoshka_batchtopk")


def test_matryoshka_inner_losses_are_the_prefixes_reconstructions():
    sae = _sae("matryoshka_batchtopk", matryoshka_widths=(6, 20, D_SAE))
    x = torch.randn(30, D_IN, dtype=torch.float64)
    out = sae.training_forward(x)
    with torch.no_grad():
        feats = kernels.batch_topk(sae.pre_activations(x), 3)
        want = sum(((feats[:, :w] @ sae.W_dec[:w] + sae.b_dec - x) ** 2).sum(-1).mean()
                   for w in (6, 20))
    torch.testing.assert_close(out.inner_mse_loss.detach(), want)


def test_batchtopk_threshold_follows_the_smallest_kept_activation():
    sae = _sae("batchtopk")
    x = torch.randn(30, D_IN, dtype=torch.float64)
    with torch.no_grad():
        feats = kernels.batch_topk(sae.pre_activations(x), 3)
        smallest = feats[feats > 0].min()
    assert torch.equal(sae.threshold, torch.zeros(D_SAE, dtype=torch.float64))
    sae.training_forward(x, threshold_lr=0.25)
    torch.testing.assert_close(sae.threshold, torch.full_like(sae.threshold, 0.25 * smallest))
    assert "threshold" not in dict(sae.named_parameters())  # no gradient moves it
    before = sae.threshold.clone()
    sae.normalize_decoder_()  # unit rows already rank pre * ||W_dec[i]||: nothing to scale
    assert torch.equal(sae.threshold, before)


def test_jumprelu_training_keeps_thresholds_non_negative():
    sae = _sae("jumprelu", -0.2)
    sae.training_forward(torch.randn(8, D_IN, dtype=torch.float64), l0_coefficient=1.0)
    assert torch.equal(sae.threshold, torch.zeros_like(sae.threshold))


@pytest.mark.parametrize("widths, message", [
    (None, "needs matryoshka_widths"), ((10, 5, D_SAE), "increasing"),
    ((10, 20), "ending at d_sae"), ((0, D_SAE), "increasing positive")])
def test_matryoshka_widths_are_checked(widths, message):
    with pytest.raises(ValueError, match=message):
        SAEConfig(d_in=4, d_sae=D_SAE, architecture="matryoshka_batchtopk", k=2,
                  matryoshka_widths=widths)


def test_widths_only_for_matryoshka_and_k_for_the_batch_pair():
    with pytest.raises(ValueError, match="matryoshka_widths is for matryoshka_batchtopk only"):
        SAEConfig(d_in=4, d_sae=8, architecture="batchtopk", k=2, matryoshka_widths=(4, 8))
    with pytest.raises(ValueError, match="batchtopk needs 0 < k"):
        SAEConfig(d_in=4, d_sae=8, architecture="batchtopk")
    cfg = SAEConfig(d_in=4, d_sae=8, architecture="matryoshka_batchtopk", k=2,
                    matryoshka_widths=[4, 8])  # a list, as JSON gives it back
    assert cfg.matryoshka_widths == (4, 8)
    assert SAEConfig.from_dict(cfg.to_dict()) == cfg


def test_resampling_restores_a_jumprelu_threshold():
    sae = _sae("jumprelu", 0.7)
    optimizer = torch.optim.Adam(sae.parameters())
    sae.training_forward(torch.randn(16, D_IN, dtype=torch.float64), l0_coefficient=1.0).loss.backward()
    optimizer.step()
    dead = torch.zeros(D_SAE, dtype=torch.bool)
    dead[[1, 5]] = True
    n = resample_dead(sae, optimizer, torch.randn(32, D_IN, dtype=torch.float64), dead,
                      torch.Generator().manual_seed(0))
    assert n == 2
    assert (sae.threshold[[1, 5]] == JUMPRELU_INIT_THRESHOLD).all()
    assert (optimizer.state[sae.threshold]["exp_avg"][[1, 5]] == 0).all()


def _planted(n_batches: int, scale: float = 5.0):
    """Sparse combinations of 96 random directions, far from unit scale (so the input
    scaling and its fold into the biases and the thresholds matter)."""
    g = torch.Generator().manual_seed(0)
    basis = torch.randn(96, D_IN, generator=g)
    for _ in range(n_batches):
        codes = (torch.rand(256, 96, generator=g) < 0.04) * torch.rand(256, 96, generator=g)
        yield scale * codes @ basis


@pytest.mark.parametrize("arch", NEW)
def test_each_new_architecture_trains(arch):
    kw = {"matryoshka_widths": (12, D_SAE)} if arch == "matryoshka_batchtopk" else {}
    sae = SAE(SAEConfig(d_in=D_IN, d_sae=D_SAE, architecture=arch,
                        k=4 if arch != "jumprelu" else None, device="cpu", **kw), seed=0)
    result = train(sae, _planted(150), TrainConfig(n_steps=150, batch_size=256, log_every=50,
                                                     l0_coefficient=0.1), progress=False)
    first, last = result.history[0], result.history[-1]
    assert last["explained_variance"] > max(0.5, first["explained_variance"])
    assert ("l0_coefficient" in last) == (arch == "jumprelu")
    # the thresholds came back to the inputs' own scale with the biases: the inference
    # encoder's L0 on raw inputs is the one training saw (batchtopk: about k)
    x = next(_planted(1))
    l0 = (sae.encode(x) > 0).sum(-1).float().mean().item()
    assert 0.5 * last["l0"] < l0 < 2 * last["l0"] + 1
    assert (sae.threshold > 0).all()


def test_train_config_sparsity_coefficient_per_architecture():
    cfg = TrainConfig(l1_coefficient=3.0, l0_coefficient=0.2)
    assert [cfg.sparsity_coefficient(a) for a in ("relu", "jumprelu", "topk", "batchtopk")] == [
        3.0, 0.2, 0.0, 0.0]
    with pytest.raises(ValueError, match="jumprelu_bandwidth must be a positive"):
        TrainConfig(jumprelu_bandwidth=0)
    with pytest.raises(ValueError, match="topk_threshold_lr must be in"):
        TrainConfig(topk_threshold_lr=1.5)


def test_batch_top_finds_the_whole_batch_top_also_when_one_token_dominates():
    from sae_steer.sae.batchtopk_kernel import ROW_CANDIDATES, batch_top
    g = torch.Generator().manual_seed(6)
    pre = torch.randn(30, 200, generator=g, dtype=torch.float64)
    for dominated in (False, True):
        if dominated:  # token 7 alone holds more than its candidates' worth of the top
            pre[7] += 100.0
        vals, flat = batch_top(pre, 3)
        want_vals, want_flat = pre.view(-1).topk(90)
        assert torch.equal(flat.sort().values, want_flat.sort().values)
        torch.testing.assert_close(vals.sort().values, want_vals.sort().values)
    assert 3 * ROW_CANDIDATES < 90  # the dominated case needed the fallback
