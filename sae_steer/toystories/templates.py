"""The sentence templates of the toy world: filler, and one episode per concept.

Each function draws one sentence (or a few) from ``r`` for the story's cast ``c``.
``[words|concept]`` marks labelled words (see ``grammar._Builder``); every other word is
unlabelled. Concept words appear only inside their own episodes, which is what lets the
rule-based labeler (``labels.py``) recover the planted labels exactly.
"""
from __future__ import annotations

import dataclasses
import random

from .vocab import (ACTIVITIES, ANIMALS, BOY_NAMES, CHILD_ADJS, DANGER_WORDS, FEELINGS, FOODS,
                    GIRL_NAMES, LIST_ADJS, LIST_NOUNS, PLACES, SIZES, THING_ADJS, THINGS,
                    TIME_TO_ENDINGS)


@dataclasses.dataclass
class Cast:
    """Who the story is about: a protagonist (with pronouns), a named friend, a place."""

    name: str
    he: str
    his: str
    friend: str
    place: str

    @classmethod
    def draw(cls, r: random.Random) -> Cast:
        girl = r.random() < 0.5
        name = r.choice(GIRL_NAMES if girl else BOY_NAMES)
        friend = r.choice([n for n in GIRL_NAMES + BOY_NAMES if n != name])
        return cls(name, "she" if girl else "he", "her" if girl else "his", friend, r.choice(PLACES))


