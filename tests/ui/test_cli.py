"""The command line: concept marking, argument errors, and the demo end to end."""
import os
import subprocess
import sys

import pytest

from sae_steer.ui.cli import _parser
from sae_steer.ui.planted import mark_concepts


def test_mark_concepts_wraps_each_planted_span():
    tokens = ["Suddenly", ",", "there", "was", "a", "big", "fire", "!", "Mom", "said", ",",
              '"', "Run", "!", '"']
    marked = mark_concepts(tokens)
    assert "[fire]{danger}" in marked
    assert '[\"]{quote}' in marked
    # Unlabelled words pass through as natural text, punctuation attached.
    assert marked.startswith("Suddenly, there was a big")


def test_mark_concepts_on_text_without_concepts_is_plain_text():
    assert mark_concepts(["Tom", "liked", "cake", "."]) == "Tom liked cake."


def test_unknown_concept_is_rejected_by_the_parser(capsys):
    with pytest.raises(SystemExit):
        _parser().parse_args(["demo", "--concept", "dragons"])
    assert "invalid choice: 'dragons'" in capsys.readouterr().err


@pytest.mark.slow
def test_demo_runs_the_whole_pipeline():
    """The README's main command, on the (cached) small offline world."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    out = subprocess.run([sys.executable, "-m", "sae_steer", "demo", "--device", "cpu"],
                         capture_output=True, text=True, env=env, timeout=1500)
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout
    for stage in range(1, 6):
        assert f"[{stage}/5]" in text
    assert "held-out loss" in text
    assert "explained variance" in text
    assert "Excerpt 1" in text and "█" in text   # block-format top activations
    assert "steered:" in text and "unsteered:" in text


def test_mark_concepts_keeps_punctuation_attached_to_a_marked_word():
    assert mark_concepts(["a", "big", "flood", "!"]).endswith("[flood]{danger}!")
