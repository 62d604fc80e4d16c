"""Text and HTML for activations and tables: block characters, highlighted tokens, tables.

Standard library only (``html``, ``math``, ``numbers``): rendering must not pull in torch, so a
writeup or a widget can format activations it got from anywhere. Activations may be a
list, a tuple or a 1-D tensor / array: every value goes through ``float(a)``.

Block format (the seed writeup's): each token as the tokenizer spells it (leading
space included), then a space, then one of eight block characters, concatenated::

    tokens  ["Once", " upon", ",", " a", " small", " bird"]
    text    "Once ▁ upon ▁, ▁ a ▅ small ▆ bird ▁"

A word-start token brings its own leading space, so the text reads like the seed's
``time ▁, ▁ there``; a continuation token sits right after the previous block
(``Tim ▁my ▁``).
"""
from __future__ import annotations

import html
import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

BLOCKS = "▁▂▃▄▅▆▇█"
"""Eight levels, lowest to highest. Level 0 means "did not fire"."""

_N_LEVELS = len(BLOCKS) - 1  # 7 steps above "did not fire"


def block_level(act: float, max_act: float) -> int:
    """Level 0..7 of ``act`` on a scale where ``max_act`` is the top (█).

    Bucketing: level = ceil(7 * act / max_act), clamped to 0..7. So

    - ``act <= 0`` (did not fire, or negative) -> 0 (▁),
    - any positive activation, however tiny, -> at least 1 (▂): ▁ means exactly "did
      not fire", which is what a reader needs to check that steered text activates
      the feature at all (the seed's "feature 0 doesn't even activate ...");
    - ``(k-1)/7 * max < act <= k/7 * max`` -> k, so ``act == max_act`` -> 7 (█) and
      anything above ``max_act`` (steered text can beat the reference max) is also █.

    Levels are monotone (non-decreasing) in ``act``.
    """
    if act <= 0.0:
        return 0
    return min(_N_LEVELS, max(1, math.ceil(_N_LEVELS * act / max_act - 1e-9)))


def _check(str_tokens: Sequence[str], acts: Sequence[Any], max_act: Any
           ) -> tuple[list[str], list[float], float]:
    tokens = [str(t) for t in str_tokens]
    values = [float(a) for a in acts]
    if len(tokens) != len(values):
        raise ValueError(
            f"got {len(tokens)} tokens but {len(values)} activations; "
            "pass one activation per token (same sequence, same positions)"
        )
    bad = [i for i, v in enumerate(values) if math.isnan(v)]
    if bad:
        raise ValueError(f"activation at position(s) {bad[:5]} is NaN")
    max_value = float(max_act)
    if not (max_value > 0.0 and math.isfinite(max_value)):
        raise ValueError("max_act must be a positive finite number (the feature's max "
                         f"activation), got {max_act!r}")
    return tokens, values, max_value


