"""Round trips with the real sae-lens package (a dev dependency), both directions."""
from __future__ import annotations

import json
import warnings

import pytest
import torch

from builders import make_sae
from sae_steer.sae import SAE

sae_lens = pytest.importorskip("sae_lens")
from sae_lens.config import SAETrainerConfig  # noqa: E402
from sae_lens.saes.batchtopk_sae import (  # noqa: E402
    BatchTopKTrainingSAE,
    BatchTopKTrainingSAEConfig,
)
from sae_lens.saes.gated_sae import GatedSAE, GatedSAEConfig  # noqa: E402
from sae_lens.saes.jumprelu_sae import (  # noqa: E402
    JumpReLUSAE,
    JumpReLUSAEConfig,
    JumpReLUTrainingSAE,
    JumpReLUTrainingSAEConfig,
)
from sae_lens.saes.matryoshka_batchtopk_sae import (  # noqa: E402
    MatryoshkaBatchTopKTrainingSAE,
    MatryoshkaBatchTopKTrainingSAEConfig,
)
from sae_lens.saes.standard_sae import StandardSAE, StandardSAEConfig  # noqa: E402
from sae_lens.saes.topk_sae import (  # noqa: E402
    TopKSAE,
    TopKSAEConfig,
    TopKTrainingSAE,
    TopKTrainingSAEConfig,
)
from sae_lens.training.sae_trainer import SAETrainer  # noqa: E402

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
        assert torch.equal(ours.encode(x) > 0, theirs.encode(x) > 0)  # the same features fire
        assert torch.allclose(ours.encode(x), theirs.encode(x), atol=1e-5)
        assert torch.allclose(ours(x), theirs(x), atol=1e-5)
        assert torch.allclose(ours.decode(theirs.encode(x)), theirs.decode(theirs.encode(x)),
                              atol=1e-5)


def _random_thresholds(sae, seed=1):
    """Positive thresholds (0.5 to 3) on the scale of ``_randomize``'s pre-activations (std
    ~3), so many features sit between 0 and their threshold and the jump matters."""
    with torch.no_grad():
        sae.threshold.copy_(0.5 + 2.5 * torch.rand(D_SAE, generator=torch.Generator().manual_seed(seed)))
    return sae


def _jump_matters(sae, x):
    """Some pre-activation is positive yet not above its threshold: relu would keep it."""
    with torch.no_grad():
        pre = (x - sae.b_dec * sae.cfg.apply_b_dec_to_input) @ sae.W_enc + sae.b_enc
    return bool(((pre > 0) & (pre <= sae.threshold)).any())


@pytest.mark.parametrize("arch, cls", [("relu", StandardSAE), ("topk", TopKSAE),
                                       ("jumprelu", JumpReLUSAE), ("batchtopk", JumpReLUSAE),
                                       ("matryoshka_batchtopk", JumpReLUSAE)])
@pytest.mark.parametrize("apply_b_dec", [True, False])
def test_sae_lens_loads_ours(tmp_path, arch, cls, apply_b_dec):
    """Ours as SAELens loads them; the BatchTopK pair as JumpReLU, as SAELens saves its own."""
    ours = _ours(arch, apply_b_dec_to_input=apply_b_dec)
    if hasattr(ours, "threshold"):
        _random_thresholds(ours)
        assert _jump_matters(ours, torch.randn(16, D_IN))
    ours.save(tmp_path)
    theirs = sae_lens.SAE.load_from_disk(tmp_path, device="cpu")
    assert type(theirs) is cls
    assert theirs.cfg.metadata.hook_name == "blocks.1.hook_resid_post"
    assert theirs.cfg.metadata.model_name == "toystories/small"
    assert theirs.cfg.apply_b_dec_to_input == apply_b_dec
    if arch == "topk":
        assert theirs.cfg.k == K
    for name, param in [*ours.named_parameters(), *ours.named_buffers()]:  # + threshold
        assert torch.equal(getattr(theirs, name), param), name
    _assert_same_outputs(ours, theirs, torch.randn(16, D_IN))
    if arch in ("batchtopk", "matryoshka_batchtopk"):  # and back here, as what it is
        again = SAE.load(tmp_path, device="cpu")
        assert again.cfg == ours.cfg.replace(device="cpu")
        _assert_same_outputs(again, theirs, torch.randn(16, D_IN))


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


@pytest.mark.parametrize("cls, cfg_cls", [(JumpReLUSAE, JumpReLUSAEConfig),
                                          (JumpReLUTrainingSAE, JumpReLUTrainingSAEConfig)],
                         ids=["inference", "training_checkpoint"])
@pytest.mark.parametrize("apply_b_dec", [True, False])
def test_we_load_sae_lens_jumprelu(tmp_path, cls, cfg_cls, apply_b_dec):
    saved = _random_thresholds(_randomize(cls(cfg_cls(
        d_in=D_IN, d_sae=D_SAE, device="cpu", apply_b_dec_to_input=apply_b_dec))))
    saved.save_model(tmp_path)
    theirs = sae_lens.SAE.load_from_disk(tmp_path, device="cpu")  # as SAELens runs it
    assert type(theirs) is JumpReLUSAE
    ours = SAE.load(tmp_path, device="cpu")
    assert ours.cfg.architecture == "jumprelu"
    assert torch.equal(ours.threshold, theirs.threshold)
    x = torch.randn(64, D_IN)
    assert _jump_matters(ours, x)
    _assert_same_outputs(ours, theirs, x)


