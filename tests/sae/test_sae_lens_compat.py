"""Round trips with the real sae-lens package (a dev dependency), both directions."""
from __future__ import annotations

import warnings

import pytest
import torch

from builders import make_sae
from sae_steer.sae import SAE

sae_lens = pytest.importorskip("sae_lens")
from sae_lens.saes.jumprelu_sae import JumpReLUSAE, JumpReLUSAEConfig  # noqa: E402
from sae_lens.saes.standard_sae import StandardSAE, StandardSAEConfig  # noqa: E402
from sae_lens.saes.topk_sae import (  # noqa: E402
    TopKSAE,
    TopKSAEConfig,
    TopKTrainingSAE,
    TopKTrainingSAEConfig,
)

D_IN, D_SAE, K = 8, 24, 4


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _randomize(module, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    return module


def _ours(arch, **kw):
    return _randomize(make_sae(d_in=D_IN, d_sae=D_SAE, arch=arch, k=K,
                               hook_name="blocks.1.hook_resid_post", model_name="toystories/small",
                               context_size=64, dataset_path="toystories", **kw))


def _assert_same_outputs(ours: SAE, theirs, x):
    with torch.no_grad():
        assert torch.allclose(ours.encode(x), theirs.encode(x), atol=1e-5)
        assert torch.allclose(ours(x), theirs(x), atol=1e-5)


@pytest.mark.parametrize("arch, cls", [("relu", StandardSAE), ("topk", TopKSAE)])
@pytest.mark.parametrize("apply_b_dec", [True, False])
def test_sae_lens_loads_ours(tmp_path, arch, cls, apply_b_dec):
    ours = _ours(arch, apply_b_dec_to_input=apply_b_dec)
    ours.save(tmp_path)
    theirs = sae_lens.SAE.load_from_disk(tmp_path, device="cpu")
    assert type(theirs) is cls
    assert theirs.cfg.metadata.hook_name == "blocks.1.hook_resid_post"
    assert theirs.cfg.metadata.model_name == "toystories/small"
    assert theirs.cfg.apply_b_dec_to_input == apply_b_dec
    if arch == "topk":
        assert theirs.cfg.k == K
    for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
        assert torch.equal(getattr(theirs, name), getattr(ours, name)), name
    _assert_same_outputs(ours, theirs, torch.randn(16, D_IN))


def test_we_load_sae_lens_standard(tmp_path):
    theirs = _randomize(StandardSAE(StandardSAEConfig(d_in=D_IN, d_sae=D_SAE, device="cpu")))
    theirs.save_model(tmp_path)
    ours = SAE.load(tmp_path, device="cpu")
    assert ours.cfg.architecture == "relu"
    _assert_same_outputs(ours, theirs, torch.randn(16, D_IN))


@pytest.mark.parametrize("rescale", [False, True])
def test_we_load_sae_lens_topk(tmp_path, rescale):
    theirs = _randomize(TopKSAE(TopKSAEConfig(d_in=D_IN, d_sae=D_SAE, k=K, device="cpu",
                                              rescale_acts_by_decoder_norm=rescale)))
    theirs.save_model(tmp_path)  # W_dec rows are not unit norm: rescaling matters
    ours = SAE.load(tmp_path, device="cpu")
    assert ours.cfg.architecture == "topk" and ours.cfg.k == K
    _assert_same_outputs(ours, theirs, torch.randn(16, D_IN))


def test_we_load_sae_lens_trained_topk_inference_save(tmp_path):
    trainer_sae = _randomize(TopKTrainingSAE(TopKTrainingSAEConfig(
        d_in=D_IN, d_sae=D_SAE, k=K, device="cpu")))
    trainer_sae.save_inference_model(tmp_path)  # what SAELens's trainer writes at the end
    theirs = sae_lens.SAE.load_from_disk(tmp_path, device="cpu")
    ours = SAE.load(tmp_path, device="cpu")
    _assert_same_outputs(ours, theirs, torch.randn(16, D_IN))
    with torch.no_grad():
        x = torch.randn(16, D_IN)
        assert torch.allclose(ours(x), trainer_sae(x), atol=1e-5)


def test_unsupported_sae_lens_architecture_is_named(tmp_path):
    JumpReLUSAE(JumpReLUSAEConfig(d_in=D_IN, d_sae=D_SAE, device="cpu")).save_model(tmp_path)
    with pytest.raises(ValueError, match="jumprelu"):
        SAE.load(tmp_path, device="cpu")
