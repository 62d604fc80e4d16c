"""Concept objects: words, patterns, token ids, labelers and features, on any tokenizer.

The sub-word case uses a byte-level BPE tokenizer trained here (GPT-2 style: ByteLevel
pre-tokenizer and decoder, leading-space tokens, ``<|endoftext|>`` as BOS/EOS) with a
vocabulary so small that danger words come out in several pieces.
"""
from __future__ import annotations

import types

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from builders import make_sae, seeded_model, tiny_config
from sae_steer.config import SearchConfig
from sae_steer.inspect import FeatureSearch
from sae_steer.measure.candidates import concept_vocab
from sae_steer.measure.concepts import Concept, as_concept, occurrences
from sae_steer.measure.report import steering_report
from sae_steer.toystories import CONCEPTS, concept_mask, generate_stories, planted_concepts
from sae_steer.toystories.tokenizer import build_tokenizer, build_vocab
from sae_steer.toystories.vocab import DANGER_WORDS

EOT = "<|endoftext|>"


# ------------------------------------------------------------------ builders ----

@pytest.fixture(scope="module")
def bpe_model():
    """A tiny model whose tokenizer is a byte-level BPE with 360 entries."""
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=360, special_tokens=[EOT], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    backend.train_from_iterator([s.text for s in generate_stories(200, seed=0)], trainer)
    # name_or_path + add_bos_token: TransformerLens would otherwise rebuild the tokenizer
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=EOT, eos_token=EOT,
                                  name_or_path="tests/bpe", add_bos_token=True)
    return seeded_model(tiny_config(d_vocab=len(tok), n_ctx=128, default_prepend_bos=True), tok)


@pytest.fixture(scope="module")
def story_model():
    """A word-level model (the offline world's kind of tokenizer) over 40 stories' words."""
    stories = generate_stories(40, seed=3, split="validation")
    tok = build_tokenizer(build_vocab(s.tokens for s in stories))
    model = seeded_model(tiny_config(d_vocab=len(tok), n_ctx=512, default_prepend_bos=True), tok)
    return model, stories


def _ids(model, text: str) -> list[int]:
    return model.to_tokens(text)[0].tolist()


def _pieces(model, word: str) -> list[str]:
    """The tokens of ``word`` as it appears inside a sentence (with its leading space); a
    lone space token before it ("Ġ", then "ear"...) spells none of its letters and is left out."""
    tok = model.tokenizer
    return [t for t in tok.convert_ids_to_tokens(tok(" " + word, add_special_tokens=False)["input_ids"])
            if tok.convert_tokens_to_string([t]).strip()]


def _labelled(model, concept, text: str) -> list[str]:
    ids = _ids(model, text)
    toks = model.tokenizer.convert_ids_to_tokens(ids)
    return [t for t, on in zip(toks, concept.mask(model, ids)) if on]


# ----------------------------------------------------------- Concept.words ----

def test_the_bpe_tokenizer_splits_danger_words(bpe_model):
    tok = bpe_model.tokenizer
    assert tok.bos_token == tok.eos_token == EOT and len(tok) == bpe_model.cfg.d_vocab
    for word in ("flood", "earthquake"):
        pieces = _pieces(bpe_model, word)
        assert len(pieces) >= 3, pieces  # several sub-word pieces, not one token
        assert "".join(pieces).lstrip("Ġ") == word


def test_words_labels_every_piece_of_a_split_word(bpe_model):
    danger = Concept.words(["flood", "earthquake"])
    text = "Suddenly there was a big flood. Then an earthquake shook the town."
    ids = _ids(bpe_model, text)
    mask = danger.mask(bpe_model, ids)
    assert len(mask) == len(ids)
    toks = bpe_model.tokenizer.convert_ids_to_tokens(ids)
    assert [t for t, on in zip(toks, mask) if on] == _pieces(bpe_model, "flood") + _pieces(
        bpe_model, "earthquake")
    # each split word is one occurrence, however many pieces it has
    assert occurrences(mask) == 2


def test_words_with_characters_split_into_bytes(bpe_model):
    """Byte-level BPE spells an unseen "é" or "日" as several byte tokens, none of which
    decodes to a character alone: the word is still found and every byte token labelled."""
    for word in ("café", "naïve", "日本"):
        pieces = _pieces(bpe_model, word)
        assert len(pieces) > len(word), pieces  # some character takes several tokens
        assert _labelled(bpe_model, Concept.words([word]), f"A {word} here, {word}!") == pieces * 2
    assert _labelled(bpe_model, Concept.words(["CAFÉ"]), "A café") == _pieces(bpe_model, "café")


