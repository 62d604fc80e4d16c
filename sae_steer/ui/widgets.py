"""Widgets: ``SteeringPanel`` (up to three features with their scales, what each feature
is, a Generate button, re-scored output) and ``card_widget`` (a feature picker and its card).

The panel shows, for one seed, the steered and unsteered texts, both re-scored by the
unsteered model + SAE. Beside each feature: its top words (a ``FeatureSearch``, else the
tokens its decoder row promotes) and output score (``feature_scores``). The dropdown offers
only features a screen recommended (``screen_features``), with their measured fire-rate gain
and interval; picking one sets its recommended scale. The browser test's
contract: a "Generate" button, sliders described "feature" and "scale", and an output
``<div class="steer-output" data-feature=.. data-scale=..>`` (first feature, slider scale).

Nothing imports this module (it needs ipywidgets); it may import everything.
"""
from __future__ import annotations

import html
from typing import Any

import ipywidgets as W

from sae_steer.config import MODES, SteerConfig, steer_config
from sae_steer.config.steer import POSITIONS, SCALE_UNITS
from sae_steer.inspect import FeatureSearch, feature_card
from sae_steer.measure import rescore
from sae_steer.measure.screen_results import SteerabilityScreen
from sae_steer.measure.steerability import FeatureScores
from sae_steer.steer import Steerer, generate_steered, generate_unsteered
from sae_steer.ui.feature_info import FeatureInfo
from sae_steer.ui.views import card_html, rescored_blocks, rescored_html

MODE_LABELS = {"decoder_row": "decoder row", "clamp": "clamp",
               "decoder_onehot": "decoder(onehot)"}
UNIT_LABELS = {"absolute": "absolute", "relative": "× residual norm",
               "max_act": "× max activation"}
POSITION_LABELS = {"all": "all positions", "generated": "generated tokens only"}
UNIT_RANGES = {"relative": (-2.0, 2.0, 0.01, 0.5), "max_act": (-20.0, 20.0, 0.1, 4.0)}
"""Scale sliders' (min, max, step, default) per unit; absolute: the panel's scale_range, else
the relative range in the first feature's absolute units (``SteeringPanel.absolute_range``)."""
N_FEATURES = 3  # features steered at once, at most
esc = html.escape


class FeatureRow:
    """One steered feature: a slider and number box, its scale slider, and what it is."""

    def __init__(self, n: int, d_sae: int, feature: int, scale: float,
                 slider_range: tuple[float, float, float], info: FeatureInfo):
        suffix = "" if n == 1 else f" {n}"
        self.feature = W.IntSlider(value=min(max(int(feature), 0), d_sae - 1), min=0,
                                   max=d_sae - 1, description="feature" + suffix,
                                   continuous_update=False)
        self.feature_box = W.BoundedIntText(value=self.feature.value, min=0, max=d_sae - 1,
                                            layout=W.Layout(width="90px"))
        W.link((self.feature, "value"), (self.feature_box, "value"))
        lo, hi, step = slider_range
        self.scale = W.FloatSlider(value=scale, min=lo, max=hi, step=step,
                                   description="scale" + suffix, readout_format=".2f",
                                   continuous_update=False)
        self.info, self._info = W.HTML(), info
        self.feature.observe(lambda change: self.describe(), names="value")
        self.describe()
        self.widget = W.VBox([W.HBox([self.feature, self.feature_box, self.info]), self.scale])

    def describe(self) -> None:
        try:
            self.info.value = self._info.label(int(self.feature.value))
        except Exception as e:  # a label is decoration: never let it break the panel
            self.info.value = f"<i>{esc(str(e))}</i>"

    def set_range(self, lo: float, hi: float, step: float, value: float) -> None:
        s = self.scale  # widen, then narrow: min <= max holds at every step
        s.min, s.max = min(s.min, lo), max(s.max, hi)
        s.min, s.max, s.step, s.value = lo, hi, step, value


