"""The language model side: load a model, turn texts into token rows, run it for others.

The only code that runs the language model for the rest of the library: tokenising and
padding (``tokens``), activations at a hook (``activations``), logits from a hook onward
with vectors added there (``forward``), scored rows (``score``). The sampler in ``steer``
is the one other forward loop (it steers while it samples).
"""
from sae_steer.lm.activations import (attached_hook_count, ce_loss, check_sae_fits,
                                      hook_activations, hook_width, stop_layer, validate_hook)
from sae_steer.lm.forward import FromHook, resume_layer, row_activations
from sae_steer.lm.models import (ModelDownloadError, default_device, default_hook_name,
                                 load_model, model_name)
from sae_steer.lm.score import ScoredRows, rows_per_batch, score_rows
from sae_steer.lm.texts import (DataDownloadError, TokenCount, display_tokens, load_stories,
                                load_texts, to_text, token_batches, token_strings)
from sae_steer.lm.tokens import pad_rows, text_rows, tokenize

__all__ = ["DataDownloadError", "FromHook", "ModelDownloadError", "ScoredRows", "TokenCount",
           "attached_hook_count", "ce_loss", "check_sae_fits", "default_device",
           "default_hook_name", "display_tokens", "hook_activations", "hook_width",
           "load_model", "load_stories", "load_texts", "model_name", "pad_rows",
           "resume_layer", "row_activations", "rows_per_batch", "score_rows", "stop_layer",
           "text_rows", "to_text", "token_batches", "token_strings", "tokenize",
           "validate_hook"]