def test_words_are_whole_words_only(bpe_model):
    fire = Concept.words(["fire"])
    assert _pieces(bpe_model, "firefly")[: len(_pieces(bpe_model, "fire"))] == _pieces(bpe_model, "fire")
    assert _labelled(bpe_model, fire, "A firefly flew by the campfire and the fireman.") == []
    assert _labelled(bpe_model, fire, "A firefly saw the fire.") == _pieces(bpe_model, "fire")


def test_words_match_case_insensitively(bpe_model):
    fire = Concept.words(["Fire"])
    for word in ("fire", "FIRE", "Fire", "fIrE"):
        assert _labelled(bpe_model, fire, f"Look, a {word}!") == _pieces(bpe_model, word)


def test_special_tokens_are_never_labelled(bpe_model):
    tok = bpe_model.tokenizer
    eot = tok.convert_tokens_to_ids(EOT)
    fire = tok(" fire", add_special_tokens=False)["input_ids"]
    fly = tok("fly", add_special_tokens=False)["input_ids"]
    ids = [eot, *fire, eot, *fly, eot, eot]
    everything = Concept.regex(r".", flags=0)
    assert everything.mask(bpe_model, ids) == [i != eot for i in ids]
    for concept in (Concept.words(["endoftext"]), Concept.regex(r"<\|endoftext\|>"),
                    Concept.regex(r"endoftext"), Concept.regex(r"\|")):
        assert not any(concept.mask(bpe_model, ids)), concept
    # a special token separates words: "fire<eot>fly" is not the word "firefly"
    assert not any(Concept.words(["firefly"]).mask(bpe_model, ids))
    assert Concept.words(["fire"]).mask(bpe_model, ids) == [False] + [True] * len(fire) + [False] * (
        len(fly) + 3)


def test_words_on_a_word_level_tokenizer(tok_model):
    names = Concept.words(["Lily", "tom"])
    ids = _ids(tok_model, "Once upon a time Lily liked to play with Tom .")
    toks = tok_model.to_str_tokens(torch.tensor(ids))
    assert [t for t, on in zip(toks, names.mask(tok_model, ids)) if on] == ["Lily", "Tom"]


def test_words_refuses_what_is_not_a_list_of_words():
    with pytest.raises(ValueError, match="non-empty list"):
        Concept.words("fire")
    with pytest.raises(ValueError, match="non-empty list"):
        Concept.words([])
    with pytest.raises(ValueError, match="no non-blank"):
        Concept.words(["  ", ""])
    assert Concept.words(["fire", "flood"]).name == "words:flood,fire"
    assert Concept.words(["fire"], name="danger").name == "danger"


def test_text_rules_on_a_model_without_tokenizer_label_nothing(tiny_model):
    ids = [0, 5, 9, 3]
    assert Concept.words(["5"]).mask(tiny_model, ids) == [False] * 4
    assert Concept.regex(r"\d").mask(tiny_model, ids) == [False] * 4
    assert Concept.tokens([5]).mask(tiny_model, ids) == [False, True, False, False]


# ----------------------------------------------- regex, tokens, labeler ----

def test_regex_labels_every_token_its_matches_overlap(tok_model):
    quote = Concept.regex(r'liked, "')
    ids = _ids(tok_model, 'Tom liked, "Once upon a time".')
    toks = tok_model.to_str_tokens(torch.tensor(ids))
    assert [t for t, on in zip(toks, quote.mask(tok_model, ids)) if on] == ["liked", ",", '"']
    assert quote.name == 'regex:liked, "'
    with pytest.raises(ValueError, match="bad concept pattern"):
        Concept.regex("(")
    # empty matches label nothing
    assert not any(Concept.regex(r"x*").mask(tok_model, ids))


def test_regex_on_sub_word_pieces(bpe_model):
    storm = Concept.regex(r"earth\w+", name="earth")
    assert _labelled(bpe_model, storm, "An earthquake!") == _pieces(bpe_model, "earthquake")
    assert storm.name == "earth"


def test_tokens_labels_exact_ids(tok_model):
    ids = _ids(tok_model, "Lily and Tom liked the park")
    lily = int(tok_model.to_single_token("Lily"))
    concept = Concept.tokens([lily, torch.tensor(lily).item()])
    assert concept.mask(tok_model, torch.tensor(ids)) == [i == lily for i in ids]
    assert concept.name == f"tokens:[{lily}]"
    with pytest.raises(ValueError, match="empty"):
        Concept.tokens([])


