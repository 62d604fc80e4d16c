"""render.py: exact block strings, HTML escaping, bad input."""
from __future__ import annotations

import html
import math
import re

import numpy as np
import pytest
import torch

from sae_steer.render import (BLOCKS, NON_FINITE, block_level, format_value, render_blocks, render_html,
                              table_html, table_text)


def test_blocks_seed_format_exact():
    # The seed's "a ▅ small ▆ bird ▁" and "time ▁, ▁ there ▁": token, space, block.
    tokens = ["Once", " upon", " a", " time", ",", " a", " small", " bird"]
    acts = [0.0, 0.0, 0.0, 0.0, 0.0, 3.5, 4.5, 0.0]  # levels 4 (▅) and 5 (▆)
    assert render_blocks(tokens, acts, 7.0) == "Once ▁ upon ▁ a ▁ time ▁, ▁ a ▅ small ▆ bird ▁"


def test_blocks_every_level_exact():
    # max 7: level k covers ((k-1), k]; tiny positive is ▂; above max is █; negative ▁.
    acts = [-1.0, 0.0, 1e-6, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 6.5, 7.0, 9.0]
    tokens = list("abcdefghijklm")
    assert render_blocks(tokens, acts, 7.0) == (
        "a ▁b ▁c ▂d ▂e ▃f ▃g ▄h ▅i ▆j ▇k █l █m █"
    )


def test_levels_monotone_and_bounds():
    values = [i / 100 for i in range(-50, 1000)]
    levels = [block_level(v, 3.3) for v in values]
    assert levels == sorted(levels)
    assert block_level(0.0, 3.3) == 0 and block_level(3.3, 3.3) == 7
    assert block_level(3.3 * 3 / 7, 3.3) == 3  # exact boundary stays in the lower level
    assert BLOCKS[0] == "▁" and BLOCKS[-1] == "█"


def test_blocks_tensor_input_and_newlines():
    tokens = [".", "\n", "\n", "After"]
    acts = torch.tensor([0.0, 0.0, 0.0, 2.0])
    # the seed: ". ▁ ▁ ▁After ▁" (newline tokens collapse to nothing)
    assert render_blocks(tokens, acts, torch.tensor(2.0)) == ". ▁ ▁ ▁After █"
    assert render_blocks(tokens, acts, 2.0, newline="⏎") == ". ▁⏎ ▁⏎ ▁After █"


@pytest.mark.parametrize("fn", [render_blocks, render_html])
def test_mismatched_lengths(fn):
    with pytest.raises(ValueError, match="3 tokens but 2 activations"):
        fn(["a", "b", "c"], [0.0, 1.0], 1.0)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_max_act(bad):
    with pytest.raises(ValueError, match="max_act must be a positive"):
        render_blocks(["a"], [0.0], bad)


def test_nan_activation():
    with pytest.raises(ValueError, match="NaN"):
        render_blocks(["a", "b"], [0.0, float("nan")], 1.0)


NASTY = ['<script>alert("x")</script>', "<img src=x onerror=alert(1)>", "A & B", "\"q\" 'p'", " ünï😀"]


def test_html_escapes_every_token_and_attribute():
    out = render_html(NASTY, [0.0, 1.0, 2.0, 0.5, 0.25], 2.0, feature=7, caption="<b>cap</b> & co")
    # No markup from the data survives: the only tags are ours.
    tags = set(re.findall(r"<(/?[a-zA-Z]+)", out))
    assert tags <= {"div", "/div", "span", "/span"}
    assert "<script" not in out and "<img" not in out and "onerror=alert" not in out.replace("onerror=alert(1)&gt;", "")
    for token in NASTY:
        assert html.escape(token, quote=True) in out
    assert "&lt;b&gt;cap&lt;/b&gt; &amp; co" in out
    assert 'data-feature="7"' in out
    # Round trip: unescaping the span texts gives the tokens back exactly.
    texts = re.findall(r'<span class="sae-tok"[^>]*>(.*?)</span>', out)
    assert [html.unescape(t) for t in texts] == NASTY


def test_html_attributes_and_intensity():
    out = render_html(["a", "b", "c"], [0.0, 1.0, 4.0], 2.0)
    assert "data-feature" not in out
    assert re.findall(r'data-act="([^"]*)"', out) == ["0", "1", "4"]
    alphas = re.findall(r"rgba\(255, 128, 0, ([0-9.]+)\)", out)
    assert [float(a) for a in alphas] == [0.0, 0.5, 1.0]
    # Quotes inside a token cannot close the title attribute.
    quoted = render_html(['"x" onmouseover="alert(1)'], [1.0], 1.0, feature=0)
    assert ' onmouseover="' not in quoted
    assert "&quot;x&quot; onmouseover=&quot;alert(1)" in quoted


# ---------------------------------------------------------------- tables ----

@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan, np.float64("inf"), np.float32("nan")])
def test_non_finite_values_read_as_too_few_samples(value):
    assert format_value(value) == NON_FINITE == "too few samples"


@pytest.mark.parametrize("value, digits, text", [
    (6.25, 3, "6.25"), (1 / 3, 3, "0.333"), (1 / 3, 2, "0.33"), (np.float32(0.5), 3, "0.5"),
    (12, 3, "12"), (True, 3, "True"), ("inf (0.19)", 3, "inf (0.19)"), (None, 3, "None")])
def test_finite_values_keep_their_format(value, digits, text):
    # ints, bools and strings pass through untouched; only floats are rounded
    assert format_value(value, digits) == text


@pytest.mark.parametrize("value, text", [
    (["own firing", "own words"], "own firing, own words"), ([], "none"), ((0.25, 1 / 3), "0.25, 0.333"),
    ({"b", "a"}, "a, b"), ({"lift": 2.0, "cost": math.inf}, f"lift 2, cost {NON_FINITE}")])
def test_collections_read_as_words_not_reprs(value, text):
    assert format_value(value) == text
    assert re.findall(r"<td>(.*?)</td>", table_html([{"passed": value}])) == [text]


def test_tables_share_the_non_finite_rule():
    rows = [{"concept": "quote", "lift": math.inf, "lift 95% low": 1.44},
            {"concept": "danger", "lift": math.nan, "lift 95% low": 0.0}]
    cells = re.findall(r"<td>(.*?)</td>", table_html(rows))
    assert cells == ["quote", NON_FINITE, "1.44", "danger", NON_FINITE, "0"]
    text = table_text(rows)
    assert text.count(NON_FINITE) == 2 and not re.search(r"\b(inf|nan)\b", text)
    # display only: the rows themselves still hold the computed values
    assert rows[0]["lift"] == math.inf and math.isnan(rows[1]["lift"])
