"""Widgets: ``SteeringPanel`` (sliders for feature and scale, a Generate button, re-scored
output) and ``card_widget`` (a feature picker above its card).

The panel shows, for one seed, the steered text, the unsteered text and both re-scored by
the unsteered model + SAE (blocks and HTML). Its structure is part of the browser test's
contract: a button labelled "Generate", sliders described "feature" and "scale", and an
output container ``<div class="steer-output" data-feature=.. data-scale=..>``.

Nothing imports this module (it needs ipywidgets); it may import everything.
"""
from __future__ import annotations

import html
from typing import Any

import ipywidgets as W

from sae_steer.config import MODES, SteerConfig
from sae_steer.inspect import FeatureSearch, feature_card
from sae_steer.measure import rescore
from sae_steer.steer import (generate_steered, generate_unsteered, steering_direction,
                             to_relative_scale, typical_resid_norm)
from sae_steer.ui.views import card_html, rescored_blocks, rescored_html

MODE_LABELS = {"decoder_row": "decoder row", "clamp": "clamp",
               "decoder_onehot": "decoder(onehot)"}


class SteeringPanel:
    """Interactive steering for one model + SAE. Display it as the last line of a cell."""

    def __init__(
        self, model: Any, sae: Any, *, feature: int = 0, scale: float = 10.0,
        scale_range: tuple[float, float] = (-50.0, 50.0), scale_step: float = 0.1,
        prompt: str = "Once upon a time", max_new_tokens: int = 100, seed: int = 0,
        mode: str = "decoder_row", temperature: float = 1.0,
    ):
        self.model, self.sae, self.temperature = model, sae, temperature
        d_sae, n_ctx = sae.cfg.d_sae, model.cfg.n_ctx
        self.feature = W.IntSlider(value=min(feature, d_sae - 1), min=0, max=d_sae - 1,
                                   description="feature", continuous_update=False)
        self.feature_box = W.BoundedIntText(value=self.feature.value, min=0, max=d_sae - 1,
                                            layout=W.Layout(width="90px"))
        W.link((self.feature, "value"), (self.feature_box, "value"))
        self.scale = W.FloatSlider(value=scale, min=scale_range[0], max=scale_range[1],
                                   step=scale_step, description="scale", readout_format=".2f",
                                   continuous_update=False)
        self.prompt = W.Text(value=prompt, description="prompt")
        self.max_tokens = W.BoundedIntText(value=min(max_new_tokens, n_ctx - 2), min=1,
                                           max=n_ctx - 1, description="max tokens")
        self.seed = W.IntText(value=seed, description="seed")
        self.mode = W.Dropdown(options=[(MODE_LABELS[m], m) for m in MODES], value=mode,
                               description="mode")
        self.button = W.Button(description="Generate", button_style="primary",
                               tooltip="Generate steered and unsteered text")
        self.status = W.HTML(value="")
        self.texts = W.HTML(value="")
        self.blocks = W.HTML(value="")
        self.output = W.HTML(value='<div class="steer-output" data-feature="" data-scale=""></div>')
        self._busy = False
        self._resid_norm: float | None = None
        self.runs = 0
        self.button.on_click(self._on_click)
        self.widget = W.VBox([
            W.HBox([self.feature, self.feature_box]), self.scale, self.mode,
            W.HBox([self.prompt, self.max_tokens, self.seed]), W.HBox([self.button, self.status]),
            self.texts, self.output, self.blocks,
        ])

    def _ipython_display_(self) -> None:
        from IPython.display import display  # IPython comes with Jupyter, not with the library

        display(self.widget)

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
            self.status.value = f'<span class="steer-error" style="color:#b00">Error: {html.escape(str(e))}</span>'
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
        feature, scale, mode = int(self.feature_box.value), float(self.scale.value), self.mode.value
        cfg = SteerConfig(prompt=self._prompt_value(), max_new_tokens=int(self.max_tokens.value),
                          n_samples=1, seed=int(self.seed.value), temperature=self.temperature,
                          mode=mode)
        steered = generate_steered(self.model, self.sae, feature, scale, cfg)
        plain = generate_unsteered(self.model, cfg)
        both = rescore(self.model, self.sae, [steered.tokens[0], plain.tokens[0]], feature)
        self._show(feature, scale, mode, steered.texts[0], plain.texts[0], both)
        self.status.value = f"done · {self._relative(feature, scale, mode)}"

    def _relative(self, feature: int, scale: float, mode: str) -> str:
        if mode == "clamp":
            return f"feature {feature} clamped to {scale:g}"
        if self._resid_norm is None:
            self._resid_norm = typical_resid_norm(self.model, self.sae.cfg.hook_name)
        rel = to_relative_scale(scale, self._resid_norm, steering_direction(self.sae, feature, mode))
        return f"scale {scale:g} = {rel:.2f}× the typical residual norm ({self._resid_norm:.3g})"

    def _show(self, feature: int, scale: float, mode: str, steered: str, plain: str,
              both: list) -> None:
        esc = html.escape
        self.texts.value = (
            f"<b>steered</b> (feature {feature}, {MODE_LABELS[mode]}, scale {scale:g}):"
            f"<div class='steer-text'>{esc(steered)}</div><b>unsteered</b> (same seed):"
            f"<div class='unsteer-text'>{esc(plain)}</div>")
        self.output.value = (
            f'<div class="steer-output" data-feature="{feature}" data-scale="{scale:g}" '
            f'data-mode="{esc(mode)}"><b>re-scored, steered</b>{rescored_html(both[0])}'
            f"<b>re-scored, unsteered</b>{rescored_html(both[1])}</div>")
        self.blocks.value = "".join(
            f"<pre style='white-space: pre-wrap'>{esc(rescored_blocks(r))}</pre>" for r in both)


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