def test_labeler_gets_the_tokenizers_own_strings(tok_model, tiny_model):
    seen = []

    def capitals(str_tokens):
        seen.append(list(str_tokens))
        return [t[:1].isupper() for t in str_tokens]

    concept = Concept.labeler(capitals)
    ids = _ids(tok_model, "Once upon a time Lily met Tom")
    assert concept.name == "capitals"
    assert concept.mask(tok_model, ids) == [t[:1].isupper() for t in tok_model.to_str_tokens(torch.tensor(ids))]
    assert seen[-1] == list(tok_model.to_str_tokens(torch.tensor(ids)))
    # without a tokenizer the strings are the ids
    assert Concept.labeler(lambda toks: [t == "5" for t in toks], name="five").mask(
        tiny_model, [0, 5, 9]) == [False, True, False]
    with pytest.raises(TypeError, match="callable"):
        Concept.labeler("capitals")
    with pytest.raises(ValueError, match="one flag per token"):
        Concept.labeler(lambda toks: [True], name="short").mask(tok_model, ids)


# ------------------------------------------------------------- from_feature ----

def _search(d_sae: int, top: dict[int, list[int]]) -> FeatureSearch:
    """A hand-made search: feature f's top tokens are ``top[f]`` (summed acts 10, 9, ...)."""
    C = 6
    tok_id = torch.full((d_sae, C), -1, dtype=torch.long)
    tok_sum = torch.zeros(d_sae, C)
    n_fire = torch.zeros(d_sae, dtype=torch.long)
    for f, ids in top.items():
        tok_id[f, : len(ids)] = torch.tensor(ids)
        tok_sum[f, : len(ids)] = torch.arange(10.0, 10.0 - len(ids), -1)
        n_fire[f] = len(ids)
    return FeatureSearch(SearchConfig(), {"d_sae": d_sae, "n_tokens": 100, "n_texts": 4},
                         {"tok_id": tok_id, "tok_sum": tok_sum, "tok_cnt": (tok_sum > 0).long(),
                          "n_fire": n_fire})


def test_from_feature_names_whole_words_as_words(bpe_model):
    tok = bpe_model.tokenizer
    the, time = tok.convert_tokens_to_ids(["Ġthe", "Ġtime"])
    search = _search(4, {1: [time, the], 2: []})
    concept = Concept.from_feature(search, 1, bpe_model, n=5)
    assert concept.name == "feature 1: time the"
    # matched as words, so a capital or a BOS-adjacent first word counts too, in pieces
    the_start = tok.convert_ids_to_tokens(tok("The", add_special_tokens=False)["input_ids"])
    assert _labelled(bpe_model, concept, "The time has come, the end") == the_start + ["Ġtime", "Ġthe"]
    with pytest.raises(ValueError, match="never fired"):
        Concept.from_feature(search, 0, bpe_model)
    search.tensors["n_fire"][2] = 1  # fired, but no token was kept
    with pytest.raises(ValueError, match="fires on no token"):
        Concept.from_feature(search, 2, bpe_model)


def test_from_feature_falls_back_to_exact_tokens_for_pieces(bpe_model):
    tok = bpe_model.tokenizer
    pieces = tok(" earthquake", add_special_tokens=False)["input_ids"]
    the = tok.convert_tokens_to_ids("Ġthe")
    search = _search(2, {0: [the, pieces[1], pieces[2]]})
    concept = Concept.from_feature(search, 0, bpe_model, n=2)
    wanted = {the, pieces[1]}  # the top n=2 tokens, as exact ids
    ids = _ids(bpe_model, "the earthquake hit the town")
    assert concept.mask(bpe_model, ids) == [i in wanted for i in ids]
    assert concept.name.startswith("feature 0: the ")


def test_from_feature_of_a_real_search(tok_model):
    from sae_steer.inspect import search_features

    sae = make_sae()
    texts = ["Once upon a time there was a little girl named Lily .",
             "Lily liked to play in the park with her friend Tom ."] * 2
    search = search_features(tok_model, sae, texts, SearchConfig(k=2, context_size=32),
                             progress=False)
    feature = int(search.max_act.argmax())
    concept = Concept.from_feature(search, feature, tok_model, n=3)
    top = [t for t, _, _ in search.top_tokens(feature, tok_model, 3)]
    ids = _ids(tok_model, texts[0] + " " + texts[1])
    shown = tok_model.to_str_tokens(torch.tensor(ids))
    assert [s for s, on in zip(shown, concept.mask(tok_model, ids)) if on] == [
        s for s in shown if s in {t.strip() for t in top}]


