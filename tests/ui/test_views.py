"""Views a notebook shows in place of what a script would print or warn."""
from sae_steer.ui.views import columns_html, note_html


def test_a_note_is_a_visible_escaped_paragraph_and_none_shows_nothing():
    html = note_html("only 0 of 3 screened features are recommended <asked for 2>")
    assert html.startswith('<p class="sae-note"') and "<b>Note:</b>" in html
    assert "&lt;asked for 2&gt;" in html and "<asked" not in html
    assert note_html(None) == "" and note_html("") == ""


def test_columns_sit_side_by_side_and_may_shrink():
    html = columns_html("<p>a</p>", "<p>b</p>")
    assert html.startswith("<div style='display:flex")
    assert html.count("flex:1; min-width:0") == 2 and html.index("<p>a</p>") < html.index("<p>b</p>")
