"""A seeded generator of TinyStories-like children's stories with planted concepts.

Each story is a protagonist, a friend, a place, a few filler sentences and, with small
probability each, one episode per concept:

* ``quote`` -- someone starts talking: ``Mom said, "`` (the opening quote is labelled);
* ``pretend_list`` -- pretend play with a list of concrete nouns: ``a cloud, a small bird``;
* ``time_to`` -- ``it was time to/for``: the word ``time`` is labelled;
* ``danger`` -- ``Suddenly, there was a big fire!``: the danger word is labelled.

Every concept has a predictive context (``said,`` / ``pretended to be`` / ``but then it
was`` / ``Suddenly, there was a big``) so a model must anticipate it, as in the seed
writeup where features firing just *before* a concept steered best. Concepts occur in a
minority of stories, so steering can raise their rate well above the unsteered one.
Templates use ``[words|concept]`` to label words; everything else is unlabelled.
"""
from __future__ import annotations

import dataclasses
import random
import re
from collections.abc import Iterator

from .labels import CONCEPTS
from .text import detokenize, split_words
from .templates import EPISODES, Cast, ending, event, filler, intro, meet, setup

GRAMMAR_VERSION = 2
"""Bump when the templates change: it is part of the model cache key."""

EPISODE_PROB = {"quote": 0.15, "pretend_list": 0.12, "time_to": 0.12, "danger": 0.12}
"""Chance that a story contains each concept's episode (independently)."""

_MARKUP = re.compile(r"\[([^\]|]+)\|(\w+)\]")


@dataclasses.dataclass(frozen=True)
class Story:
    """One story: its text, its word tokens, and per-token concept labels."""

    text: str
    tokens: tuple[str, ...]
    """Word tokens, exactly what the toy tokenizer produces for ``text`` (no BOS/EOS)."""
    labels: dict[str, tuple[bool, ...]]
    """``labels[concept][i]``: token i belongs to the concept (one entry per CONCEPT)."""

    def token_labels(self, concept: str, prepend_bos: bool = True) -> list[bool]:
        """Labels aligned with the model's tokens (a False for BOS when prepended)."""
        if concept not in self.labels:
            raise ValueError(f"unknown concept {concept!r}; known: {CONCEPTS}")
        return [False] * prepend_bos + list(self.labels[concept])

    def spans(self, concept: str) -> list[str]:
        """The labelled stretches of text for ``concept`` (for reading and printing)."""
        runs, cur = [], []
        for tok, on in zip(self.tokens, self.labels[concept]):
            if on:
                cur.append(tok)
            elif cur:
                runs.append(detokenize(cur))
                cur = []
        return runs + ([detokenize(cur)] if cur else [])


class _Builder:
    """Accumulates word tokens and their (single) concept label."""

    def __init__(self) -> None:
        self.tokens: list[str] = []
        self.concepts: list[str | None] = []

    def say(self, template: str) -> None:
        pos = 0
        for m in _MARKUP.finditer(template):
            self._add(template[pos:m.start()], None)
            self._add(m.group(1), m.group(2))
            pos = m.end()
        self._add(template[pos:], None)

    def _add(self, text: str, concept: str | None) -> None:
        assert concept is None or concept in CONCEPTS, concept
        words = split_words(text)
        self.tokens += words
        self.concepts += [concept] * len(words)

    def story(self) -> Story:
        labels = {c: tuple(k == c for k in self.concepts) for c in CONCEPTS}
        return Story(detokenize(self.tokens), tuple(self.tokens), labels)


def make_story(r: random.Random) -> Story:
    """Draw one story from ``r`` (all randomness comes from it)."""
    c = Cast.draw(r)
    b = _Builder()
    b.say(intro(r, c))
    for _ in range(r.choice([1, 1, 2])):
        b.say(setup(r, c))
    b.say(meet(r, c))
    b.say(event(r, c))
    middle = [filler(r, c) for _ in range(r.choice([2, 3, 3, 4]))]
    for concept in ("quote", "pretend_list", "danger"):
        if r.random() < EPISODE_PROB[concept]:
            middle.insert(r.randint(0, len(middle)), EPISODES[concept](r, c))
    if r.random() < EPISODE_PROB["time_to"]:  # "time to go home" belongs near the end
        middle.append(EPISODES["time_to"](r, c))
    for sentence in middle:
        b.say(sentence)
    b.say(ending(r, c))
    return b.story()


def story_stream(seed: int = 0, split: str = "train") -> Iterator[Story]:
    """An endless, deterministic stream of stories; splits use independent seeds."""
    if split not in ("train", "validation"):
        raise ValueError(f"split must be 'train' or 'validation', got {split!r}")
    r = random.Random(f"toystories/{split}/{seed}")  # str seeds are stable across runs
    while True:
        yield make_story(r)


def generate_stories(n: int, seed: int = 0, split: str = "train") -> list[Story]:
    """The first ``n`` stories of ``story_stream(seed, split)``."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    stream = story_stream(seed, split)
    return [next(stream) for _ in range(n)]