def _train_briefly(tmp_path, cls, cfg_cls, **kw):
    """A few steps of SAELens's own trainer on random data, its training checkpoint
    (``save_final_checkpoint``) and its inference save (what its runners write at the end)."""
    g = torch.Generator().manual_seed(0)
    batches = iter(lambda: torch.randn(32, D_IN, generator=g), None)
    sae = cls(cfg_cls(d_in=D_IN, d_sae=D_SAE, device="cpu", **kw))
    trainer = SAETrainer(SAETrainerConfig(
        total_training_samples=32 * 5, train_batch_size_samples=32, lr=1e-2, lr_end=1e-2,
        checkpoint_path=str(tmp_path / "checkpoints"), save_final_checkpoint=True), sae, batches)
    trainer.fit()
    sae.save_inference_model(tmp_path / "inference")
    (checkpoint,) = (tmp_path / "checkpoints").iterdir()
    return sae, checkpoint


@pytest.mark.parametrize("cls, cfg_cls, kw", [
    (BatchTopKTrainingSAE, BatchTopKTrainingSAEConfig, {}),
    (MatryoshkaBatchTopKTrainingSAE, MatryoshkaBatchTopKTrainingSAEConfig,
     {"matryoshka_widths": [6, D_SAE]}),
], ids=["batchtopk", "matryoshka_batchtopk"])
def test_we_load_sae_lens_trained_batchtopk(tmp_path, cls, cfg_cls, kw):
    # topk_threshold_lr 0.5: the threshold (a running mean from 0) reaches its level in 5 steps
    trained, checkpoint = _train_briefly(tmp_path, cls, cfg_cls, k=K, topk_threshold_lr=0.5, **kw)
    threshold = float(trained.topk_threshold)
    assert threshold > 0
    theirs = sae_lens.SAE.load_from_disk(tmp_path / "inference", device="cpu")
    assert type(theirs) is JumpReLUSAE  # SAELens has no BatchTopK inference class
    arch = json.loads((checkpoint / "cfg.json").read_text())["architecture"]
    assert arch == cfg_cls.architecture()  # the training format, with topk_threshold
    x = torch.randn(64, D_IN)
    for path in (tmp_path / "inference", checkpoint):
        ours = SAE.load(path, device="cpu")
        assert ours.cfg.architecture == "jumprelu"
        torch.testing.assert_close(ours.threshold, torch.full((D_SAE,), threshold))
        assert _jump_matters(ours, x), path
        _assert_same_outputs(ours, theirs, x)


def test_we_load_sae_lens_trained_jumprelu(tmp_path):
    """SAELens's own JumpReLU training (its step L0 loss), briefly: both what its runner
    saves at the end and its training checkpoint give SAELens's activations here."""
    trained, checkpoint = _train_briefly(tmp_path, JumpReLUTrainingSAE, JumpReLUTrainingSAEConfig,
                                         jumprelu_init_threshold=0.3, l0_coefficient=0.1)
    assert not torch.equal(trained.threshold, torch.full((D_SAE,), 0.3))  # it learned
    theirs = sae_lens.SAE.load_from_disk(tmp_path / "inference", device="cpu")
    assert type(theirs) is JumpReLUSAE
    x = torch.randn(64, D_IN)
    for path in (tmp_path / "inference", checkpoint):
        ours = SAE.load(path, device="cpu")
        assert ours.cfg.architecture == "jumprelu"
        torch.testing.assert_close(ours.threshold, theirs.threshold)
        assert _jump_matters(ours, x), path
        _assert_same_outputs(ours, theirs, x)


@pytest.mark.parametrize("arch", ["jumprelu", "batchtopk", "matryoshka_batchtopk"])
def test_sae_lens_loads_ours_trained_briefly(tmp_path, arch):
    """Trained here (thresholds learned, the input scale folded in), run the same there."""
    from sae_steer.config import TrainConfig
    from sae_steer.train import train
    g = torch.Generator().manual_seed(0)
    ours = _ours(arch)
    train(ours, iter(lambda: 3 * torch.randn(32, D_IN, generator=g), None),
          TrainConfig(n_steps=8, batch_size=32, log_every=4, l0_coefficient=0.1),
          progress=False)
    assert ours.threshold.abs().max() > 0
    ours.save(tmp_path)
    theirs = sae_lens.SAE.load_from_disk(tmp_path, device="cpu")
    assert type(theirs) is JumpReLUSAE
    x = 3 * torch.randn(64, D_IN)
    _assert_same_outputs(ours, theirs, x)
    assert SAE.load(tmp_path, device="cpu").cfg.architecture == arch


def test_unsupported_sae_lens_architecture_is_named(tmp_path):
    GatedSAE(GatedSAEConfig(d_in=D_IN, d_sae=D_SAE, device="cpu")).save_model(tmp_path)
    with pytest.raises(ValueError, match="'gated' is not supported.*jumprelu"):
        SAE.load(tmp_path, device="cpu")
