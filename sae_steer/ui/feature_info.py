"""What the steering panel says about a feature (``FeatureInfo``): its top words, its output
score, and whether a screen recommended it as steering, with the measured gain."""
from __future__ import annotations

import html
from typing import Any

from sae_steer.inspect import FeatureSearch, logit_effects
from sae_steer.measure.screen_results import SteerabilityScreen
from sae_steer.measure.steerability import FeatureScores

esc = html.escape


class FeatureInfo:
    """What the panel says about a feature: its top words, with scores its output score, and
    with a screen whether (and how well) it steers."""

    def __init__(self, model: Any, sae: Any, search: FeatureSearch | None = None,
                 scores: FeatureScores | None = None, n_words: int = 5,
                 screen: SteerabilityScreen | None = None):
        self.model, self.sae, self.search, self.scores, self.n = model, sae, search, scores, n_words
        self.screen = screen

    def words(self, i: int) -> str:
        """The words it fires on most (search), else those its decoder row promotes."""
        if self.search is None:
            promoted, _ = logit_effects(self.model, self.sae.W_dec[i].detach(), self.n)
            return "promotes " + " ".join(w.strip() or repr(w) for w, _ in promoted)
        try:
            top = self.search.top_tokens(i, self.model, self.n)
        except ValueError:  # a dead feature: the search says why
            return "never fired in the search"
        return "fires on " + " ".join(w.strip() or repr(w) for w, *_ in top)

    def label(self, i: int) -> str:
        """HTML: the words, and the output score when scores were given."""
        score = ("" if self.scores is None else
                 f" · output score <b>{float(self.scores.output_score[i]):.3f}</b>")
        return (f'<span class="steer-feature-info" data-feature="{int(i)}">'
                f"{esc(self.words(i))}{score}</span>")

    def choices(self, n: int = 20) -> list[tuple[str, int]]:
        """Dropdown options: up to ``n`` features the screen recommended, best first,
        labelled by their words and fire-rate gain as the report stage measured it on fresh
        seeds (none without a screen: a proxy score does not tell which features steer)."""
        if self.screen is None:
            return []
        rows = {**self.screen.confirmations, **self.screen.reports}
        return [(f"{i}: {self.words(i)} (gain {rows[i]['fires_gain']:+.2f} "
                 f"[{rows[i]['fires_gain_lo']:+.2f}, {rows[i]['fires_gain_hi']:+.2f}], "
                 f"words {rows[i]['lift']:.3g}x, at {rows[i]['scale']:g}x norm)", i)
                for i in self.screen.confirmed[:n]]

    def placeholder(self) -> str:
        """The dropdown's text when it offers nothing: why, and what to do."""
        if self.screen is None:
            return "(pass screen=screen_features(...) to list the features that steer)"
        miss = self.screen.nearest_misses(1)
        near = (f"; nearest miss: {miss[0]['feature']}, gain {miss[0]['fires_gain']:+.2f} "
                f"[{miss[0]['fires_gain_lo']:+.2f}]" if miss else "")
        return f"(the screen recommended no feature{near})"
