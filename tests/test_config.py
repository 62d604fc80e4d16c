"""Stage configs: SteerConfig / SelectConfig refuse bad settings with actionable messages,
round-trip through JSON, and ``replace`` validates like a new config."""
from __future__ import annotations

import math

import pytest
import torch

from sae_steer.config import MODES, SAEConfig, SelectConfig, SteerConfig, replace_config, steer_config


@pytest.mark.parametrize("kw, match", [
    ({"n_samples": 0}, r"n_samples must be a positive integer, got 0"),
    ({"n_samples": True}, r"n_samples must be a positive integer, got True"),
    ({"max_new_tokens": 2.5}, r"max_new_tokens must be a positive integer, got 2.5"),
    ({"seed": 1.5}, r"seed must be an integer \(e.g. 0\), got float 1.5"),
    ({"temperature": -1}, r"temperature must be >= 0 \(0 = greedy\), got -1"),
    ({"temperature": "hot"}, r"temperature must be a number, got 'hot'"),
    ({"temperature": math.nan}, r"temperature must be finite, got nan"),
    ({"mode": "add"}, r"unknown steering mode 'add'; choose one of decoder_row, clamp, decoder_onehot"),
    ({"scale_unit": "percent"}, r"scale_unit must be 'absolute' or 'relative', got 'percent'"),
    ({"resid_norm": 0.0}, r"resid_norm must be positive, got 0.0"),
])
def test_steer_config_rejects_bad_settings(kw, match):
    with pytest.raises(ValueError, match=match):
        SteerConfig(**kw)


@pytest.mark.parametrize("kw, match", [
    ({"scales": ()}, r"scales is empty"),
    ({"scales": (0.5, "big")}, r"scale must be a number, got 'big'"),
    ({"n_candidates": 0}, r"n_candidates must be a positive integer, got 0"),
    ({"rank_seed": 3, "report_seed": 3}, r"rank_seed, confirm_seed and report_seed must be distinct"),
    ({"confirm_seed": -1}, r"must be distinct non-negative integers"),
    ({"confirm_keep": 0}, r"confirm_keep must be a positive integer, got 0"),
    ({"confirm_rounds": ()}, r"confirm_rounds must be positive sample counts"),
    ({"cost_budget": math.inf}, r"cost_budget must be finite"),
])
def test_select_config_rejects_bad_settings(kw, match):
    with pytest.raises(ValueError, match=match):
        SelectConfig(**kw)


def test_steer_config_normalises_its_values():
    cfg = SteerConfig(prompt=torch.tensor([0, 5, 9]), temperature=1, resid_norm=3, seed=2)
    assert cfg.prompt == [0, 5, 9] and type(cfg.prompt) is list  # ids stay JSON-able
    assert type(cfg.temperature) is float and cfg.resid_norm == 3.0 and cfg.mode in MODES


@pytest.mark.parametrize("cfg", [
    SteerConfig(prompt=[0, 5, 9, 3], n_samples=4, temperature=0.7, mode="clamp",
                scale_unit="relative", resid_norm=2.5, fire_threshold=0.1),
    SelectConfig(scales=(0.2, 0.9), n_candidates=2, report_seed=7),  # a tuple: JSON has lists
])
def test_json_round_trip(tmp_path, cfg):
    cfg.save_json(tmp_path / "cfg.json")
    again = type(cfg).load_json(tmp_path / "cfg.json")
    assert again == cfg and again.diff(cfg) == {}
    with pytest.raises(ValueError, match=r"has no field\(s\) \['colour'\]"):
        type(cfg).from_dict({**cfg.to_dict(), "colour": "red"})


def test_replace_validates_and_refuses_unknown_fields():
    cfg = SteerConfig(n_samples=3)
    other = cfg.replace(n_samples=5, mode="clamp")
    assert (other.n_samples, other.mode) == (5, "clamp") and cfg.n_samples == 3  # a copy
    assert cfg.diff(other) == {"mode": ("decoder_row", "clamp"), "n_samples": (3, 5)}
    with pytest.raises(TypeError, match=r"unknown SteerConfig setting\(s\) \['n_sample'\]"):
        cfg.replace(n_sample=5)
    with pytest.raises(ValueError, match="n_samples must be a positive integer"):
        cfg.replace(n_samples=-1)
    with pytest.raises(TypeError, match=r"unknown SelectConfig setting\(s\) \['top_k'\]"):
        replace_config(SelectConfig(), top_k=3)  # renamed to n_candidates
    with pytest.raises(TypeError, match="unknown SAEConfig setting"):
        SAEConfig(d_in=4, d_sae=8).replace(width=4)
    assert steer_config(cfg, seed=9) == cfg.replace(seed=9)
    with pytest.raises(TypeError, match="cfg must be a SteerConfig, got SelectConfig"):
        steer_config(SelectConfig())
