"""Save and load SAEs in SAELens's on-disk format (safetensors + JSON, never pickle).

A directory holds:
- ``cfg.json``: d_in, d_sae, dtype, device, architecture ("standard" for our relu,
  "topk", "jumprelu"; our batchtopk and matryoshka_batchtopk as "jumprelu", as SAELens
  saves its own, with ``metadata.trained_architecture``, ``k`` and ``matryoshka_widths``
  so they load here as what they are), apply_b_dec_to_input, normalize_activations="none", k (topk), and a
  ``metadata`` block (sae_lens_version, model_name, hook_name, context_size, ...).
- ``sae_weights.safetensors``: W_enc [d_in, d_sae], b_enc, W_dec [d_sae, d_in], b_dec, and
  for the thresholded architectures threshold [d_sae].
- ``sparsity.safetensors``: ``sparsity`` = log10 firing frequency per feature, as SAELens
  writes it. When the SAE has no recorded frequencies we write zeros and say so in
  ``metadata.sparsity_known = false`` (zeros alone would read as "fires on every token").

Every file is written to a temp file in the same directory and renamed into place, and
cfg.json goes last, so a crash leaves either the old SAE or a complete new one per file.
``sae_lens_version`` is the format version we write (6.x layout, so SAELens >= 6 reads it
without its pre-6.0 key renaming); ``sae_lens_training_version`` is null: SAELens did not
train it.

SAELens's BatchTopK and Matryoshka BatchTopK SAEs have no inference class of their own:
``save_inference_model`` (what its training runners write at the end) saves them as
"jumprelu", every feature's threshold the learned batch threshold (sae_lens 6.54
``saes/batchtopk_sae.py``, ``BatchTopKTrainingSAEConfig.get_inference_config_class`` and
``process_state_dict_for_saving_inference``), so they load as our jumprelu. A training
checkpoint of theirs (``SAETrainer.save_checkpoint``: architecture "batchtopk" or
"matryoshka_batchtopk", a scalar ``topk_threshold``) is converted here the same way.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from sae_steer.config import SAEConfig
from sae_steer.config.sae import BATCH_TOPK, THRESHOLDED
from sae_steer.fsutil import atomic_path, write_json_atomic

CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae_weights.safetensors"
SPARSITY_FILE = "sparsity.safetensors"
SAE_LENS_FORMAT_VERSION = "6.54.12"
_PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".pkl", ".pickle", ".ckpt")
_ARCH_TO_SAE_LENS = {"relu": "standard", "topk": "topk", "jumprelu": "jumprelu",
                     "batchtopk": "jumprelu", "matryoshka_batchtopk": "jumprelu"}
_ARCH_FROM_SAE_LENS = {"standard": "relu", "topk": "topk", "jumprelu": "jumprelu",
                       "batchtopk": "jumprelu", "matryoshka_batchtopk": "jumprelu"}


def _save_safetensors_atomic(tensors: dict[str, torch.Tensor], path: Path) -> None:
    with atomic_path(path) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp)


def sae_lens_cfg_dict(sae: Any) -> dict:
    """The cfg.json SAELens 6.x expects for this SAE."""
    cfg = sae.cfg
    out = {
        "d_in": cfg.d_in, "d_sae": cfg.d_sae, "dtype": cfg.dtype, "device": str(sae.device),
        "architecture": _ARCH_TO_SAE_LENS[cfg.architecture],
        "apply_b_dec_to_input": cfg.apply_b_dec_to_input,
        "normalize_activations": "none", "reshape_activations": "none",
        "metadata": {
            "sae_lens_version": SAE_LENS_FORMAT_VERSION, "sae_lens_training_version": None,
            "trained_with": "sae_steer", "model_name": cfg.model_name,
            "hook_name": cfg.hook_name, "hook_head_index": None,
            "context_size": cfg.context_size, "prepend_bos": cfg.prepend_bos,
            "dataset_path": cfg.dataset_path, "model_from_pretrained_kwargs": {},
            "sparsity_known": sae.log_feature_sparsity is not None,
        },
    }
    if cfg.architecture == "topk":
        # Our normalize_decoder_ folds row norms in, so no rescaling is needed at load.
        out.update(k=cfg.k, rescale_acts_by_decoder_norm=False)
    if cfg.architecture in BATCH_TOPK:  # saved as jumprelu; this brings them back as they are
        out["metadata"].update(trained_architecture=cfg.architecture, k=cfg.k,
                               matryoshka_widths=cfg.matryoshka_widths)
    return out


def save_sae(sae: Any, path: str | os.PathLike) -> None:
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"cannot save SAE to {path}: it exists and is not a directory")
    path.mkdir(parents=True, exist_ok=True)
    weights = {"W_enc": sae.W_enc, "b_enc": sae.b_enc, "W_dec": sae.W_dec, "b_dec": sae.b_dec}
    if hasattr(sae, "threshold"):
        weights["threshold"] = sae.threshold
    _save_safetensors_atomic(weights, path / WEIGHTS_FILE)
    sparsity = sae.log_feature_sparsity
    if sparsity is None:
        sparsity = torch.zeros(sae.d_sae)
    _save_safetensors_atomic({"sparsity": sparsity.float()}, path / SPARSITY_FILE)
    write_json_atomic(path / CFG_FILE, sae_lens_cfg_dict(sae))


# ---- loading ----------------------------------------------------------------------
def _read_cfg(path: Path) -> dict:
    if path.is_file():
        if path.suffix.lower() in _PICKLE_SUFFIXES:
            raise ValueError(f"refusing to load {path}: pickle/torch.save files can run "
                             "arbitrary code. Point at a directory holding cfg.json + "
                             f"{WEIGHTS_FILE} (SAELens's format) instead.")
        raise ValueError(f"{path} is a file; SAE.load expects the directory that holds "
                         f"{CFG_FILE} and {WEIGHTS_FILE}")
    cfg_path = path / CFG_FILE
    if not cfg_path.exists():
        pickles = sorted(p.name for p in path.glob("*") if p.suffix.lower() in _PICKLE_SUFFIXES)
        hint = (f" (found {pickles}, which we refuse to unpickle)" if pickles else "")
        raise FileNotFoundError(f"no {CFG_FILE} in {path}{hint}: not an SAE saved by "
                                "sae_steer or SAELens")
    try:
        cfg = json.loads(cfg_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{cfg_path} is corrupt (not valid JSON: {e})") from e
    if not isinstance(cfg, dict):
        raise ValueError(f"{cfg_path} is corrupt: expected a JSON object, got {type(cfg).__name__}")
    return cfg


def _sae_config_from_dict(cfg: dict, cfg_path: Path) -> tuple[SAEConfig, bool]:
    """Our SAEConfig from an SAELens cfg.json (6.x layout or the pre-6.0 flat one)."""
    arch = cfg.get("architecture")
    if arch is None:  # pre-6.0 SAELens: no architecture key, topk via activation_fn
        is_topk = cfg.get("activation_fn", cfg.get("activation_fn_str")) == "topk"
        arch = "topk" if is_topk else "standard"
        if is_topk:
            cfg.setdefault("k", (cfg.get("activation_fn_kwargs") or {}).get("k"))
    if arch not in _ARCH_FROM_SAE_LENS:
        raise ValueError(f"{cfg_path}: SAELens architecture {arch!r} is not supported by "
                         f"sae_steer (supported: {sorted(_ARCH_FROM_SAE_LENS)})")
    for key in ("normalize_activations", "reshape_activations"):
        if cfg.get(key, "none") not in ("none", None):
            raise ValueError(f"{cfg_path}: {key}={cfg[key]!r} is not supported "
                             "(sae_steer SAEs read raw activations; fold it first)")
    missing = [key for key in ("d_in", "d_sae") if key not in cfg]
    if missing:
        raise ValueError(f"{cfg_path} is missing required field(s) {missing}")
    meta = cfg.get("metadata") or cfg  # pre-6.0 keeps these at the top level
    try:
        sae_cfg = _build_config(cfg, meta, arch)
    except ValueError as e:
        raise ValueError(f"{cfg_path}: {e}") from e
    # Of SAELens's inference classes only TopKSAE reads this key (JumpReLUSAEConfig has no
    # such field: a jumprelu cfg.json carrying it runs unrescaled there, and so here). A
    # BatchTopK training checkpoint's rescaling is folded in by _read_weights.
    return sae_cfg, arch == "topk" and bool(cfg.get("rescale_acts_by_decoder_norm", False))


def _build_config(cfg: dict, meta: dict, arch: str) -> SAEConfig:
    ours = meta.get("trained_with") == "sae_steer" and meta.get("trained_architecture")
    if arch == "jumprelu" and ours in BATCH_TOPK:
        return _build_config(cfg, {**meta, "trained_with": None}, arch).replace(
            architecture=ours, k=meta.get("k"), matryoshka_widths=meta.get("matryoshka_widths"))
    return SAEConfig(
        d_in=cfg["d_in"], d_sae=cfg["d_sae"], architecture=_ARCH_FROM_SAE_LENS[arch],
        k=cfg.get("k") if arch == "topk" else None,
        dtype=str(cfg.get("dtype", "float32")).removeprefix("torch."),
        apply_b_dec_to_input=bool(cfg.get("apply_b_dec_to_input", True)),
        hook_name=meta.get("hook_name", meta.get("hook_point")),
        model_name=meta.get("model_name"), context_size=meta.get("context_size"),
        prepend_bos=bool(meta.get("prepend_bos", True)), dataset_path=meta.get("dataset_path"),
    )


def _batch_topk_threshold(tensors: dict[str, torch.Tensor], d_sae: int, file: Path) -> bool:
    """A SAELens BatchTopK training checkpoint's scalar ``topk_threshold`` made the jumprelu
    ``threshold`` its ``save_inference_model`` writes (one value for every feature); True
    when there was one (the decoder norms may then need folding, see ``_fold_for_inference``)."""
    topk_threshold = tensors.pop("topk_threshold", None)
    if topk_threshold is None:
        return False
    if topk_threshold.numel() != 1:
        raise ValueError(f"{file}: topk_threshold has shape {tuple(topk_threshold.shape)}, "
                         "expected one number")
    # as batchtopk_sae.py writes it: ones_like(b_enc) * the float64 buffer's .item()
    like = tensors.get("b_enc", torch.empty(d_sae))
    tensors["threshold"] = torch.ones_like(like) * topk_threshold.item()
    return True


def _fold_for_inference(tensors: dict[str, torch.Tensor]) -> None:
    """SAELens's ``_fold_norm_topk`` (topk_sae.py), which ``save_inference_model`` applies to
    a BatchTopK SAE trained with rescale_acts_by_decoder_norm: unit decoder rows, the norms
    folded into W_enc and b_enc. The threshold is left alone: it was learned on
    ``pre * ||W_dec[i]||``, which is what the folded encoder computes."""
    norms = tensors["W_dec"].norm(dim=-1).clamp(min=1e-8)
    tensors["b_enc"] = tensors["b_enc"] * norms
    tensors["W_dec"] = tensors["W_dec"] / norms[:, None]
    tensors["W_enc"] = tensors["W_enc"] * norms[None, :]


def _read_weights(path: Path, cfg: SAEConfig, cfg_dict: dict) -> dict[str, torch.Tensor]:
    file = path / WEIGHTS_FILE
    if not file.exists():
        raise FileNotFoundError(f"{file} does not exist: the SAE's weights are missing")
    try:
        tensors = load_file(file)
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(f"{file} is corrupt (cannot read it as safetensors: {e})") from e
    scale = tensors.pop("scaling_factor", None)  # old SAELens: all-ones unless finetuned
    if scale is not None and not torch.allclose(scale, torch.ones_like(scale)):
        raise ValueError(f"{file}: a finetuned scaling_factor is not supported")
    if "log_threshold" in tensors:  # older JumpReLU checkpoints, as SAELens converts them
        tensors["threshold"] = tensors.pop("log_threshold").exp()
    from_checkpoint = _batch_topk_threshold(tensors, cfg.d_sae, file)
    expected = {"W_enc": (cfg.d_in, cfg.d_sae), "b_enc": (cfg.d_sae,),
                "W_dec": (cfg.d_sae, cfg.d_in), "b_dec": (cfg.d_in,)}
    if cfg.architecture in THRESHOLDED:
        expected["threshold"] = (cfg.d_sae,)
    missing, extra = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    if missing or extra:
        raise ValueError(f"{file}: expected tensors {sorted(expected)}, "
                         f"missing {missing}, unexpected {extra}")
    for name, shape in expected.items():
        if tuple(tensors[name].shape) != shape:
            raise ValueError(f"{file}: tensor {name} has shape {tuple(tensors[name].shape)}, "
                             f"expected {shape} (d_in={cfg.d_in}, d_sae={cfg.d_sae} from cfg.json)")
    # the training config's default (TopKTrainingSAEConfig) when the key is absent
    if from_checkpoint and cfg_dict.get("rescale_acts_by_decoder_norm", True):
        _fold_for_inference(tensors)
    return tensors


def _read_sparsity(path: Path, cfg_dict: dict, d_sae: int) -> torch.Tensor | None:
    file = path / SPARSITY_FILE
    if not file.exists() or not (cfg_dict.get("metadata") or {}).get("sparsity_known", True):
        return None
    try:
        sparsity = load_file(file).get("sparsity")
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(f"{file} is corrupt (cannot read it as safetensors: {e})") from e
    if sparsity is None or tuple(sparsity.shape) != (d_sae,):
        shape = None if sparsity is None else tuple(sparsity.shape)
        raise ValueError(f"{file}: expected tensor 'sparsity' of shape ({d_sae},), got {shape}")
    return sparsity


def load_sae(cls: type, path: str | os.PathLike, device: str | torch.device) -> Any:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"SAE directory {path} does not exist")
    cfg_dict = _read_cfg(path)
    try:
        sae_cfg, rescale = _sae_config_from_dict(cfg_dict, path / CFG_FILE)
    except (TypeError, KeyError) as e:
        raise ValueError(f"{path / CFG_FILE} is corrupt: {e}") from e
    sae_cfg.device = str(device)
    tensors = _read_weights(path, sae_cfg, cfg_dict)
    sae = cls(sae_cfg)
    with torch.no_grad():
        for name, tensor in tensors.items():
            getattr(sae, name).copy_(tensor.to(sae.dtype))
        if rescale:
            # SAELens topk with rescale_acts_by_decoder_norm ranks pre * ||W_dec[i]|| and
            # decodes with unit rows: folding the norms in is exactly that function.
            sae.normalize_decoder_()
    sparsity = _read_sparsity(path, cfg_dict, sae_cfg.d_sae)
    sae.log_feature_sparsity = None if sparsity is None else sparsity.to(sae.device)
    # a loaded SAE is for use: a user's float(sae.threshold.min()) must not carry grad
    # (training turns it back on)
    return sae.requires_grad_(False)
