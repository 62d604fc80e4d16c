"""Word lists for the toy story world.

Kept apart from the grammar so the rule-based labeler (``labels.py``) can share the
concept word sets without importing the generator. Every concept word appears ONLY in
its concept's templates, so a word-level rule recovers the planted labels exactly.
"""
from __future__ import annotations

GIRL_NAMES = ("Lily", "Mia", "Sue", "Anna", "Emma", "Lucy", "Amy", "Sara", "Zoe", "Ella", "Kate", "Rose")
BOY_NAMES = ("Tim", "Ben", "Max", "Tom", "Sam", "Jack", "Leo", "Joe", "Bob", "Dan", "Finn", "Jake")
ANIMALS = ("cat", "dog", "bunny", "bear", "duck", "frog", "mouse", "fox", "puppy", "kitten", "owl", "squirrel")
CHILD_ADJS = ("little", "kind", "happy", "brave", "shy", "curious", "silly", "small", "friendly", "sweet")
PLACES = ("park", "garden", "forest", "beach", "pond", "farm", "hill", "river", "playground", "zoo", "lake", "meadow")
THINGS = ("ball", "kite", "doll", "truck", "box", "book", "hat", "cake", "flower", "stick", "rock", "shell",
          "cookie", "apple", "balloon", "blanket", "toy", "leaf", "cup", "bike")
THING_ADJS = ("red", "blue", "big", "shiny", "pretty", "soft", "new", "round", "green", "yellow", "old", "funny")
FEELINGS = ("happy", "sad", "excited", "proud", "tired", "surprised", "glad", "calm", "sleepy")
ACTIVITIES = ("play outside", "draw pictures", "sing songs", "run fast", "read books", "jump high",
              "build with blocks", "dance", "swim", "climb trees", "look at the sky", "pick flowers")
FOODS = ("soup", "cookies", "bread", "pie", "apples", "pancakes", "ice cream", "sandwiches")
SIZES = ("big", "small", "tall", "tiny", "old", "new")

# -- concept vocabularies -----------------------------------------------------------
LIST_NOUNS = ("cloud", "bird", "boat", "castle", "star", "ship", "dragon", "pirate", "king", "queen",
              "rocket", "train", "fish", "moon", "horse", "robot", "island", "lion", "butterfly",
              "mountain", "whale", "tower", "knight", "airplane", "unicorn", "monkey")
"""Concrete nouns that appear in pretend-play lists (``a cloud, a small bird``)."""
LIST_ADJS = ("small", "big", "red", "blue", "shiny", "tall", "tiny", "fluffy", "green", "yellow",
             "old", "little", "brave", "happy", "golden", "fast")
DANGER_WORDS = ("fire", "flood", "storm", "earthquake", "crash", "tornado")
"""Dangerous things; they never appear outside danger episodes."""
TIME_TO_ENDINGS = ("to go home", "for bed", "for dinner", "for a nap", "to clean up", "to say goodbye",
                   "to go to sleep", "for lunch", "to go inside", "for a bath", "to eat")
"""What it is time for: ``it was time <ending>``."""
