"""Crash-safe writes: a directory or JSON file appears whole or not at all; the cache root."""
from __future__ import annotations

import json

import pytest

from builders import leftovers
from sae_steer.fsutil import atomic_dir, cache_dir, write_json_atomic


def _entry(path, text: str):
    path.mkdir()
    (path / "data.txt").write_text(text)


def test_atomic_dir_renames_on_success(tmp_path):
    target = tmp_path / "cache" / "entry"
    with atomic_dir(target) as tmp:
        (tmp / "data.txt").write_text("new")
        assert not target.exists()  # nothing visible until the block ends
    assert (target / "data.txt").read_text() == "new"
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("existing", [False, True])
def test_atomic_dir_error_removes_temp_and_leaves_target(tmp_path, existing):
    target = tmp_path / "entry"
    if existing:
        _entry(target, "old")
    with pytest.raises(RuntimeError, match="crash"):
        with atomic_dir(target) as tmp:
            (tmp / "data.txt").write_text("half")
            raise RuntimeError("crash")
    if existing:
        assert [p.name for p in target.iterdir()] == ["data.txt"]
        assert (target / "data.txt").read_text() == "old"
    else:
        assert not target.exists()
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("replace, expected", [(True, "new"), (False, "old")])
def test_atomic_dir_with_existing_entry(tmp_path, replace, expected):
    target = tmp_path / "entry"
    _entry(target, "old")
    with atomic_dir(target, replace=replace) as tmp:
        (tmp / "data.txt").write_text("new")
    assert (target / "data.txt").read_text() == expected
    assert leftovers(tmp_path) == []


def test_write_json_atomic(tmp_path):
    path = tmp_path / "sub" / "meta.json"
    write_json_atomic(path, {"b": 1, "a": [1.5, None]})
    assert json.loads(path.read_text()) == {"a": [1.5, None], "b": 1}
    before = path.read_text()
    with pytest.raises(TypeError):
        write_json_atomic(path, {"bad": object()})  # not JSON: fails before replacing
    assert path.read_text() == before
    assert leftovers(tmp_path) == []


def test_cache_dir_honours_env(tmp_path, monkeypatch):
    monkeypatch.setenv("SAE_STEER_CACHE", str(tmp_path / "here" / ".." / "cache"))
    assert cache_dir() == (tmp_path / "cache").resolve()
    monkeypatch.delenv("SAE_STEER_CACHE")
    assert cache_dir().name == "sae_steer" and cache_dir() != (tmp_path / "cache").resolve()
