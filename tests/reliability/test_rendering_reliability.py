"""Data-set text renders inert and exact, in HTML and in the block format.

"Inert": parsing the HTML finds only our own tags and attributes (no <script>, no <img>,
no on* handler) whatever the tokens contain. "Exact": the text of each token's <span>,
unescaped by the parser, is the token itself, character for character; the block format
holds the token verbatim.
"""
from __future__ import annotations

import html
from html.parser import HTMLParser

import pytest

from builders import make_sae
from sae_steer.render import BLOCKS, block_level, render_blocks, render_html

HOSTILE = [
    "<script>alert(1)</script>",
    '<img src=x onerror="alert(1)">',
    "</span></div><script>",
    "&",
    "&amp;",
    "&lt;b&gt;",
    '"',
    "'",
    '" onmouseover="alert(1)',
    "`${x}`",
    " café",
    "日本語",
    "😀",
    "naïve\u200b",
    "\u202eevil",
    " <!-- x -->",
    "<![CDATA[x]]>",
    " ",
    "",
]
ALLOWED_TAGS = {"div", "span"}


class _Spans(HTMLParser):
    """Collects every start tag with its attributes, and the text inside each token span."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.comments: list[str] = []
        self.tokens: list[str] = []
        self._in_token = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        if tag == "span" and attrs.get("class") == "sae-tok":
            self._in_token = True
            self.tokens.append("")

    def handle_endtag(self, tag):
        if tag == "span":
            self._in_token = False

    def handle_data(self, data):
        if self._in_token:
            self.tokens[-1] += data

    def handle_comment(self, data):
        self.comments.append(data)

    def unknown_decl(self, data):
        self.comments.append(data)


def _parse(markup: str) -> _Spans:
    parser = _Spans()
    parser.feed(markup)
    parser.close()
    return parser


def assert_inert(markup: str, allowed_tags=ALLOWED_TAGS) -> _Spans:
    lowered = markup.lower()
    assert "<script" not in lowered and "<img" not in lowered and "<!--" not in lowered
    parsed = _parse(markup)
    assert {tag for tag, _ in parsed.tags} <= allowed_tags
    for tag, attrs in parsed.tags:
        assert not [a for a in attrs if a.startswith("on")], (tag, attrs)
    assert parsed.comments == []
    return parsed


def test_render_html_of_hostile_tokens_is_inert_and_exact():
    acts = [float(i % 5) for i in range(len(HOSTILE))]
    markup = render_html(HOSTILE, acts, 4.0, feature=3, caption="<b>caption</b> & \"more\"")
    parsed = assert_inert(markup)
    assert parsed.tokens == HOSTILE  # every token back, character for character
    assert [a["data-act"] for t, a in parsed.tags if a.get("class") == "sae-tok"] == \
        [f"{v:.4g}" for v in acts]


@pytest.mark.parametrize("token", HOSTILE, ids=[repr(t) for t in HOSTILE])
def test_each_hostile_token_alone(token):
    markup = render_html([token], [1.0], 1.0)
    parsed = assert_inert(markup)
    assert parsed.tokens == [token]
    # the title tooltip shows the token too, and stays inside its attribute
    (title,) = [a["title"] for t, a in parsed.tags if a.get("class") == "sae-tok"]
    assert title == f"{token!r}: 1.000"
    # and the escaping is the standard one: unescaping the span text gives the token back
    inner = markup.split('">', 2)[-1].rsplit("</span>", 1)[0]
    assert html.unescape(inner) == token


def test_block_format_keeps_hostile_tokens_verbatim():
    acts = [float(i % 8) for i in range(len(HOSTILE))]
    text = render_blocks(HOSTILE, acts, 7.0)
    assert text == "".join(f"{t} {BLOCKS[i % 8]}" for i, t in enumerate(HOSTILE))


def test_block_format_inside_html_pre_is_escaped():
    """The card and the widget put the block text in a <pre>: it must be escaped there."""
    from sae_steer.inspect.results import Excerpt
    from sae_steer.ui.views import card_html

    card = _card(Excerpt(feature=0, text_index=0, peak_act=2.0, token_ids=[0] * len(HOSTILE),
                         acts=[2.0] * len(HOSTILE), str_tokens=HOSTILE))
    markup = card_html(card)
    parsed = assert_inert(markup, ALLOWED_TAGS | {"h3", "h4", "p", "b", "br", "details",
                                                  "summary", "pre"})
    assert parsed.tokens == HOSTILE + HOSTILE  # top excerpt + one band excerpt
    pre = markup.split("<pre>", 1)[1].split("</pre>", 1)[0]
    assert html.unescape(pre).count("<script>alert(1)</script> █") == 2


def _card(excerpt):
    from sae_steer.inspect.card import FeatureCard

    band = type(excerpt)(**{**excerpt.__dict__, "band": 3})
    return FeatureCard(feature=0, n_tokens=100, density=0.1, max_act=2.0, mean_act=1.0,
                       top=[excerpt], bands=[band], n_bands=10, hist_edges=[0.0, 1.0],
                       hist_counts=[1], fires_on=[("<script>", 1.0, 1)],
                       promotes=[('<img src=x onerror="alert(1)">', 0.5)],
                       suppresses=[("&amp;", -0.5)])


# --- end to end: text from a data set through the library's own rendering -------------

TEXTS = [
    "Once upon a time <script>alert(1)</script> .",
    "<img src=x onerror=alert(1)> & &amp; \" ' café 日本 語 😀 naïve .",
]


def test_rescored_data_set_text_is_inert_and_exact(tok_model):
    from sae_steer.measure import rescore
    from sae_steer.ui.views import rescored_blocks, rescored_html

    rescored = rescore(tok_model, make_sae(), TEXTS, 1)
    for text, r in zip(TEXTS, rescored):
        parsed = assert_inert(rescored_html(r))
        assert parsed.tokens == r.str_tokens
        # Shown tokens carry the space the decoder puts before them (" upon", as in the
        # seed's "Once ▁ upon ▁"); otherwise they are the model's tokens, exactly.
        assert [t.removeprefix(" ") for t in r.str_tokens] == list(tok_model.to_str_tokens(text))
        shown = [t.removeprefix(" ") for t in r.str_tokens]
        assert "<" in shown and ("script" in shown or "img" in shown)
        top = max(max(x.acts) for x in rescored)
        assert rescored_blocks(r) == "".join(f"{t} {BLOCKS[block_level(a, top)]}"
                                   for t, a in zip(r.str_tokens, r.acts))


def test_searched_excerpts_and_card_of_data_set_text_are_inert(tok_model):
    from sae_steer.config import SearchConfig
    from sae_steer.inspect.card import feature_card
    from sae_steer.inspect.search import search_features
    from sae_steer.ui.views import card_html, card_text

    sae = make_sae()
    search = search_features(tok_model, sae, TEXTS * 2, SearchConfig(k=2, context_size=32, context_left=32,
                                                          context_right=32),
                             progress=False)
    feature = int(search.max_act.argmax())
    card = feature_card(search, tok_model, sae, feature)
    markup = card_html(card, histogram=False)
    parsed = assert_inert(markup, ALLOWED_TAGS | {"h3", "h4", "p", "b", "br", "details",
                                                  "summary", "pre"})
    shown = [t for ex in card.top + card.bands for t in ex.str_tokens]
    assert parsed.tokens == shown
    assert any("<" in t for t in shown) and any("&" in t for t in shown)
    text = card_text(card)
    for ex in card.top:
        assert render_blocks(ex.str_tokens, ex.acts, card.max_act) in text


def test_generated_text_in_the_report_html_is_inert(tok_model):
    from sae_steer.steer import generate_steered
    from sae_steer.ui.views import generations_html

    gen = generate_steered(tok_model, make_sae(), 2, 3.0, prompt="Once upon a time <script>",
                           max_new_tokens=12, n_samples=2, seed=0)
    markup = generations_html(tok_model, make_sae(), gen, 2, title="<script>x</script>")
    assert_inert(markup, ALLOWED_TAGS | {"h4", "p", "details", "summary", "pre"})
    assert "<h4>&lt;script&gt;x&lt;/script&gt;</h4>" in markup
    assert html.unescape(markup).count("< script >") >= 2  # the text is shown, as text