def _a(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


def _cap(s: str) -> str:
    return s[0].upper() + s[1:]


# -- filler ----------------------------------------------------------------------------
def intro(r: random.Random, c: Cast) -> str:
    kid = "girl" if c.he == "she" else "boy"
    return r.choice([
        f"Once upon a time, there was {_a(r.choice(CHILD_ADJS))} {kid} named {c.name}.",
        f"Once upon a time, there was {_a(r.choice(CHILD_ADJS))} {r.choice(ANIMALS)} named {c.name}.",
        f"Once upon a time, in {_a(r.choice(SIZES))} house near the {c.place}, there lived "
        f"{_a(r.choice(CHILD_ADJS))} {kid} named {c.name}.",
        f"One day, {_a(r.choice(CHILD_ADJS))} {kid} named {c.name} went to the {c.place}.",
    ])


def setup(r: random.Random, c: Cast) -> str:
    return r.choice([
        f"{_cap(c.he)} liked to {r.choice(ACTIVITIES)}.",
        f"{_cap(c.he)} had {_a(r.choice(THING_ADJS))} {r.choice(THINGS)}.",
        f"{_cap(c.he)} loved {c.his} {r.choice(THING_ADJS)} {r.choice(THINGS)} very much.",
        f"{c.name} lived with {c.his} mom and dad.",
        f"{_cap(c.he)} was very {r.choice(CHILD_ADJS)}.",
        f"{_cap(c.he)} liked to play in the {c.place}.",
        f"Every day, {c.name} liked to go to the {c.place}.",
    ])


def meet(r: random.Random, c: Cast) -> str:
    """Name the friend before the story uses the name, so a model can copy it later."""
    kid = "girl" if c.friend in GIRL_NAMES else "boy"
    return r.choice([
        f"{c.name} had a friend named {c.friend}.",
        f"{c.name} had a best friend named {c.friend}.",
        f"At the {c.place}, {c.name} met {_a(r.choice(CHILD_ADJS))} {kid} named {c.friend}.",
        f"{c.name} had a friend. {_cap('her' if kid == 'girl' else 'his')} name was {c.friend}.",
    ])


def event(r: random.Random, c: Cast) -> str:
    return r.choice([
        f"One day, {c.name} and {c.friend} went to the {c.place}.",
        f"One day, {c.name} found {_a(r.choice(THING_ADJS))} {r.choice(THINGS)} in the {c.place}.",
        f"One sunny day, {c.name} went to the {c.place} with {c.his} mom.",
        f"One morning, {c.name} wanted to play with {c.friend}.",
    ])


def filler(r: random.Random, c: Cast) -> str:
    thing, other = r.sample(THINGS, 2)
    return r.choice([
        f"{c.name} saw {_a(r.choice(SIZES))} {r.choice(ANIMALS)} near the {c.place}.",
        f"The {r.choice(ANIMALS)} was very {r.choice(FEELINGS)}.",
        f"{_cap(c.he)} wanted to play with the {thing}.",
        f"{c.name} and {c.friend} played with a {thing} and a {other}.",
        f"{_cap(c.he)} gave the {thing} to {c.friend}.",
        f"{c.friend} smiled and said thank you.",
        f"{c.name} felt {r.choice(FEELINGS)}.",
        f"They ran and jumped in the {c.place}.",
        f"{_cap(c.he)} found {_a(r.choice(THING_ADJS))} {thing} under a tree.",
        "They had a lot of fun together.",
        "They played for a long time.",
        f"{c.name} shared {c.his} {thing} with {c.friend}.",
        "The sun was warm and the sky was blue.",
        f"{_cap(c.he)} was so {r.choice(FEELINGS)} that {c.he} "
        f"{r.choice(['smiled', 'laughed', 'jumped up and down'])}.",
        f"Then, {c.name} saw {_a(r.choice(THING_ADJS))} {thing}.",
        f"{c.name} ate some {r.choice(FOODS)} with {c.his} mom.",
        f"There was a big tree in the {c.place}.",
        f"{c.friend} said yes and they played together.",
        f"The wind was soft and the {r.choice(['birds sang', 'flowers were pretty', 'grass was green'])}.",
        f"{c.name} and {c.friend} looked for {_a(r.choice(THINGS))} in the {c.place}.",
        f"{c.friend} wanted the {thing}, but {c.name} wanted it too.",
        f"{c.name} helped {c.friend} carry the {thing}.",
        f"They sat under a tree and ate some {r.choice(FOODS)}.",
        f"{c.name} was {r.choice(FEELINGS)} because {c.he} had {_a(r.choice(THING_ADJS))} {thing}.",
    ])


def ending(r: random.Random, c: Cast) -> str:
    return r.choice([
        f"From that day on, {c.name} and {c.friend} were best friends.",
        f"{c.name} was very {r.choice(FEELINGS)}.",
        f"{c.name} learned to always share with friends.",
        f"They had a great time at the {c.place}.",
        f"That night, {c.name} went to sleep with a big smile.",
        f"{c.name} and {c.friend} played together every day.",
    ])


# -- concept episodes ------------------------------------------------------------------
def _list(r: random.Random) -> str:
    """2-4 concrete noun phrases with at least one comma: ``a cloud, a small bird``."""
    nouns = r.sample(LIST_NOUNS, r.choice([2, 2, 3, 3, 3, 4]))
    items = []
    for noun in nouns:
        word = f"{r.choice(LIST_ADJS)} {noun}" if r.random() < 0.4 else noun
        items.append(f"the {word}" if r.random() < 0.15 else _a(word))
    last = r.choice([", and ", ", "] + ([" and ", " or "] if len(items) > 2 else []))
    return ", ".join(items[:-1]) + last + items[-1]


def _utterance(r: random.Random, c: Cast) -> tuple[str, str]:
    """(what is said, the speech verb that fits its punctuation)."""
    return r.choice([
        (f"Look at the {r.choice(THINGS)}!", "shouted"),
        (f"Can I play with your {r.choice(THINGS)}?", "asked"),
        (f"I love the {c.place}!", "said"),
        (f"Let's go to the {c.place}!", "said"),
        (f"Thank you, {c.friend}!", "said"),
        (f"I am so {r.choice(FEELINGS)}!", "said"),
        ("Do you want to play with me?", "asked"),
        ("Be careful!", "said"),
        ("Yes, let's play together.", "said"),
        (f"Where is my {r.choice(THINGS)}?", "asked"),
    ])


def _quote(r: random.Random, c: Cast) -> str:
    speaker = r.choice([c.name, c.friend, "Mom", "Dad", f"The {r.choice(ANIMALS)}"])
    words, verb = _utterance(r, c)
    line = f'{speaker} {verb}, ["|quote]{words}"'
    if r.random() < 0.4:  # a reply, so quotes come in little conversations
        reply = r.choice(["Yes!", "Okay!", "That sounds fun!", "Thank you!", "I will help you."])
        line += f' {c.friend if speaker == c.name else c.name} said, ["|quote]{reply}"'
    return line


def _pretend_list(r: random.Random, c: Cast) -> str:
    items = f"[{_list(r)}|pretend_list]"
    lead = r.choice([
        f"{c.name} and {c.friend} liked to play pretend. They pretended to be {items}.",
        f"They played a pretend game. In their game, the {r.choice(THINGS)} was {items}.",
        f"{c.name} looked at the sky and wondered about {items}.",
        f"{c.name} closed {c.his} eyes and imagined {items}.",
        f'{c.name} said, ["|quote]Let\'s pretend we are {items}!"',
    ])
    return lead + " " + r.choice(["They had so much fun playing pretend.", "It was the best game ever.",
                                  f"{c.friend} laughed.", "It was a fun game."])


def _time_to(r: random.Random, c: Cast) -> str:
    end = r.choice(TIME_TO_ENDINGS)
    lead = r.choice([
        f"They were having fun, but then it was [time|time_to] {end}.",
        f"They played and played. Then it was [time|time_to] {end}.",
        f"It was getting dark, so it was [time|time_to] {end}.",
        f"{c.name} was having so much fun, but soon it was [time|time_to] {end}.",
        f"Mom came and said it was [time|time_to] {end}.",
        f'Mom said, ["|quote]It is [time|time_to] {end}."',
    ])
    return lead + " " + r.choice([
        f"{c.name} was a little sad, but {c.he} knew {c.he} could play again tomorrow.",
        f"{c.name} said goodbye to {c.friend}.", "They went home together.", f"{c.name} said okay."])


def _danger(r: random.Random, c: Cast) -> str:
    word = r.choice(DANGER_WORDS)
    d = f"[{word}|danger]"
    lead = r.choice([
        f"Suddenly, there was a big {d}!",
        f"Suddenly, there was a big {d} near the {c.place}.",
        f"Oh no! There was a big {d}!",
        f"Then, something bad happened. There was a big {d}.",
    ])
    follow = r.choice([
        f"{c.name} was very scared.", f"{c.name} and {c.friend} ran to a safe place.",
        f"The {d} was very scary.", f"Everyone ran away from the {d}.",
        f"{c.name} called for help and Mom came.",
    ])
    return f"{lead} {follow} " + r.choice(["Soon, everyone was safe.", f"After the {d}, the sun came out.",
                                          f"{c.name} hugged {c.his} mom."])


EPISODES = {"quote": _quote, "pretend_list": _pretend_list, "time_to": _time_to, "danger": _danger}
