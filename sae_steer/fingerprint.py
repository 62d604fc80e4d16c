"""Content hashes of weights, so caches notice when a model or SAE changed. Knows only torch.

One function per kind of thing, used by every cache key and every saved result:

- ``tensors_sha256``: any named tensors;
- ``model_fingerprint``: a language model's parameters *and* its tokenizer's vocabulary;
- ``sae_fingerprint``: an SAE's parameters.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

import torch

SAE_PARAMS = ("W_enc", "b_enc", "W_dec", "b_dec")


def tensors_sha256(tensors: Mapping[str, torch.Tensor], prefix: bytes = b"") -> str:
    """sha256 (hex) over ``prefix`` and each tensor's name, shape, dtype and bytes, by name."""
    h = hashlib.sha256(prefix)
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def model_fingerprint(model: Any) -> str:
    """sha256 (hex) over a model's parameters and its tokenizer's vocabulary.

    Covers every ``named_parameters()`` tensor (names, shapes, dtypes, bytes) and, when the
    model has a tokenizer, its token -> id table. Not covered: buffers (attention masks and
    the like, fixed by the architecture) and the model's name. Token ids in a saved result
    only mean something with the tokenizer that produced them, so a rebuilt world with a
    reordered vocabulary gets a new fingerprint even if its weights were equal.
    """
    tok = getattr(model, "tokenizer", None)
    vocab = json.dumps(sorted(tok.get_vocab().items())).encode() if tok is not None else b""
    return tensors_sha256(dict(model.named_parameters()), prefix=vocab)


def sae_fingerprint(sae: Any) -> str:
    """sha256 (hex) over an SAE's parameters (an ``nn.Module`` or any object with
    ``W_enc``/``b_enc``/``W_dec``/``b_dec`` attributes, e.g. an SAELens SAE)."""
    if hasattr(sae, "state_dict"):
        params = dict(sae.state_dict())
    else:
        params = {n: getattr(sae, n) for n in SAE_PARAMS if hasattr(sae, n)}
    return tensors_sha256(params)
