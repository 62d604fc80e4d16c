"""JumpReLU SAEs: hand-set thresholds, the relu/topk parameters left as they were, the
threshold through decoder normalisation and save/load. SAELens parity: test_sae_lens_compat;
training: test_architectures."""
from __future__ import annotations

import warnings

import pytest
import torch
from safetensors.torch import load_file, save_file

from builders import identity_sae, make_sae
from sae_steer.config import SAEConfig
from sae_steer.sae import SAE
from sae_steer.sae.model import JUMPRELU_INIT_THRESHOLD


def test_identity_jumprelu_zeroes_what_does_not_exceed_the_threshold():
    sae = identity_sae("jumprelu")
    with torch.no_grad():
        sae.threshold.copy_(torch.tensor([0.5, -1.0, 3.0, 0.6]))
    x = torch.tensor([[1.0, -0.5, 3.0, 0.5]])
    # 1 > 0.5 kept; -0.5 > -1 but relu'd to 0; 3 is not > 3; 0.5 is not > 0.6
    assert torch.equal(sae.encode(x), torch.tensor([[1.0, 0.0, 0.0, 0.0]]))
    assert torch.equal(sae(x), torch.tensor([[1.0, 0.0, 0.0, 0.0]]))


def test_fresh_jumprelu_is_the_relu_sae_of_the_same_seed_above_its_initial_threshold():
    cfg = dict(d_in=6, d_sae=20, device="cpu")
    relu = SAE(SAEConfig(**cfg), seed=3)
    jump = SAE(SAEConfig(architecture="jumprelu", **cfg), seed=3)
    assert torch.equal(jump.threshold, torch.full((20,), JUMPRELU_INIT_THRESHOLD))
    x = torch.randn(10, 6)
    feats = relu.encode(x)
    assert torch.equal(jump.encode(x), feats * (feats > JUMPRELU_INIT_THRESHOLD))


@pytest.mark.parametrize("arch", ["relu", "topk"])
def test_relu_and_topk_have_no_threshold(arch):
    """Their state dicts, and so their files and cache keys, are what they were."""
    sae = make_sae(arch=arch)
    assert list(sae.state_dict()) == ["W_enc", "b_enc", "W_dec", "b_dec"]
    assert not hasattr(sae, "threshold")


def test_normalize_decoder_scales_the_thresholds_and_keeps_the_function():
    sae = make_sae(d_in=5, d_sae=9, arch="jumprelu").to(torch.float64)
    with torch.no_grad():
        sae.W_dec.mul_(torch.linspace(0.1, 3.0, 9, dtype=torch.float64)[:, None])
        sae.threshold.uniform_(0.05, 0.3)
    x = torch.randn(50, 5, dtype=torch.float64)
    feats, out = sae.encode(x), sae(x)
    assert ((feats == 0) & (sae.pre_activations(x) > 0)).any()  # the jump matters here
    norms = sae.W_dec.norm(dim=1)
    threshold = sae.threshold.detach().clone()
    sae.normalize_decoder_()
    torch.testing.assert_close(sae.threshold.detach(), threshold * norms)
    assert torch.equal(sae.encode(x) > 0, feats > 0)  # the same features fire
    torch.testing.assert_close(sae(x), out)


def test_config_lists_the_architectures():
    with pytest.raises(ValueError, match="one of 'relu', 'topk', 'jumprelu', 'batchtopk', "
                       "'matryoshka_batchtopk', got 'gated'"):
        SAEConfig(d_in=4, d_sae=4, architecture="gated")


def test_threshold_file_missing_or_log_threshold(tmp_path):
    sae = make_sae(d_in=4, d_sae=6, arch="jumprelu")
    with torch.no_grad():
        sae.threshold.uniform_(0.1, 1.0)
    sae.save(tmp_path)
    file = tmp_path / "sae_weights.safetensors"
    tensors = load_file(file)
    threshold = tensors.pop("threshold")
    save_file(tensors, file)
    with pytest.raises(ValueError, match=r"missing \['threshold'\]"):
        SAE.load(tmp_path, device="cpu")
    # older SAELens JumpReLU checkpoints store log(threshold); SAELens exponentiates it
    save_file({**tensors, "log_threshold": threshold.log()}, file)
    torch.testing.assert_close(SAE.load(tmp_path, device="cpu").threshold, threshold)


def test_a_loaded_sae_reads_without_grad(tmp_path):
    """``float(sae.threshold.min())`` on a loaded SAE: no grad, so no torch warning."""
    make_sae(arch="jumprelu").save(tmp_path / "sae")
    sae = SAE.load(tmp_path / "sae", device="cpu")
    assert not any(p.requires_grad for p in sae.parameters())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert float(sae.threshold.min()) == pytest.approx(JUMPRELU_INIT_THRESHOLD)
        assert sae.feature_direction(0).norm().item() > 0