def render_blocks(
    str_tokens: Sequence[str], acts: Sequence[Any], max_act: float, *, newline: str = ""
) -> str:
    """The seed's block-element text: ``token + " " + block`` for every token, joined.

    ``max_act`` is the feature's max activation (from the search), so blocks compare
    across excerpts. Newlines inside tokens are replaced by ``newline`` (default "",
    as the seed's HTML collapsed them: ``. ▁ ▁ ▁After``) so one excerpt is one line.
    """
    tokens, values, max_value = _check(str_tokens, acts, max_act)
    parts = []
    for token, value in zip(tokens, values):
        text = token.replace("\r\n", newline).replace("\n", newline).replace("\r", newline)
        parts.append(f"{text} {BLOCKS[block_level(value, max_value)]}")
    return "".join(parts)


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def render_html(
    str_tokens: Sequence[str],
    acts: Sequence[Any],
    max_act: float,
    feature: int | None = None,
    *,
    caption: str | None = None,
    rgb: tuple[int, int, int] = (255, 128, 0),
) -> str:
    """Tokens as ``<span>``s shaded by activation, inside one ``<div class="sae-excerpt">``.

    - background alpha = act / max_act (clamped to 0..1); 0 = transparent;
    - ``title`` shows the value as a tooltip; ``data-act`` holds it for tests/scripts;
    - the container carries ``data-feature`` (when ``feature`` is given) and ``data-max-act``;
    - every token, the caption and every attribute value go through
      ``html.escape(..., quote=True)``: text from data sets never becomes markup.

    Whitespace is kept (``white-space: pre-wrap``), so leading spaces and newlines in
    tokens show as they are.
    """
    tokens, values, max_value = _check(str_tokens, acts, max_act)
    r, g, b = (int(c) for c in rgb)
    spans = []
    for token, value in zip(tokens, values):
        alpha = min(1.0, max(0.0, value / max_value))
        spans.append(
            f'<span class="sae-tok" data-act="{_esc(f"{value:.4g}")}" '
            f'title="{_esc(f"{token!r}: {value:.3f}")}" '
            f'style="background-color: rgba({r}, {g}, {b}, {alpha:.3f})">{_esc(token)}</span>'
        )
    attrs = f' data-feature="{_esc(int(feature))}"' if feature is not None else ""
    head = f'<div class="sae-caption">{_esc(caption)}</div>' if caption is not None else ""
    return (
        f'<div class="sae-excerpt"{attrs} data-max-act="{_esc(f"{max_value:.4g}")}" '
        f'style="white-space: pre-wrap; font-family: monospace; line-height: 1.6">'
        f"{head}{''.join(spans)}</div>"
    )


NON_FINITE = "too few samples"
"""How tables show inf and NaN. Here a non-finite statistic comes from a count too small to
estimate it (a rate ratio over zero baseline events, an interval from one sample), so the
reader gets the reason, not ``inf``. Display only: computed values and JSON keep inf/NaN."""


def format_value(value: Any, digits: int = 3) -> str:
    """A table cell: a float to ``digits`` significant digits, inf/NaN as :data:`NON_FINITE`,
    a list, tuple or set as its items in words (``own firing, own words``; empty: ``none``),
    a dict as ``key value`` pairs, anything else (ints, bools, strings) as ``str(value)``.

    A reader sees values, never a Python repr such as ``['own firing']``.
    """
    # numbers.Real also covers numpy floats; Integral excludes ints and bools
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):
        value = float(value)
        return f"{value:.{digits}g}" if math.isfinite(value) else NON_FINITE
    if isinstance(value, Mapping):
        value = [f"{k} {format_value(v, digits)}" for k, v in value.items()]
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=str) if isinstance(value, (set, frozenset)) else value
        return ", ".join(format_value(v, digits) for v in items) or "none"
    return str(value)


def _columns(rows: Sequence[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(k for r in rows for k in r))


def table_html(rows: Sequence[dict[str, Any]], digits: int = 3, *,
               css_class: str = "sae-table") -> str:
    """A plain HTML table of flat dict rows (columns: every key, in first-seen order).

    Every header and cell is escaped; cells go through :func:`format_value`.
    """
    if not rows:
        return "<p>(no rows)</p>"
    cols = _columns(rows)
    head = "".join(f"<th>{_esc(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{_esc(format_value(r.get(c, ''), digits))}</td>"
                                    for c in cols) + "</tr>" for r in rows)
    return f'<table class="{_esc(css_class)}"><tr>{head}</tr>{body}</table>'


def table_text(rows: Sequence[dict[str, Any]], digits: int = 3) -> str:
    """The same table as fixed-width text (for scripts and benchmarks)."""
    if not rows:
        return "(no rows)"
    cols = _columns(rows)
    cells = [[format_value(r.get(c, ""), digits) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) for v, w in zip(values, widths))

    return "\n".join([line(cols)] + [line(row) for row in cells])