class SteeringPanel:
    """Interactive steering for one model + SAE. Display it as the last line of a cell.

    ``search`` (a ``FeatureSearch``) adds each feature's top words and the ``max_act`` scale
    unit; ``scores`` (``feature_scores(model, sae, search=search)``; default: those that
    ordered the screen's candidates) adds output scores;
    ``screen`` (``screen_features(model, sae, search)``) fills the dropdown with the features
    it recommended, each at its recommended scale. ``scale`` is in ``scale_unit`` (e.g.
    ``scale=0.5, scale_unit="relative"``: half the typical residual norm). ``scale_range``
    is the absolute scale's ``(min, max)`` or ``(min, max, step)``; None: derived from the
    typical norm (``absolute_range``). ``cfg`` and keyword ``settings`` (``prompt``,
    ``max_new_tokens``, ``seed``, ``mode``, ``temperature``, ``positions``, ``scale_unit``...)
    are ``SteerConfig`` fields, the starting values of the controls.
    """

    def __init__(
        self, model: Any, sae: Any, *, feature: int = 0, scale: float = 10.0,
        scale_range: tuple[float, ...] | None = None, search: FeatureSearch | None = None,
        scores: FeatureScores | None = None, screen: SteerabilityScreen | None = None,
        cfg: SteerConfig | None = None, **settings: Any,
    ):
        if scores is None and screen is not None:
            scores = screen.scores  # what ordered the screen's candidates (None when loaded)
        self.model, self.sae, self.search, self.scores = model, sae, search, scores
        self.screen = screen
        self.cfg = steer_config(cfg, **settings)
        d_sae, n_ctx = sae.cfg.d_sae, model.cfg.n_ctx
        # owns the typical residual norm (cfg.resid_norm, else measured on first use)
        self.steerer = Steerer.for_config(model, sae, self.cfg)
        self.info = FeatureInfo(model, sae, search, scores, screen=screen)
        units = [u for u in SCALE_UNITS if u != "max_act" or search is not None]
        unit = self.cfg.scale_unit if self.cfg.scale_unit in units else "absolute"
        self._scale_range, self._given = scale_range, (unit, scale)
        choices = self.info.choices()
        extra = [f for _, f in choices if f != feature][: N_FEATURES - 1]
        extra += [(feature + k) % d_sae for k in range(1, N_FEATURES)][len(extra):]
        r = self._range(unit, feature)[:3]
        self.rows = [FeatureRow(1, d_sae, feature, scale, r, self.info)] + [
            FeatureRow(k + 2, d_sae, f, 0.0, r, self.info) for k, f in enumerate(extra)]
        first = self.rows[0]
        self.feature, self.feature_box, self.scale = first.feature, first.feature_box, first.scale
        self.steerable = W.Dropdown(
            options=choices or [(self.info.placeholder(), -1)],
            value=None if choices else -1, description="steerable", disabled=not choices,
            layout=W.Layout(width="520px"))
        self.steerable.observe(self._pick_steerable, names="value")
        self.add = W.Button(description="+ feature", tooltip="steer with one more feature")
        self.remove = W.Button(description="− feature", tooltip="drop the last extra feature")
        self.add.on_click(lambda _: self._show_rows(self.n_features + 1))
        self.remove.on_click(lambda _: self._show_rows(self.n_features - 1))
        self.prompt = W.Text(value=str(self.cfg.prompt) if isinstance(self.cfg.prompt, str)
                             else " ".join(map(str, self.cfg.prompt)), description="prompt")
        self.max_tokens = W.BoundedIntText(value=min(self.cfg.max_new_tokens, n_ctx - 2), min=1,
                                           max=n_ctx - 1, description="max tokens")
        self.seed = W.IntText(value=self.cfg.seed, description="seed")
        self.mode = W.Dropdown(options=[(MODE_LABELS[m], m) for m in MODES], value=self.cfg.mode,
                               description="mode")
        self.unit = W.Dropdown(options=[(UNIT_LABELS[u], u) for u in units], value=unit,
                               description="scale unit")
        self.unit.observe(self._change_unit, names="value")
        self.positions = W.Dropdown(options=[(POSITION_LABELS[p], p) for p in POSITIONS],
                                    value=self.cfg.positions, description="positions")
        self.button = W.Button(description="Generate", button_style="primary",
                               tooltip="Generate steered and unsteered text")
        self.status, self.texts, self.blocks = W.HTML(), W.HTML(), W.HTML()
        self.output = W.HTML(value='<div class="steer-output" data-feature="" data-scale=""></div>')
        self._busy, self.runs = False, 0
        self.button.on_click(self._on_click)
        self._show_rows(1)
        self.widget = W.VBox([
            self.steerable, *[row.widget for row in self.rows], W.HBox([self.add, self.remove]),
            W.HBox([self.mode, self.unit, self.positions]),
            W.HBox([self.prompt, self.max_tokens, self.seed]), W.HBox([self.button, self.status]),
            self.texts, self.output, self.blocks,
        ])

    def _ipython_display_(self) -> None:
        from IPython.display import display  # IPython comes with Jupyter, not with the library

        display(self.widget)

    # ------------------------------------------------------------ controls

    def _pick_steerable(self, change: Any) -> None:
        """A recommended feature, at the relative scale it was recommended at."""
        if change["new"] is None or change["new"] < 0:
            return
        self.feature.value = int(change["new"])
        if "relative" in [v for _, v in self.unit.options]:
            self.unit.value = "relative"
            self.scale.value = self.screen.scale(int(change["new"]))

    def _show_rows(self, n: int) -> None:
        self.n_features = max(1, min(N_FEATURES, n))
        for k, row in enumerate(self.rows):
            row.widget.layout.display = None if k < self.n_features else "none"
        self.add.disabled = self.n_features >= N_FEATURES
        self.remove.disabled = self.n_features <= 1

    def absolute_range(self, feature: int) -> tuple[float, float, float]:
        """The absolute slider's (min, max, step) without a ``scale_range``: the relative
        slider's range in ``feature``'s absolute units (widened to hold a given absolute
        scale), so both sliders reach the same pushes."""
        top = round(self.steerer.to_absolute(UNIT_RANGES["relative"][1], feature), 1)
        given_unit, given = self._given
        if given_unit == "absolute":
            top = max(top, abs(given))
        return -top, top, 0.01 if top < 10 else 0.1

    def _range(self, unit: str, feature: int) -> tuple[float, float, float, float]:
        """(min, max, step, default) of the scale slider in ``unit``; the default is the scale
        the panel was given when it was given in this unit."""
        given_unit, given = self._given
        if unit == given_unit:
            default = given
        elif unit == "absolute":  # the relative slider's default push, in absolute units
            default = round(self.steerer.to_absolute(UNIT_RANGES["relative"][3], feature), 1)
        else:
            default = UNIT_RANGES[unit][3]
        if unit != "absolute":
            lo, hi, step, _ = UNIT_RANGES[unit]
        elif self._scale_range is None:
            lo, hi, step = self.absolute_range(feature)
        else:
            lo, hi, *steps = self._scale_range
            step = steps[0] if steps else 0.1
        return lo, hi, step, default

    def _change_unit(self, change: Any) -> None:
        lo, hi, step, default = self._range(change["new"], int(self.feature.value))
        for k, row in enumerate(self.rows):
            row.set_range(lo, hi, step, default if k == 0 else 0.0)

    def chosen(self) -> dict[int, float]:
        """``{feature: scale}`` of the visible rows, scales in the chosen unit."""
        out: dict[int, float] = {}
        for k, row in enumerate(self.rows[: self.n_features]):
            f = int(row.feature_box.value)
            if f in out:
                raise ValueError(f"feature {f} is chosen twice; pick another one in row {k + 1}")
            out[f] = float(row.scale.value)
        return out

    # ------------------------------------------------------------ actions

    def _on_click(self, _button: Any = None) -> None:
        if self._busy:  # a click while generating is ignored, not queued
            return
        self._busy = True
        self.button.disabled, self.button.icon = True, "hourglass"
        self.status.value = "<i>generating…</i>"
        try:
            self._generate()
            self.runs += 1
        except Exception as e:  # shown in the panel: a user fixes the input and clicks again
            self.status.value = f'<span class="steer-error" style="color:#b00">Error: {esc(str(e))}</span>'
        finally:
            self.button.disabled, self.button.icon = False, ""
            self._busy = False

    def _prompt_value(self) -> Any:
        text = self.prompt.value
        if self.model.tokenizer is not None:
            return text
        try:  # a model without a tokenizer takes token ids: "1 2 3"
            return [int(t) for t in text.split()]
        except ValueError:
            raise ValueError("this model has no tokenizer: type token ids such as '1 2 3'") from None

    def _generate(self) -> None:
        chosen, unit = self.chosen(), self.unit.value
        cfg = self.cfg.replace(
            prompt=self._prompt_value(), max_new_tokens=int(self.max_tokens.value), n_samples=1,
            seed=int(self.seed.value), mode=self.mode.value, scale_unit=unit,
            positions=self.positions.value,
            resid_norm=self.steerer.resid_norm if unit == "relative" else self.cfg.resid_norm)
        max_act = self.search.max_act if self.search is not None else None
        steered = generate_steered(self.model, self.sae, chosen, cfg=cfg, max_act=max_act)
        plain = generate_unsteered(self.model, cfg)
        scored = [rescore(self.model, self.sae, [steered.tokens[0], plain.tokens[0]], f)
                  for f in chosen]
        self._show(chosen, cfg, steered.texts[0], plain.texts[0], scored)
        self.status.value = "done · " + "; ".join(
            self._describe(f, a, cfg.mode) for f, a in steered.features.items())

    def _describe(self, feature: int, absolute: float, mode: str) -> str:
        if mode == "clamp":
            return f"feature {feature} clamped to {absolute:g}"
        rel = self.steerer.relative(absolute, feature, mode)
        return (f"feature {feature}: scale {absolute:g} = {rel:.2f}× the typical residual norm "
                f"({self.steerer.resid_norm:.3g})")

    def _show(self, chosen: dict[int, float], cfg: SteerConfig, steered: str, plain: str,
              scored: list) -> None:
        (feature, scale), mode = next(iter(chosen.items())), cfg.mode
        what = ", ".join(f"feature {f} at {s:g}" for f, s in chosen.items())
        self.texts.value = (
            f"<b>steered</b> ({what}; {MODE_LABELS[mode]}, {UNIT_LABELS[cfg.scale_unit]}, "
            f"{POSITION_LABELS[cfg.positions]}):<div class='steer-text'>{esc(steered)}</div>"
            f"<b>unsteered</b> (same seed):<div class='unsteer-text'>{esc(plain)}</div>")
        parts = [f"<b>re-scored by feature {f}, steered</b>{rescored_html(both[0])}"
                 f"<b>re-scored by feature {f}, unsteered</b>{rescored_html(both[1])}"
                 for f, both in zip(chosen, scored)]
        features = ",".join(f"{f}:{s:g}" for f, s in chosen.items())
        self.output.value = (
            f'<div class="steer-output" data-feature="{feature}" data-scale="{scale:g}" '
            f'data-mode="{esc(mode)}" data-unit="{esc(cfg.scale_unit)}" '
            f'data-positions="{esc(cfg.positions)}" data-features="{features}">'
            + "".join(parts) + "</div>")
        self.blocks.value = "".join(
            f"<pre style='white-space: pre-wrap'>{esc(rescored_blocks(r))}</pre>"
            for both in scored for r in both)


def card_widget(search: FeatureSearch, model, sae, feature: int | None = None) -> W.VBox:
    """A feature picker (BoundedIntText) above the picked feature's card (an HTML widget).

    Bad picks (a dead feature) show the error message in the card's place instead of
    raising inside a widget callback. Returns the VBox; ``.picker`` and ``.view`` are
    its two children (tests set ``picker.value`` and read ``view.value``).
    """
    if feature is None:
        alive = (search.density > 0).nonzero()
        feature = int(alive[0]) if len(alive) else 0
    picker = W.BoundedIntText(value=int(feature), min=0, max=search.d_sae - 1,
                                    description="feature")
    view = W.HTML()

    def show(change=None) -> None:
        i = picker.value
        try:
            view.value = card_html(feature_card(search, model, sae, i), histogram=True)
        except ValueError as e:
            view.value = (f'<div class="sae-card-error" data-feature="{int(i)}">'
                          f"{html.escape(str(e))}</div>")

    picker.observe(show, names="value")
    show()
    box = W.VBox([picker, view])
    box.picker, box.view = picker, view
    return box
