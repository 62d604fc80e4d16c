"""Loading refuses broken, foreign or dangerous SAE files with a message naming the problem.

Every failed load leaves the directory exactly as it was, and a pickle is never unpickled:
the pickles here would create a marker file if anything ever ran them.
"""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from builders import HOOK, assert_clean, leftovers, make_sae
from sae_steer.measure import rescore, steering_report
from sae_steer.sae import SAE
from sae_steer.sae import io as sae_io
from sae_steer.steer import generate_steered

PROMPT = torch.tensor([1, 2, 3])


def _snapshot(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*"))
            if p.is_file()}


@pytest.fixture
def saved(tmp_path) -> Path:
    path = tmp_path / "sae"
    make_sae().save(path)
    return path


def _refused(path: Path, error: type[Exception], match: str) -> None:
    """Load fails with ``match`` in the message and writes nothing."""
    before = _snapshot(path) if path.is_dir() else None
    with pytest.raises(error, match=match):
        SAE.load(path, device="cpu")
    if before is not None:
        assert _snapshot(path) == before


class _Payload:
    """Unpickling this calls ``Path(marker).touch()``: proof that a load ran pickle."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def _evil_pickle(path: Path, marker: Path) -> Path:
    path.write_bytes(pickle.dumps({"W_enc": _Payload(marker)}))
    # sanity: this file really is armed (unpickle a copy in a throwaway place)
    probe = marker.with_name("probe")
    pickle.loads(pickle.dumps(_Payload(probe)))
    assert probe.exists()
    probe.unlink()
    return path


def test_round_trip_is_exact(saved):
    """Baseline for the cases below: the untouched directory loads bit-identically."""
    loaded = SAE.load(saved, device="cpu")
    for name, value in make_sae().state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name
    assert loaded.cfg.hook_name == HOOK


def test_truncated_safetensors(saved):
    file = saved / sae_io.WEIGHTS_FILE
    data = file.read_bytes()
    file.write_bytes(data[: len(data) // 2])
    _refused(saved, ValueError, r"sae_weights\.safetensors is corrupt \(cannot read it as safetensors")


def test_truncated_header(saved):
    (saved / sae_io.WEIGHTS_FILE).write_bytes(b"\x10\x00")
    _refused(saved, ValueError, r"sae_weights\.safetensors is corrupt")


def test_wrong_shape_tensors(saved):
    file = saved / sae_io.WEIGHTS_FILE
    tensors = load_file(file)
    tensors["W_dec"] = tensors["W_dec"][:, :12].contiguous()
    save_file(tensors, file)
    _refused(saved, ValueError,
             r"tensor W_dec has shape \(8, 12\), expected \(8, 16\) \(d_in=16, d_sae=8 from cfg\.json\)")


def test_cfg_disagrees_with_weights(saved):
    cfg = json.loads((saved / sae_io.CFG_FILE).read_text())
    cfg["d_sae"] = 10
    (saved / sae_io.CFG_FILE).write_text(json.dumps(cfg))
    _refused(saved, ValueError, r"tensor W_enc has shape \(16, 8\), expected \(16, 10\)")


def test_missing_tensor(saved):
    file = saved / sae_io.WEIGHTS_FILE
    tensors = load_file(file)
    del tensors["b_dec"]
    save_file(tensors, file)
    _refused(saved, ValueError, r"missing \['b_dec'\]")


def test_missing_cfg_json(saved):
    (saved / sae_io.CFG_FILE).unlink()
    _refused(saved, FileNotFoundError, r"no cfg\.json in .*not an SAE saved by sae_steer or SAELens")


def test_corrupt_cfg_json(saved):
    (saved / sae_io.CFG_FILE).write_text('{"d_in": 16, ')
    _refused(saved, ValueError, r"cfg\.json is corrupt \(not valid JSON")


def test_missing_weights_file(saved):
    (saved / sae_io.WEIGHTS_FILE).unlink()
    _refused(saved, FileNotFoundError, r"sae_weights\.safetensors does not exist")


def test_missing_directory(tmp_path):
    _refused(tmp_path / "nowhere", FileNotFoundError, r"SAE directory .*nowhere does not exist")


@pytest.mark.parametrize("name", ["sae.pt", "weights.pth", "model.bin", "sae.pkl", "sae.ckpt"])
def test_pickle_file_offered_as_weights_is_refused_unopened(tmp_path, name):
    marker = tmp_path / "PWNED"
    evil = _evil_pickle(tmp_path / name, marker)
    _refused(evil, ValueError, r"refusing to load .*pickle/torch\.save files can run arbitrary code")
    assert not marker.exists()


def test_directory_holding_only_a_pickle_is_refused_unopened(tmp_path):
    marker = tmp_path / "PWNED"
    folder = tmp_path / "sae"
    folder.mkdir()
    _evil_pickle(folder / "sae.pt", marker)
    _refused(folder, FileNotFoundError, r"found \['sae\.pt'\], which we refuse to unpickle")
    assert not marker.exists()


def test_pickle_disguised_as_safetensors_is_never_unpickled(saved, tmp_path):
    marker = tmp_path / "PWNED"
    _evil_pickle(saved / sae_io.WEIGHTS_FILE, marker)
    _refused(saved, ValueError, r"sae_weights\.safetensors is corrupt")
    assert not marker.exists()


def test_interrupted_save_keeps_the_previous_sae(saved, monkeypatch):
    """Ctrl-C while overwriting an SAE: the old one still loads, no temp file is left."""
    before = _snapshot(saved)

    def interrupted(tensors, filename, *a, **kw):
        Path(filename).write_bytes(b"half")  # part of the new file reached the disk
        raise KeyboardInterrupt

    monkeypatch.setattr(sae_io, "save_file", interrupted)
    with pytest.raises(KeyboardInterrupt):
        make_sae(seed=1).save(saved)
    assert _snapshot(saved) == before and leftovers(saved) == []
    SAE.load(saved, device="cpu")


def test_save_onto_a_file_is_refused(tmp_path):
    target = tmp_path / "sae"
    target.write_text("not a directory")
    with pytest.raises(ValueError, match="exists and is not a directory"):
        make_sae().save(target)
    assert target.read_text() == "not a directory"


# --- an SAE from another model or hook ------------------------------------------------


def _foreign(tmp_path, **cfg) -> SAE:
    """Save an SAE with ``cfg`` and load it back, as a user would pick it up from disk."""
    make_sae(**cfg).save(tmp_path / "foreign")
    return SAE.load(tmp_path / "foreign", device="cpu")


def test_sae_for_a_wider_model_is_refused_for_steering_and_scoring(tiny_model, tmp_path):
    sae = _foreign(tmp_path, d_in=32, hook_name="blocks.1.hook_resid_post")
    match = r"SAE width d_in=32 does not match the model's activation width 16 .*another model or hook"
    with pytest.raises(ValueError, match=match):
        generate_steered(tiny_model, sae, 0, 1.0, prompt=PROMPT, max_new_tokens=3)
    with pytest.raises(ValueError, match=match):
        rescore(tiny_model, sae, [PROMPT], 0)
    with pytest.raises(ValueError, match=match):
        steering_report(tiny_model, sae, 0, 1.0, prompt=PROMPT, max_new_tokens=3, n_samples=2)
    assert_clean(tiny_model)


def test_sae_for_a_hook_this_model_lacks(tiny_model, tmp_path):
    sae = _foreign(tmp_path, hook_name="blocks.5.hook_resid_post")  # a deeper model's hook
    match = r"unknown hook 'blocks\.5\.hook_resid_post' for this model \(2 layers\); did you mean"
    with pytest.raises(ValueError, match=match):
        generate_steered(tiny_model, sae, 0, 1.0, prompt=PROMPT, max_new_tokens=3)
    with pytest.raises(ValueError, match=match):
        rescore(tiny_model, sae, [PROMPT], 0)
    assert_clean(tiny_model)


def test_sae_without_hook_name_asks_for_one(tiny_model, tmp_path):
    sae = _foreign(tmp_path, hook_name=None)
    with pytest.raises(ValueError, match="cfg.hook_name is not set; pass hook_name="):
        generate_steered(tiny_model, sae, 0, 1.0, prompt=PROMPT, max_new_tokens=3)


def test_search_results_of_another_sae_are_refused(tok_model, tmp_path):
    from sae_steer.config import SearchConfig
    from sae_steer.inspect.results import FeatureSearch
    from sae_steer.inspect.search import search_features

    texts = ["Once upon a time there was a little girl named Lily ."] * 4
    search = search_features(tok_model, make_sae(), texts,
                             SearchConfig(k=2, context_size=16), progress=False)
    search.save(tmp_path / "search")
    with pytest.raises(ValueError, match="computed for a different SAE"):
        FeatureSearch.load(tmp_path / "search", sae=make_sae(seed=1))


def test_sae_trained_on_another_model_of_the_same_width(tiny_model, tmp_path):
    tiny_model.cfg.model_name = "toystories/demo"  # the fixture is per-test: safe to rename
    sae = _foreign(tmp_path, hook_name="blocks.0.hook_resid_post", model_name="toystories/small")
    with pytest.raises(ValueError, match="toystories/small"):
        generate_steered(tiny_model, sae, 0, 1.0, prompt=PROMPT, max_new_tokens=3)


def test_sae_used_at_another_hook_of_the_same_width(tiny_model, tmp_path):
    sae = _foreign(tmp_path, hook_name="blocks.0.hook_resid_post")
    with pytest.raises(ValueError, match="blocks.0.hook_resid_post"):
        rescore(tiny_model, sae, [PROMPT], 0, hook_name="blocks.1.hook_resid_post")
