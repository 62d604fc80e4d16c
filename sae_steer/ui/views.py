"""Text and HTML views of what the library computed: feature cards, re-scored text,
steered samples, concept matches. Pure functions from data to strings (the figures are in
``plots.py``, the interactive widgets in ``widgets.py``). ``table_html`` (``render``'s) is
handed on here, so a notebook's views all come from ``sae_steer.ui``.
"""
from __future__ import annotations

import html
from typing import Any

from transformer_lens import HookedTransformer

from sae_steer.inspect import (Excerpt, FeatureCard, FeatureSearch, feature_card, interesting_features,
                               match_rows)
from sae_steer.measure import Rescored, rescore
from sae_steer.render import render_blocks, render_html, table_html

__all__ = ["card_html", "card_text", "columns_html", "concept_feature_report", "concept_report_text",
           "feature_text", "features_table_html", "generations_html", "interesting_features_html",
           "matches_html", "note_html", "rescored_blocks", "rescored_html", "table_html"]
from sae_steer.steer import Generation
from sae_steer.ui.plots import card_histogram, figure_png_uri


def columns_html(*parts: str) -> str:
    """HTML parts side by side in equal columns that shrink with the window (never wider
    than the page)."""
    cells = "".join(f"<div style='flex:1; min-width:0'>{p}</div>" for p in parts)
    return f"<div style='display:flex; gap:2em'>{cells}</div>"


def note_html(note: str | None) -> str:
    """A note the library has for the reader (e.g. ``screen.note(n)``: fewer recommended
    than asked for) as a boxed paragraph; None: nothing to say, an empty string.

    A writeup shows what a script would get as a warning, where the reader looks, not on
    stderr."""
    if not note:
        return ""
    return (f'<p class="sae-note" style="border-left: 4px solid #d90; padding: 0.4em 0.8em; '
            f'background: #fff8e6"><b>Note:</b> {html.escape(note)}</p>')


def concept_report_text(result: Any) -> str:
    """A concept's report in full (a ``ConceptResult`` of ``steer_concept``), each figure with
    its 95 % interval: the concept's rate and lift, the NLL cost, the random and context
    directions at the same norm, and how often the steered and on-word features fire."""
    rep, on = result.report, result.candidates.on_word
    lines = [f"{result.choice.concept}: feature {rep.feature} at {result.relative_scale:g}× norm "
             f"(scale {rep.scale:.3g}), {rep.steered.n_samples} samples per side",
             f"  concept per 100 tokens  steered {rep.steered.concept_rate}  unsteered "
             f"{rep.unsteered.concept_rate}  lift {rep.lift}",
             f"  NLL (nats/token)        steered {rep.steered.nll}  unsteered {rep.unsteered.nll}"
             f"  cost {rep.nll_cost};  repeated 3-grams cost {rep.rep_cost}"]
    for name, arm in (("random direction", rep.control), ("context direction", result.direction)):
        if arm is not None:
            vs = arm.vs_unsteered
            lines.append(f"  {name}, same norm: lift {vs.lift}, NLL cost {vs.nll_cost}")
    for f, name in ((rep.feature, "steered feature"), (on, "on-word feature")):
        lines.append(f"  {name} {f} fires in  steered {rep.steered.fires[f]}  unsteered "
                     f"{rep.unsteered.fires[f]}  gain {rep.fires_gain[f]}")
    return "\n".join(lines)


def rescored_blocks(r: Rescored) -> str:
    """A re-scored text in the seed's block format (``Once ▁ upon ▁ ...``)."""
    return render_blocks(r.str_tokens, r.acts, r.scale_max)


def rescored_html(r: Rescored) -> str:
    """A re-scored text as highlighted HTML (``data-feature`` on the container)."""
    return render_html(r.str_tokens, r.acts, r.scale_max, feature=r.feature)


def _band_label(card: FeatureCard, band: int) -> str:
    lo, hi = band / card.n_bands, (band + 1) / card.n_bands
    return f"{lo:.0%}-{hi:.0%} of max"


def _strings(ex: Excerpt) -> list[str]:
    return ex.str_tokens or [str(t) for t in ex.token_ids]


def _token_list(pairs) -> str:
    return ", ".join(f"{tok.strip() or repr(tok)} ({val:+.2f})" for tok, val, *_ in pairs)


def card_text(card: FeatureCard, *, n_top: int | None = None, n_bands: int | None = None) -> str:
    """The card in the seed's block-element format (plain text, one excerpt per line)."""
    lines = [f"Feature {card.feature}: fired on {card.density:.3%} of {card.n_tokens:,} tokens; "
             f"max {card.max_act:.3f}, mean when firing {card.mean_act:.3f}",
             f"fires on: {_token_list(card.fires_on)}",
             f"promotes: {_token_list(card.promotes)}",
             f"suppresses: {_token_list(card.suppresses)}",
             "", "Top excerpts:"]
    for n, ex in enumerate(card.top[:n_top], 1):
        lines.append(f"Excerpt {n} (max {ex.peak_act:.3f}):")
        lines.append(render_blocks(_strings(ex), ex.acts, card.max_act))
    lines += ["", "Lower activation bands:"]
    for ex in card.bands[:n_bands]:
        lines.append(f"[{_band_label(card, ex.band)}] (max {ex.peak_act:.3f}):")
        lines.append(render_blocks(_strings(ex), ex.acts, card.max_act))
    return "\n".join(lines)


