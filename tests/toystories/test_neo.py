"""The GPT-Neo world's parts that need no training: its byte-level BPE tokenizer, its cache
key, and the planted-concept labels read through sub-word pieces."""
from __future__ import annotations

import pytest

from sae_steer.toystories import CONCEPTS, concept_count, concept_mask, generate_stories, neo


@pytest.fixture(scope="module")
def stories_and_tokenizer():
    stories = generate_stories(300, seed=1, split="train")
    return stories, neo.build_bpe_tokenizer([s.text for s in stories], vocab_size=384)


def _pieces(tokenizer, text: str) -> list[str]:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return [tokenizer.decode([i]) for i in ids]


def test_bpe_tokenizer_is_gpt_neo_style(stories_and_tokenizer):
    stories, tok = stories_and_tokenizer
    assert len(tok) == 384 and tok.bos_token == tok.eos_token == tok.unk_token == neo.EOT
    assert tok.convert_tokens_to_ids(neo.EOT) == 0
    text = stories[0].text
    pieces = _pieces(tok, text)
    assert "".join(pieces) == text == tok.decode(tok(text)["input_ids"])  # exact round trip
    assert any(p.startswith(" ") for p in pieces) and not pieces[0].startswith(" ")
    assert len(pieces) > len(stories[0].tokens)  # sub-word pieces, not words
    again = neo.build_bpe_tokenizer([s.text for s in stories], vocab_size=384)
    assert again.get_vocab() == tok.get_vocab()  # deterministic training


def test_planted_labels_survive_sub_word_pieces(stories_and_tokenizer):
    """Every concept occurrence the word-level labeler finds is found on the BPE pieces too,
    and the pieces of a split danger word are all labelled."""
    stories, tok = stories_and_tokenizer
    split_danger = 0
    for story in stories:
        pieces = [neo.EOT, *_pieces(tok, story.text)]
        for concept in CONCEPTS:
            assert concept_count(pieces, concept) == concept_count(story.tokens, concept), (concept, story.text)
        mask = concept_mask(pieces, "danger")
        flagged = "".join(p for p, on in zip(pieces, mask) if on)
        words = [w for w, on in zip(story.tokens, concept_mask(story.tokens, "danger")) if on]
        assert flagged.replace(" ", "").lower() == "".join(words).lower()
        split_danger += sum(mask) > len(words)
    assert split_danger > 0  # some danger word really was split into pieces


def test_word_level_tokens_are_labelled_as_before():
    toks = ["<bos>", "it", "was", "time", "to", "go", ".", "A", "fire", "!"]
    assert concept_mask(toks, "time_to") == [False, False, False, True] + [False] * 6
    assert concept_mask(toks, "danger")[8] and sum(concept_mask(toks, "danger")) == 1
    assert concept_mask(["Ġit", "Ġwas", "Ġtime", "Ġfor"], "time_to") == [False, False, True, False]


def test_cache_key_covers_the_config(tmp_path):
    a, b = neo.NeoConfig(steps=10), neo.NeoConfig(steps=11)
    assert neo.neo_dir(a, tmp_path) != neo.neo_dir(b, tmp_path)
    assert neo.neo_dir(a, tmp_path).parent == tmp_path / "toystories"
    assert neo.neo_dir(a, tmp_path).name.startswith("neo-small-")
    with pytest.raises(ValueError, match="even n_layers"):
        neo.NeoConfig(n_layers=3)
    with pytest.raises(ValueError, match="known presets"):
        neo.neo_config("huge")
