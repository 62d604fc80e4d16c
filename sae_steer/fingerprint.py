"""Content hashes of weights, so caches notice when a model or SAE changed. Knows only torch."""
from __future__ import annotations

import hashlib
from collections.abc import Mapping

import torch


def tensors_sha256(tensors: Mapping[str, torch.Tensor], prefix: bytes = b"") -> str:
    """sha256 (hex) over ``prefix`` and each tensor's name, shape, dtype and bytes, by name."""
    h = hashlib.sha256(prefix)
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