def card_html(card: FeatureCard, *, n_top: int | None = None, n_bands: int | None = None,
              histogram: bool = False) -> str:
    """The card as HTML; the outer ``div.sae-card`` carries ``data-feature``.

    ``histogram=True`` embeds the activation histogram as a PNG (for widgets, where one
    HTML value must hold the whole card).
    """
    esc = html.escape

    def tokens(pairs) -> str:
        return esc(_token_list(pairs), quote=True)

    def excerpt(ex: Excerpt, caption: str) -> str:
        return render_html(_strings(ex), ex.acts, card.max_act, feature=card.feature,
                           caption=caption)

    parts = [f'<div class="sae-card" data-feature="{card.feature}">',
             f"<h3>Feature {card.feature}</h3>",
             f"<p>fired on {card.density:.3%} of {card.n_tokens:,} tokens; max "
             f"{card.max_act:.3f}; mean when firing {card.mean_act:.3f}</p>",
             f"<p><b>fires on</b>: {tokens(card.fires_on)}<br><b>promotes</b>: "
             f"{tokens(card.promotes)}<br><b>suppresses</b>: {tokens(card.suppresses)}</p>",
             "<h4>Top excerpts</h4>"]
    parts += [excerpt(ex, f"max {ex.peak_act:.3f}") for ex in card.top[:n_top]]
    parts.append("<h4>Lower activation bands</h4>")
    parts += [excerpt(ex, f"{_band_label(card, ex.band)}, max {ex.peak_act:.3f}")
              for ex in card.bands[:n_bands]]
    if histogram:
        uri = figure_png_uri(card_histogram(card))
        parts.append(f'<img alt="activation histogram" src="{uri}">')
    # The seed's "click to see" block-element version of the same excerpts.
    parts.append("<details><summary>block-element format</summary><pre>"
                 f"{esc(card_text(card, n_top=n_top, n_bands=n_bands))}</pre></details>")
    parts.append("</div>")
    return "\n".join(parts)


def features_table_html(rows: list[dict]) -> str:
    """An HTML table of ``interesting_features`` (or ``match_rows``) rows, values escaped."""
    return table_html(rows, digits=4, css_class="sae-features")


def interesting_features_html(search: FeatureSearch, model: Any = None, n: int = 15) -> str:
    """The table of ``inspect.interesting_features``: alive, not dense, strongest first."""
    return features_table_html(interesting_features(search, model, n=n))


def matches_html(matches: dict) -> str:
    """The table of ``inspect.match_rows``: each concept's best feature and its scores."""
    return features_table_html(match_rows(matches))


def feature_text(search: FeatureSearch, model: Any, sae: Any, feature: int, *,
                 n_top: int | None = None, n_bands: int | None = None) -> str:
    """``card_text`` of ``inspect.feature_card(search, model, sae, feature)``."""
    return card_text(feature_card(search, model, sae, feature), n_top=n_top, n_bands=n_bands)


def generations_html(
    model: HookedTransformer, sae: Any, gen: Generation, feature: int, title: str = "",
    max_act: float | None = None,
) -> str:
    """The seed's layout: each sample's text, then its re-scored version behind a click.

    The container carries ``data-feature`` and ``data-scale`` (absolute) for tests.
    """
    scored = rescore(model, sae, gen, feature, max_act=max_act)
    parts = [f'<div class="steer-samples" data-feature="{int(feature)}" '
             f'data-scale="{gen.scale:g}">']
    if title:
        parts.append(f"<h4>{html.escape(title)}</h4>")
    for text, r in zip(gen.texts, scored):
        parts.append(
            f"<p>{html.escape(text)}</p><details><summary>Click to see the version with "
            f"feature {int(feature)}'s activations highlighted</summary>{rescored_html(r)}"
            f"<pre style='white-space: pre-wrap'>{html.escape(rescored_blocks(r))}</pre></details>")
    return "".join(parts) + "</div>"


def concept_feature_report(model, sae, search: FeatureSearch, matches: dict, *,
                           n_excerpts: int = 3) -> str:
    """Per planted concept: its best feature, the match scores, top excerpts in blocks."""
    lines = []
    for row in match_rows(matches):
        f = row["feature"]
        scores = ", ".join(f"{k} {v:.2f}" for k, v in row.items()
                           if k not in ("concept", "feature"))
        lines.append(f'Concept "{row["concept"]}": feature {f} ({scores})')
        try:
            excerpts = search.top_excerpts(f, model)[:n_excerpts]
        except ValueError as e:  # e.g. the feature never fired on the search's text set
            lines += [f"  ({e})", ""]
            continue
        max_act = float(search.max_act[f])
        for n, ex in enumerate(excerpts, 1):
            lines.append(f"Excerpt {n} (max {ex.peak_act:.2f}):")
            lines.append(render_blocks(ex.str_tokens, ex.acts, max_act))
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"