# ------------------------------------------------------ the interface itself ----

def test_as_concept_refuses_a_string_and_passes_objects_through():
    with pytest.raises(TypeError, match="planted_concepts"):
        as_concept("danger")
    with pytest.raises(TypeError, match="name and mask"):
        as_concept(types.SimpleNamespace(name="no mask"))
    danger = planted_concepts()["danger"]
    assert as_concept(danger) is danger
    fire = Concept.words(["fire"])
    assert as_concept(fire) is fire
    duck = types.SimpleNamespace(name="duck", mask=lambda model, ids: [False] * len(ids))
    assert as_concept(duck) is duck


def test_measuring_code_refuses_string_concepts(tok_model):
    with pytest.raises(TypeError, match="concept must be a Concept"):
        steering_report(tok_model, make_sae(), 1, 1.0, concept="danger", n_samples=1,
                        max_new_tokens=2)


def test_occurrences_counts_each_run_once():
    mask = [True, True, False, True, False, True, True]
    assert occurrences(mask) == 3
    assert occurrences(mask, start=1) == 2  # the run begun before start is not counted
    assert occurrences(mask, start=3) == 2 and occurrences(mask, start=4) == 1
    assert occurrences([]) == 0 and occurrences([False, False]) == 0
    assert occurrences([True] * 5) == 1


# ----------------------------------------- planted concepts as concept objects ----

def test_planted_concepts_are_concept_objects_with_the_labelers_labels(story_model):
    import sae_steer

    model, stories = story_model
    planted = planted_concepts()
    assert list(planted) == list(CONCEPTS) and sae_steer.planted_concepts is planted_concepts
    generic = {name: Concept.labeler(lambda toks, name=name: concept_mask(toks, name), name=name)
               for name in CONCEPTS}
    seen = dict.fromkeys(CONCEPTS, 0)
    for story in stories:
        ids = _ids(model, story.text)
        str_tokens = model.to_str_tokens(torch.tensor(ids))
        assert str_tokens[1:] == list(story.tokens)  # the word-level tokenizer's own words
        for name in CONCEPTS:
            want = concept_mask(str_tokens, name)
            assert want == story.token_labels(name)  # the labeler recovers the planted labels
            assert as_concept(planted[name]).mask(model, ids) == want
            assert generic[name].mask(model, ids) == want
            seen[name] += sum(want)
    assert all(seen.values()), seen  # every concept occurs, so the comparison means something
    # danger is a word list, and the general word concept agrees with the planted one
    danger = Concept.words(list(DANGER_WORDS), name="danger")
    for story in stories:
        ids = _ids(model, story.text)
        assert danger.mask(model, ids) == planted["danger"].mask(model, ids)


def test_measuring_code_sees_planted_concepts_only_through_name_and_mask(story_model):
    """A planted concept and a generic object with the same name and mask give the same
    vocabulary and the same steering report."""
    model, stories = story_model
    rows = [_ids(model, s.text) for s in stories]
    sae = make_sae()
    for name, concept in planted_concepts().items():
        generic = types.SimpleNamespace(name=name, mask=concept.mask)
        assert concept_vocab(model, rows, generic, min_count=1) == concept_vocab(
            model, rows, concept, min_count=1)
    danger = planted_concepts()["danger"]
    args = dict(n_samples=2, max_new_tokens=8, prompt="Once upon a time", seed=0)
    a = steering_report(model, sae, 1, 3.0, concept=danger, **args)
    b = steering_report(model, sae, 1, 3.0, concept=Concept.labeler(danger.labels, name="danger"),
                        **args)
    assert a.concept == b.concept == "danger"
    assert a.steered.concept_counts == b.steered.concept_counts
    assert a.unsteered.concept_counts == b.unsteered.concept_counts
    assert (a.lift.numerator, a.lift.denominator) == (b.lift.numerator, b.lift.denominator)
    assert a.lift.lo == b.lift.lo and a.lift.hi == b.lift.hi


def test_count_in_equals_occurrences_with_every_display_string(tok_model):
    """Reading display strings only when two runs or more exist changes no count."""
    from sae_steer.lm import display_tokens
    from sae_steer.measure.concepts import count_in

    words = Concept.words(["park", "girl", "."])
    gen = torch.Generator().manual_seed(0)
    for _ in range(40):
        ids = torch.randint(4, tok_model.cfg.d_vocab, (30,), generator=gen).tolist()
        for start in (0, 5):
            full = occurrences(words.mask(tok_model, ids), start, display_tokens(tok_model, ids))
            assert count_in(tok_model, words, ids, start) == full
