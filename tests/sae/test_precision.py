"""tf32_matmuls: changes torch's process-wide CUDA matmul setting only inside the block."""
from __future__ import annotations

import pytest
import torch

from sae_steer.sae.precision import tf32_matmuls


def _setting() -> str:
    return torch.backends.cuda.matmul.fp32_precision


def test_tf32_is_on_inside_and_restored_after():
    before = _setting()
    with tf32_matmuls():
        assert _setting() == "tf32"
    assert _setting() == before
    # torch still answers the legacy question: the block did not mix the two APIs
    torch.get_float32_matmul_precision()


def test_tf32_restored_after_an_exception():
    before = _setting()
    with pytest.raises(RuntimeError, match="boom"):
        with tf32_matmuls():
            raise RuntimeError("boom")
    assert _setting() == before


def test_tf32_keeps_the_users_own_choice():
    before = _setting()
    try:
        torch.backends.cuda.matmul.fp32_precision = "ieee"
        with tf32_matmuls():
            assert _setting() == "tf32"
        assert _setting() == "ieee"
        with tf32_matmuls(enabled=False):
            assert _setting() == "ieee"
    finally:
        torch.backends.cuda.matmul.fp32_precision = before
