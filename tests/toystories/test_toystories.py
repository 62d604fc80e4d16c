"""The toy world's generator, labeler and tokenizer (no model training here)."""
from __future__ import annotations

import pytest
import torch

from builders import seeded_model, tiny_config
from sae_steer.toystories import (CONCEPTS, concept_count, concept_mask, concept_rate, detokenize,
                                  generate_stories, split_words)
from sae_steer.toystories.tokenizer import build_tokenizer, build_vocab, load_tokenizer, save_tokenizer
from sae_steer.toystories.vocab import DANGER_WORDS, LIST_NOUNS


@pytest.fixture(scope="module")
def stories():
    return generate_stories(1500, seed=0)


@pytest.fixture(scope="module")
def tokenizer(stories):
    return build_tokenizer(build_vocab(s.tokens for s in stories))


@pytest.fixture(scope="module")
def toy_tok_model(tokenizer):
    """An untrained model with the toy tokenizer: enough to test text <-> tokens."""
    return seeded_model(tiny_config(n_layers=1, n_ctx=256, d_mlp=32, d_vocab=len(tokenizer)),
                        tokenizer)


def test_generator_is_deterministic_and_splits_differ():
    a, b = generate_stories(50, seed=3), generate_stories(50, seed=3)
    assert [s.text for s in a] == [s.text for s in b]
    assert [s.labels for s in a] == [s.labels for s in b]
    assert generate_stories(50, seed=4)[0].text != a[0].text
    val = generate_stories(50, seed=3, split="validation")
    assert not {s.text for s in val} & {s.text for s in a}
    with pytest.raises(ValueError, match="split"):
        generate_stories(3, split="test")


def test_stories_look_like_tinystories(stories):
    assert stories[0].text.startswith(("Once upon a time, there was", "One day,"))
    for s in stories[:200]:
        assert " ," not in s.text and " ." not in s.text and "  " not in s.text
        assert s.text[-1] in '.!"'
        assert split_words(s.text) == list(s.tokens)
    lengths = [len(s.tokens) for s in stories]
    assert 50 < sum(lengths) / len(lengths) < 110  # fits n_ctx=128 with room


def test_each_concept_is_a_minority_but_frequent(stories):
    for c in CONCEPTS:
        share = sum(any(s.labels[c]) for s in stories) / len(stories)
        assert 0.05 < share < 0.3, (c, share)


def test_planted_labels_mean_what_they_say(stories):
    for s in stories:
        toks = s.tokens
        for i, tok in enumerate(toks):
            if s.labels["time_to"][i]:
                assert tok == "time" and toks[i - 1] in ("was", "is") and toks[i + 1] in ("to", "for")
            if s.labels["danger"][i]:
                assert tok in DANGER_WORDS
            if s.labels["quote"][i]:
                assert tok == '"' and toks[i - 1] == "," and toks[i + 1][0].isupper()
        for span in s.spans("pretend_list"):
            assert "," in span and sum(w in LIST_NOUNS for w in split_words(span)) >= 2
    # "Once upon a time" is never time_to: the label needs "it was time to/for".
    assert not any(s.labels["time_to"][3] for s in stories)


def test_labeler_recovers_planted_labels(stories):
    for s in stories:
        for c in CONCEPTS:
            assert concept_mask(s.tokens, c) == list(s.labels[c]), (c, s.text)


def test_labeler_on_free_text():
    toks = split_words('Then it was time to go. Mom said, "Look at a cloud, a small bird and a boat!" '
                       'There was a big fire. They had a great time.')
    marked = lambda c: [t for t, m in zip(toks, concept_mask(toks, c)) if m]  # noqa: E731
    assert marked("time_to") == ["time"]
    assert marked("quote") == ['"']
    assert marked("danger") == ["fire"]
    assert marked("pretend_list") == split_words("a cloud, a small bird and a boat")
    # Without a comma, two nouns are not a list; GPT-2-style leading spaces are fine.
    assert not any(concept_mask(split_words("a cloud and a boat"), "pretend_list"))
    assert concept_mask([" it", " was", " time", " for"], "time_to") == [False, False, True, False]
    with pytest.raises(ValueError, match="known concepts"):
        concept_mask(toks, "dragons")


def test_concept_count_and_rate():
    toks = split_words("a cloud, a boat. There was a fire and a storm.")
    assert concept_count(toks, "pretend_list") == 1 and concept_count(toks, "danger") == 2
    assert concept_rate([toks, ["<bos>"] + toks], "danger") == pytest.approx(100 * 4 / (2 * len(toks)))
    with pytest.raises(TypeError):
        concept_rate(toks, "danger")


def test_detokenize_quotes_and_apostrophes():
    toks = split_words('Lily said, "Let\'s play!" Tom said, "Yes." "Hi," Max said.')
    assert detokenize(toks) == 'Lily said, "Let\'s play!" Tom said, "Yes." "Hi," Max said.'


def test_tokenizer_round_trip(stories, tokenizer, toy_tok_model):
    for s in stories[:300]:
        ids = tokenizer(s.text, add_special_tokens=False)["input_ids"]
        assert tokenizer.convert_ids_to_tokens(ids) == list(s.tokens)
        assert tokenizer.unk_token_id not in ids
        assert tokenizer.decode(ids) == s.text
    text = stories[1].text
    tokens = toy_tok_model.to_tokens(text)  # [1, 1 + n]: BOS first
    assert tokens[0, 0].item() == tokenizer.bos_token_id
    assert toy_tok_model.to_string(tokens[0, 1:]) == text
    assert toy_tok_model.to_str_tokens(text)[1:] == list(stories[1].tokens)
    assert stories[1].token_labels("danger") == [False] + list(stories[1].labels["danger"])


def test_tokenizer_save_load_and_generate(tmp_path, tokenizer, toy_tok_model):
    save_tokenizer(tokenizer, tmp_path)
    again = load_tokenizer(tmp_path)
    text = 'Once upon a time, Mom said, "Yes!"'
    assert again.encode(text) == tokenizer.encode(text)
    assert again.decode(again.encode(text), skip_special_tokens=True) == text
    torch.manual_seed(0)
    out = toy_tok_model.generate("Once upon a time", max_new_tokens=5, verbose=False)
    assert isinstance(out, str) and out.startswith("Once upon a time")
    with pytest.raises(FileNotFoundError):
        load_tokenizer(tmp_path / "nowhere")
