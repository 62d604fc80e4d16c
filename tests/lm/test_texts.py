"""Text sources (offline world, local TinyStories-schema files) and token batches."""
from __future__ import annotations

import json

import pytest
import torch

from builders import seeded_model, tiny_config
from sae_steer.lm.texts import (DataDownloadError, TokenCount, load_stories, load_texts,
                                token_batches)
from sae_steer.toystories import generate_stories
from sae_steer.toystories.tokenizer import build_tokenizer, build_vocab


@pytest.fixture(scope="module")
def story_model():
    """An untrained model with the toy world's tokenizer (no training needed to batch text)."""
    tok = build_tokenizer(build_vocab(s.tokens for s in generate_stories(300)))
    return seeded_model(tiny_config(n_layers=1, d_model=8, n_heads=2, d_mlp=16, d_vocab=len(tok)),
                        tok)


@pytest.fixture
def jsonl(tmp_path):
    rows = [{"text": "Once upon a time, there was a cat."}, {"text": "The end."},
            {"text": "Tom said, \"Hi!\""}]
    path = tmp_path / "stories.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path, [r["text"] for r in rows]


def test_toy_splits_are_deterministic_and_disjoint():
    train = load_texts("toystories", "train", n=20)
    assert train == load_texts("toystories", "train", n=20) == load_texts("toystories/small", n=20)
    val = load_texts("toystories", "validation", n=20)
    assert not set(train) & set(val)
    assert all(t.startswith(("Once upon a time", "One day")) for t in train)
    # The full split is the preset's corpus; asking for more continues the same stream.
    assert len(load_texts("toystories", "validation")) == 500
    assert load_texts("toystories", n=25)[:20] == train


def test_stories_carry_labels_for_the_same_texts():
    stories = load_stories("validation", n=30)
    assert [s.text for s in stories] == load_texts("toystories", "validation", n=30)
    assert any(any(s.labels["danger"]) for s in stories)


def test_bad_arguments():
    with pytest.raises(ValueError, match="split"):
        load_texts("toystories", "test")
    with pytest.raises(ValueError, match="known sources"):
        load_texts("wikipedia")
    with pytest.raises(ValueError, match="positive"):
        load_texts("toystories", n=0)
    with pytest.raises(ValueError, match="preset"):
        load_texts("toystories", preset="huge")


def test_local_tinystories_schema_file(jsonl):
    path, texts = jsonl
    assert list(load_texts("tinystories", data_files=path)) == texts
    assert list(load_texts("tinystories", n=2, data_files=str(path))) == texts[:2]
    assert list(load_texts(data_files=path)) == texts  # data_files alone means "this file"
    with pytest.raises(ValueError, match="does not combine"):
        load_texts("toystories/demo", data_files=path)
    by_split = {"train": str(path), "validation": str(path)}
    assert list(load_texts("tinystories", "validation", data_files=by_split)) == texts


def test_local_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_texts("tinystories", data_files=tmp_path / "missing.jsonl")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(ValueError, match="no texts"):
        load_texts("tinystories", data_files=empty)
    wrong = tmp_path / "wrong.jsonl"
    wrong.write_text(json.dumps({"story": "hi"}) + "\n")
    with pytest.raises(ValueError, match="'text' field"):
        load_texts("tinystories", data_files=wrong)


def test_hub_failure_points_to_offline_data(monkeypatch):
    # Offline mode makes the hub fail at once instead of waiting on the network.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    import datasets.config
    import huggingface_hub.constants
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True, raising=False)
    with pytest.raises(DataDownloadError, match="load_texts\\('toystories'\\)") as err:
        load_texts("tinystories", "validation")
    assert "\n" not in str(err.value)


def test_token_batches_shapes_bos_mask(story_model):
    texts = load_texts("toystories", n=5)
    batches = list(token_batches(story_model, texts, context_size=16, batch_size=2,
                                 long_texts="truncate"))
    assert [t.shape for t, _ in batches] == [(2, 16), (2, 16), (1, 16)]
    tokens, mask = batches[0]
    assert tokens.dtype == torch.long and mask.dtype == torch.bool
    assert (tokens[:, 0] == story_model.tokenizer.bos_token_id).all()
    assert mask.all()  # stories are longer than 16 tokens: truncated, no padding
    expected = story_model.to_tokens(texts[0])[0, :16]
    assert torch.equal(tokens[0], expected)


def test_long_texts_become_windows_that_each_start_with_bos(story_model):
    texts = load_texts("toystories", n=5)
    ids = story_model.tokenizer(texts, add_special_tokens=False)["input_ids"]
    count = TokenCount()
    batches = list(token_batches(story_model, texts, context_size=16, batch_size=4, count=count))
    tokens = torch.cat([t for t, _ in batches])
    mask = torch.cat([m for _, m in batches])
    bos = story_model.tokenizer.bos_token_id
    assert (tokens[:, 0] == bos).all() and all(len(t) <= 4 for t, _ in batches)
    # every token of every text, in order, 15 per window after its BOS
    body = [tok for row, m in zip(tokens, mask) for tok in row[1:][m[1:]].tolist()]
    assert body == [tok for seq in ids for tok in seq]
    assert count.texts == 5 and count.windows == len(tokens) == sum(-(-len(s) // 15) for s in ids)
    assert count.tokens == int(mask.sum()) == sum(map(len, ids)) + count.windows
    assert count.truncated == 0
    cut = TokenCount()
    list(token_batches(story_model, texts, 16, 4, long_texts="truncate", count=cut))
    assert cut.windows == 5 and cut.tokens + cut.truncated == count.tokens - count.windows + 5


def test_real_schema_file_with_long_texts_streams_every_token(story_model, tmp_path):
    stories = load_texts("toystories", n=12)
    rows = [{"text": " ".join(stories[i:i + 3])} for i in range(0, 12, 3)]  # ~100+ tokens
    path = tmp_path / "long.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    texts = list(load_texts("tinystories", data_files=path, progress=False))
    assert texts == [r["text"] for r in rows]
    count = TokenCount()
    n_rows = sum(len(t) for t, _ in token_batches(story_model, load_texts(
        "tinystories", data_files=path), 32, 8, count=count))
    n_ids = sum(map(len, story_model.tokenizer(texts, add_special_tokens=False)["input_ids"]))
    assert n_ids > 4 * 32 and count.texts == 4 and n_rows == count.windows > 4
    assert count.tokens == n_ids + count.windows and count.truncated == 0


def test_token_batches_pads_short_texts(story_model):
    (tokens, mask), = token_batches(story_model, ["The sun.", ""], context_size=8, batch_size=4)
    assert mask.sum(1).tolist() == [4, 1]  # BOS + 3 words; BOS alone
    assert (tokens[~mask] == story_model.tokenizer.pad_token_id).all()
    assert story_model.to_string(tokens[0, 1:4]) == "The sun."


def test_token_batches_validation(story_model):
    with pytest.raises(ValueError, match="n_ctx"):
        next(token_batches(story_model, ["a"], context_size=33, batch_size=1))
    with pytest.raises(ValueError, match="batch_size"):
        next(token_batches(story_model, ["a"], context_size=8, batch_size=0))
    with pytest.raises(ValueError, match="no texts"):
        next(token_batches(story_model, [], context_size=8, batch_size=2))
    with pytest.raises(ValueError, match="one string"):
        next(token_batches(story_model, "Once upon", context_size=8, batch_size=2))
