"""Plots draw what they are given: the lift plot's bars and their labels."""
from __future__ import annotations

import math
from types import SimpleNamespace

from sae_steer.measure import poisson_ratio
from sae_steer.ui.plots import plot_architectures, plot_lifts


def _result(feature, control, direction=None):
    side = lambda lift: SimpleNamespace(vs_unsteered=SimpleNamespace(lift=lift))  # noqa: E731
    return SimpleNamespace(report=SimpleNamespace(lift=feature, control=side(control)),
                           direction=side(direction) if direction is not None else None)


def test_plot_lifts_draws_feature_control_and_context_direction():
    quote = _result(poisson_ratio(400, 1e4, 40, 1e4), poisson_ratio(42, 1e4, 40, 1e4),
                    poisson_ratio(300, 1e4, 40, 1e4))
    rare = _result(poisson_ratio(5, 1e4, 0, 1e4), poisson_ratio(0, 1e4, 0, 1e4))  # inf and nan
    assert math.isinf(rare.report.lift.value)
    fig = plot_lifts({"quote": quote, "rare": rare}, target=3.0)
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert sorted(labels) == sorted(["steered feature", "random direction, same norm",
                                     "concept's context direction, same norm", "target 3x"])
    assert len(ax.containers) == 5  # 3 bars for quote, 2 for rare (no direction measured)
    lo, hi = ax.get_xlim()
    assert 0 < lo < 1 < 10 < hi and math.isfinite(hi)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["quote", "rare"]


def test_plot_screen_marks_confirmed_and_recommended_features():
    from sae_steer.config import SelectConfig, SteerConfig
    from sae_steer.measure import SteerabilityScreen
    from sae_steer.ui.plots import plot_screen

    def row(f, score, gain):
        return {"feature": f, "output_score": score, "fires_gain": gain,
                "fires_gain_lo": gain - 0.2, "fires_gain_hi": gain + 0.2}

    stage1 = {f: row(f, 0.1 * f, 0.05 * f) for f in range(6)}
    conf = {4: {"passed": ["own firing"], "strength": 1.1, "recommended": True},
            5: {"passed": ["own firing"], "strength": 0.4, "recommended": False}}
    screen = SteerabilityScreen(list(range(6)), stage1, conf, SelectConfig(), SteerConfig())
    ax = plot_screen(screen).axes[0]
    assert "6 features screened, 1 recommended" == ax.get_title()
    assert [t.get_text() for t in ax.texts] == ["4"]  # only the recommended one is numbered
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert sorted(labels) == ["confirmed on fresh seeds", "ranking (8 samples)"]


def test_plot_architectures_puts_each_architecture_on_both_panels():
    finals = {"relu": {"l0": 10.0, "explained_variance": 0.88, "ce_increase": 0.1},
              "topk": {"l0": 10.0, "explained_variance": 0.9, "ce_increase": 0.08},
              "jumprelu": {"l0": 12.0, "explained_variance": 0.91}}
    fig = plot_architectures(finals)
    ev, ce = fig.axes
    assert [t.get_text() for t in ev.texts] == ["relu", "topk", "jumprelu"]
    assert len(ce.collections) == 3 and "CE" in ce.get_title()


def test_a_plot_shows_as_a_png_without_the_inline_backend():
    """Notebook 02 never runs ``%matplotlib inline``: its figures must still render as
    pictures, not as ``<Figure size 600x280 with 1 Axes>``."""
    from IPython.core.formatters import DisplayFormatter

    from sae_steer.ui.plots import plot_activation_histogram
    fig = plot_activation_histogram([0.1, 1.0, 10.0], [3, 5])
    data, _ = DisplayFormatter().format(fig)  # a bare formatter: no Figure printer registered
    assert data["image/png"][:8] == b"\x89PNG\r\n\x1a\n"


def test_the_inline_backend_printer_still_wins_when_it_is_on():
    """With ``%matplotlib inline`` IPython's Figure printer draws it: one picture, not two."""
    from IPython.core.formatters import DisplayFormatter
    from matplotlib.figure import Figure

    from sae_steer.ui.plots import plot_activation_histogram
    formatter = DisplayFormatter()
    formatter.formatters["image/png"].for_type(Figure, lambda fig: b"inline")
    data, _ = formatter.format(plot_activation_histogram([0.1, 1.0], [3]))
    assert data["image/png"] == b"inline"
