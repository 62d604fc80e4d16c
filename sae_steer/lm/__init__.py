"""The language model side: load a model, turn texts into token windows, read a hook.

The only code that runs the language model for the rest of the library.
"""
from sae_steer.lm.activations import (activation_batches, attached_hook_count, ce_loss,
                                      check_sae_fits, hook_activations, hook_width,
                                      stop_layer, validate_hook)
from sae_steer.lm.models import (ModelDownloadError, default_device, default_hook_name,
                                 load_model, model_name)
from sae_steer.lm.score import ScoredRows, pad_right, rows_per_batch, score_rows
from sae_steer.lm.texts import (DataDownloadError, TokenCount, display_tokens, load_stories, load_texts,
                                to_text, token_batches, token_strings)

__all__ = ["DataDownloadError", "ModelDownloadError", "TokenCount", "activation_batches",
           "attached_hook_count", "ce_loss", "check_sae_fits", "default_device",
           "default_hook_name", "display_tokens", "hook_activations", "hook_width",
           "load_model", "load_stories", "load_texts", "model_name", "pad_right", "rows_per_batch",
           "score_rows", "ScoredRows", "to_text",
           "stop_layer", "token_batches", "token_strings", "validate_hook"]
