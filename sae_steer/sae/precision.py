"""TF32 matmuls for the SAE's own work, switched on only inside a ``with`` block.

Whether CUDA runs float32 matmuls on TF32 tensor cores is one process-wide torch setting
(``torch.backends.cuda.matmul.fp32_precision``). Training an SAE is dominated by one dense
matmul (the encoder), which TF32 runs about ten times faster on an A100 / H100 / H200 at
about 1e-3 relative precision per product; the user's language model, run in the same
process, must keep whatever precision the user chose. So the setting is changed only
around the SAE's training step and always put back (exceptions included), and only
through torch's current API: mixing it with the legacy ``allow_tf32`` flags makes torch
refuse to report the precision later.

CPU matmuls are unaffected (the setting is CUDA's), so on a CPU the option is a no-op.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def tf32_matmuls(enabled: bool = True) -> Iterator[None]:
    """Within the block, float32 CUDA matmuls may use TF32 (when ``enabled``); on exit the
    setting is back to what it was before. (An SAE runs no convolutions, so cuDNN's own
    setting is left alone.)"""
    if not enabled:
        yield
        return
    matmul = torch.backends.cuda.matmul
    before = matmul.fp32_precision
    try:
        matmul.fp32_precision = "tf32"
        yield
    finally:
        matmul.fp32_precision = before
