"""Config of the feature search (``SearchConfig``)."""
from __future__ import annotations

import dataclasses

from sae_steer.config.base import StageConfig, require


@dataclasses.dataclass
class SearchConfig(StageConfig):
    """How ``search.py`` scans a text set for every feature's excerpts and statistics."""

    k: int = 10
    """Top excerpts kept per feature, ranked by the feature's max activation in the excerpt."""
    context_left: int = 16
    """Tokens kept before an excerpt's peak token."""
    context_right: int = 8
    """Tokens kept after an excerpt's peak token."""
    n_bands: int = 10
    """Lower-band sampling: the range (0, max] is cut into this many equal bands (deciles)."""
    samples_per_band: int = 2
    """Excerpts sampled uniformly at random per band (reservoir sampling)."""
    n_top_tokens: int = 32
    """Distinct tokens tracked per feature for "fires on" (sum of activation per token)."""
    context_size: int = 128
    """Tokens per window (BOS included); a longer text is read whole, in several windows
    that each start with BOS."""
    batch_size: int = 32
    """Texts per forward pass."""
    n_texts: int | None = None
    """Stop after this many texts (None: the whole text set)."""
    exclude_bos: bool = True
    """Ignore position 0 (BOS): its residual norm is atypical and features fire on it."""
    hist_log10_min: float = -3.0
    """Activation histogram: log10-spaced bins from 10**hist_log10_min ..."""
    hist_log10_max: float = 3.0
    """... to 10**hist_log10_max (values outside land in the first/last bin)."""
    hist_bins: int = 48
    """Number of histogram bins (8 per decade by default)."""
    seed: int = 0
    """Seeds band sampling; equal seeds and data give equal results."""

    def __post_init__(self) -> None:
        for name in ("k", "n_bands", "samples_per_band", "n_top_tokens", "context_size",
                     "batch_size", "hist_bins"):
            value = getattr(self, name)
            require(isinstance(value, int) and not isinstance(value, bool) and value > 0,
                     f"{name} must be a positive integer, got {value!r}")
        for name in ("context_left", "context_right", "seed"):
            value = getattr(self, name)
            require(isinstance(value, int) and value >= 0,
                     f"{name} must be a non-negative integer, got {value!r}")
        require(self.n_texts is None or (isinstance(self.n_texts, int) and self.n_texts > 0),
                 f"n_texts must be None or a positive integer, got {self.n_texts!r}")
        require(self.hist_log10_min < self.hist_log10_max,
                 f"hist_log10_min ({self.hist_log10_min}) must be below hist_log10_max "
                 f"({self.hist_log10_max})")


