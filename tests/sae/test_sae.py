"""SAE: hand-built weights, invariants, fast-path gradients, save/load and bad inputs."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from builders import identity_sae, make_sae
from sae_steer.config import SAEConfig
from sae_steer.sae import SAE
from sae_steer.sae import io as sae_io
from sae_steer.sae import kernels as sae_kernels
from sae_steer.sae import relu_kernel


def randomize(sae: SAE, seed=0) -> SAE:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in sae.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype))
    return sae


# ---- hand-built weights: exact expected values -------------------------------------------
def test_identity_relu_encode_decode_exact():
    sae = identity_sae("relu")
    x = torch.tensor([[1.0, -2.0, 3.0, 0.5]])
    assert torch.equal(sae.encode(x), torch.tensor([[1.0, 0.0, 3.0, 0.5]]))
    assert torch.equal(sae.decode(sae.encode(x)), torch.tensor([[1.0, 0.0, 3.0, 0.5]]))
    assert torch.equal(sae(x), sae.decode(sae.encode(x)))


def test_identity_with_b_dec_subtracts_then_adds_it():
    sae = identity_sae("relu", b_dec=[1.0, 1.0, 1.0, 1.0])
    x = torch.tensor([3.0, 0.0, 1.5, -1.0])
    # feats = relu(x - 1) = [2, 0, 0.5, 0]; x_hat = feats + 1
    assert torch.equal(sae.encode(x), torch.tensor([2.0, 0.0, 0.5, 0.0]))
    assert torch.equal(sae(x), torch.tensor([3.0, 1.0, 1.5, 1.0]))


def test_identity_topk_keeps_the_k_largest():
    sae = identity_sae("topk", k=2)
    x = torch.tensor([[3.0, -1.0, 2.0, 5.0], [-1.0, -2.0, 0.5, -3.0]])
    # row 2: top-2 pre-activations are 0.5 and -1.0; the negative one is ReLU'd to 0
    assert torch.equal(sae.encode(x), torch.tensor([[3.0, 0.0, 0.0, 5.0],
                                                    [0.0, 0.0, 0.5, 0.0]]))


def test_encode_accepts_any_leading_shape():
    sae = randomize(make_sae(arch="topk", d_in=4, d_sae=6, k=3))
    x = torch.randn(2, 5, 4)
    assert sae.encode(x).shape == (2, 5, 6)
    assert sae(x).shape == (2, 5, 4)
    assert torch.allclose(sae(x)[1, 2], sae(x[1, 2]))


def test_topk_keeps_exactly_k():
    sae = randomize(make_sae(arch="topk", d_in=8, d_sae=50, k=7))
    with torch.no_grad():
        sae.b_enc.fill_(100.0)  # every pre-activation positive: exactly k survive ReLU
    feats = sae.encode(torch.randn(64, 8))
    assert torch.all((feats > 0).sum(-1) == 7)


def test_wrong_width_input_is_rejected():
    with pytest.raises(ValueError, match="d_in=4"):
        make_sae(d_in=4, d_sae=4).encode(torch.randn(3, 5))


# ---- feature_direction ------------------------------------------------------------------
def test_feature_direction_is_the_decoder_row_not_decode_onehot():
    sae = randomize(make_sae(arch="relu", d_in=4, d_sae=6))
    onehot = torch.zeros(6)
    onehot[2] = 1.0
    assert torch.equal(sae.feature_direction(2), sae.W_dec[2])
    assert torch.allclose(sae.decode(onehot), sae.W_dec[2] + sae.b_dec)
    assert not torch.allclose(sae.feature_direction(2), sae.decode(onehot))


@pytest.mark.parametrize("index", [np.int64(3), torch.tensor(3), 3])
def test_feature_direction_accepts_integer_scalars(index):
    sae = randomize(make_sae(arch="relu", d_in=4, d_sae=6))
    assert torch.equal(sae.feature_direction(index), sae.W_dec[3])


def test_feature_direction_out_of_range_message():
    sae = make_sae(arch="relu", d_in=4, d_sae=10000)
    with pytest.raises(ValueError) as err:
        sae.feature_direction(12000)
    assert str(err.value) == "feature 12000 is out of range: this SAE has 10000 features (0..9999)"
    with pytest.raises(ValueError, match="out of range"):
        sae.feature_direction(-1)


@pytest.mark.parametrize("bad", [1.5, "3", True, torch.tensor([1, 2]), torch.tensor(1.0)])
def test_feature_direction_rejects_non_integers(bad):
    with pytest.raises(ValueError, match="integer"):
        make_sae().feature_direction(bad)


# ---- initialisation ------------------------------------------------------------------------
@pytest.mark.parametrize("arch, d_sae, shrink", [("relu", 64, 0.25), ("relu", 16, 1.0),
                                                 ("topk", 64, 1.0)])
def test_init_ties_the_encoder_and_shrinks_it_for_relu(arch, d_sae, shrink):
    """Unit decoder rows, W_enc = W_dec.T, shrunk by min(1, 2 d_in / d_sae) for relu only."""
    sae = SAE(SAEConfig(d_in=8, d_sae=d_sae, architecture=arch, k=3 if arch == "topk" else None,
                        device="cpu"), seed=0)
    assert torch.allclose(sae.W_dec.norm(dim=1), torch.ones(d_sae), atol=1e-6)
    assert torch.allclose(sae.W_enc, sae.W_dec.T * shrink)
    assert not sae.b_enc.any() and not sae.b_dec.any()


def test_init_parameters_never_share_storage():
    sae = SAE(SAEConfig(d_in=1, d_sae=8, device="cpu"), seed=0)  # W_dec.T already contiguous
    assert sae.W_enc.data_ptr() != sae.W_dec.data_ptr()
    assert torch.allclose(sae.W_dec.abs(), torch.ones(8, 1))


# ---- decoder normalisation ----------------------------------------------------------------
@pytest.mark.parametrize("arch", ["relu", "topk"])
def test_normalize_decoder_gives_unit_rows(arch):
    sae = randomize(make_sae(arch=arch, d_in=5, d_sae=9, k=3))
    with torch.no_grad():
        sae.W_dec.mul_(torch.linspace(0.1, 3.0, 9)[:, None])
    sae.normalize_decoder_()
    assert torch.allclose(sae.W_dec.norm(dim=1), torch.ones(9), atol=1e-6)


def test_normalize_decoder_leaves_relu_function_unchanged():
    sae = randomize(make_sae(arch="relu", d_in=5, d_sae=9))
    with torch.no_grad():
        sae.W_dec.mul_(torch.linspace(0.1, 3.0, 9)[:, None])
    x = torch.randn(20, 5)
    before = sae(x)
    sae.normalize_decoder_()
    assert torch.allclose(sae(x), before, atol=1e-5)


# ---- fast training paths == dense autograd reference ---------------------------------------
def _grads(sae: SAE, x: torch.Tensor, fn) -> tuple:
    sae.zero_grad(set_to_none=True)
    x = x.detach().clone().requires_grad_(True)
    out = fn(x)
    out.loss.backward()
    return out, [p.grad.clone() for p in sae.parameters()] + [x.grad.clone()]


def _assert_same(sae, x, **kw):
    ref, g_ref = _grads(sae, x, lambda x: sae_kernels.dense_training_forward(sae, x, **kw))
    fast, g_fast = _grads(sae, x, lambda x: sae.training_forward(x, **kw))
    for name in ("loss", "mse_loss", "sparsity_loss", "aux_loss", "l0"):
        assert torch.allclose(getattr(fast, name).double(), getattr(ref, name).double()), name
    assert torch.equal(fast.fires, ref.fires)
    assert torch.allclose(fast.x_hat, ref.x_hat)
    names = [n for n, _ in sae.named_parameters()] + ["x"]
    for name, a, b in zip(names, g_fast, g_ref):
        assert torch.allclose(a, b, atol=1e-10), f"grad {name} differs"


def _small(arch, apply_b_dec=True, seed=0):
    sae = randomize(make_sae(arch=arch, d_in=12, d_sae=40, k=5, dtype="float64",
                             apply_b_dec_to_input=apply_b_dec), seed)
    with torch.no_grad():
        sae.W_dec.mul_(torch.rand(40, 1, dtype=torch.float64) + 0.5)  # non-unit rows
    return sae


@pytest.mark.parametrize("apply_b_dec", [True, False])
@pytest.mark.parametrize("dead", ["none", "some", "few", "all"])
def test_topk_sparse_gradients_match_dense(apply_b_dec, dead):
    torch.manual_seed(1)
    sae = _small("topk", apply_b_dec)
    dead_mask = {"none": None, "some": torch.rand(40) < 0.5,
                 "few": torch.arange(40) < 3,  # fewer dead than aux_k: scaled-down loss
                 "all": torch.ones(40, dtype=torch.bool)}[dead]
    x = torch.randn(30, 12, dtype=torch.float64)
    _assert_same(sae, x, dead_mask=dead_mask, aux_k_coefficient=0.3, aux_k=6)


@pytest.mark.parametrize("apply_b_dec", [True, False])
@pytest.mark.parametrize("sparse", [True, False])
@pytest.mark.parametrize("codes", ["random", "mostly_silent"])
def test_relu_gradients_match_dense(monkeypatch, apply_b_dec, sparse, codes):
    """Both branches of the relu kernel equal plain autograd; "mostly_silent" has tokens
    with no active feature and features active on no token (empty bags both ways)."""
    monkeypatch.setattr(relu_kernel, "RELU_SPARSE_MAX_DENSITY", 1.0 if sparse else 0.0)
    torch.manual_seed(2)
    sae = _small("relu", apply_b_dec)
    x = torch.randn(30, 12, dtype=torch.float64)
    if codes == "mostly_silent":  # ~3 % of the codes active
        with torch.no_grad():
            sae.b_enc.sub_(torch.quantile(sae.pre_activations(x), 0.97))
        pre = sae.pre_activations(x)
        assert (pre <= 0).all(1).any() and (pre <= 0).all(0).any() and (pre > 0).any()
    _assert_same(sae, x, l1_coefficient=0.7)


def test_training_forward_outputs():
    torch.manual_seed(0)
    sae = randomize(make_sae(arch="topk", d_in=6, d_sae=20, k=3))
    out = sae.training_forward(torch.randn(2, 5, 6))  # leading dims flattened to tokens
    assert out.x_hat.shape == (10, 6) and not out.x_hat.requires_grad
    assert out.fires.shape == (20,) and int(out.fires.sum()) == int((sae.encode(
        torch.randn(0, 6)) > 0).sum()) + round(float(out.l0) * 10)  # every token's active count
    assert 0 < float(out.l0) <= 3
    assert float(out.aux_loss) == 0.0 and float(out.sparsity_loss) == 0.0


def test_training_reduces_loss():
    torch.manual_seed(0)
    sae = make_sae(arch="topk", d_in=8, d_sae=32, k=4)
    x = torch.randn(256, 8)
    opt = torch.optim.Adam(sae.parameters(), lr=1e-2)
    first = None
    for _ in range(30):
        out = sae.training_forward(x)
        first = first if first is not None else out.mse_loss.item()
        out.loss.backward()
        opt.step()
        opt.zero_grad()
        sae.normalize_decoder_()
    assert out.mse_loss.item() < 0.5 * first


@pytest.mark.parametrize("kw, match", [
    ({"l1_coefficient": -1.0}, "l1_coefficient"),
    ({"dead_mask": torch.zeros(3, dtype=torch.bool)}, "dead_mask"),
    ({"aux_k": 0}, "aux_k"),
    ({"x": torch.randn(3, 5)}, "d_in=4"),
])
def test_training_forward_bad_inputs(kw, match):
    x = kw.pop("x", torch.randn(3, 4))
    with pytest.raises(ValueError, match=match):
        make_sae(d_in=4, d_sae=4, arch="topk").training_forward(x, **kw)


def test_config_rejects_bad_k():
    with pytest.raises(ValueError, match="k"):
        SAEConfig(d_in=4, d_sae=4, architecture="topk", k=5)
    with pytest.raises(ValueError, match="k"):
        SAEConfig(d_in=4, d_sae=4, architecture="topk", k=0)


# ---- save / load ------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["relu", "topk", "jumprelu"])
def test_save_load_round_trip(tmp_path, arch):
    sae = randomize(make_sae(arch=arch, d_in=6, d_sae=10, k=3, hook_name="blocks.1.hook_resid_post",
                             model_name="toystories/small", context_size=64))
    sae.log_feature_sparsity = torch.linspace(-5, 0, 10)
    sae.save(tmp_path / "sae")
    loaded = SAE.load(tmp_path / "sae", device="cpu")
    assert loaded.cfg == sae.cfg
    for name, p in sae.named_parameters():
        assert torch.equal(getattr(loaded, name), p), name
    assert torch.equal(loaded.log_feature_sparsity, sae.log_feature_sparsity)
    x = torch.randn(5, 6)
    assert torch.equal(loaded(x), sae(x))
    assert sorted(p.name for p in (tmp_path / "sae").iterdir()) == [
        "cfg.json", "sae_weights.safetensors", "sparsity.safetensors"]  # no temp files left


def test_cfg_json_is_sae_lens_shaped(tmp_path):
    make_sae(arch="topk", k=3, hook_name="blocks.1.hook_resid_post").save(tmp_path)
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    assert cfg["architecture"] == "topk" and cfg["k"] == 3
    assert cfg["normalize_activations"] == "none" and cfg["apply_b_dec_to_input"] is True
    for key in ("sae_lens_version", "model_name", "hook_name", "context_size",
                "prepend_bos", "dataset_path"):
        assert key in cfg["metadata"], key
    assert cfg["metadata"]["hook_name"] == "blocks.1.hook_resid_post"
    assert cfg["metadata"]["sparsity_known"] is False
    make_sae(arch="relu").save(tmp_path)
    assert json.loads((tmp_path / "cfg.json").read_text())["architecture"] == "standard"


def test_unknown_sparsity_loads_as_none(tmp_path):
    make_sae().save(tmp_path)
    assert SAE.load(tmp_path, device="cpu").log_feature_sparsity is None


def test_failed_save_keeps_previous_files(tmp_path, monkeypatch):
    sae = randomize(make_sae())
    sae.save(tmp_path)
    before = (tmp_path / "sae_weights.safetensors").read_bytes()

    def boom(*args, **kwargs):
        raise OSError("disk full")
    monkeypatch.setattr(sae_io, "save_file", boom)
    with pytest.raises(OSError):
        randomize(make_sae(), seed=1).save(tmp_path)
    assert (tmp_path / "sae_weights.safetensors").read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_to_updates_cfg(tmp_path):
    sae = make_sae().to(torch.float64)
    assert sae.cfg.dtype == "float64" and sae.W_dec.dtype == torch.float64
    sae.save(tmp_path)
    assert SAE.load(tmp_path, device="cpu").W_dec.dtype == torch.float64


# ---- load: bad inputs name the file ---------------------------------------------------------
def test_load_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        SAE.load(tmp_path / "nope")


def test_load_missing_cfg(tmp_path):
    with pytest.raises(FileNotFoundError, match="cfg.json"):
        SAE.load(tmp_path)


def test_load_corrupt_cfg(tmp_path):
    make_sae().save(tmp_path)
    (tmp_path / "cfg.json").write_text("{not json")
    with pytest.raises(ValueError, match="cfg.json"):
        SAE.load(tmp_path)


def test_load_cfg_with_invalid_values(tmp_path):
    make_sae(arch="topk", k=2).save(tmp_path)
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    cfg["k"] = 99
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="cfg.json.*k"):
        SAE.load(tmp_path)


def test_load_missing_weights(tmp_path):
    make_sae().save(tmp_path)
    (tmp_path / "sae_weights.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="sae_weights.safetensors"):
        SAE.load(tmp_path)


@pytest.mark.parametrize("name", ["sae_weights.safetensors", "sparsity.safetensors"])
def test_load_corrupt_safetensors(tmp_path, name):
    sae = make_sae(d_in=4, d_sae=4)
    sae.log_feature_sparsity = torch.zeros(4)
    sae.save(tmp_path)
    (tmp_path / name).write_bytes(b"\x00garbage" * 10)
    with pytest.raises(ValueError, match=name):
        SAE.load(tmp_path)


def test_load_wrong_shape_names_tensor_and_shapes(tmp_path):
    make_sae(d_in=4, d_sae=6).save(tmp_path)
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    cfg["d_sae"] = 7
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"W_enc has shape \(4, 6\), expected \(4, 7\)"):
        SAE.load(tmp_path)


def test_load_unsupported_architecture_names_it(tmp_path):
    make_sae().save(tmp_path)
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    cfg["architecture"] = "gated"
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="'gated' is not supported.*supported: .*jumprelu"):
        SAE.load(tmp_path)


def test_load_refuses_pickle_files(tmp_path):
    bogus = tmp_path / "sae.pt"
    bogus.write_bytes(b"\x80\x04 not even a real pickle")  # would fail to unpickle anyway
    with pytest.raises(ValueError, match="refusing"):
        SAE.load(bogus)
    with pytest.raises(FileNotFoundError, match="sae.pt.*refuse"):
        SAE.load(tmp_path)
