"""Many steering vectors in one batch give exactly the samples of one run per row."""
from __future__ import annotations

import pytest
import torch

from builders import HOOK, PROMPT
from sae_steer.config import SteerConfig
from sae_steer.lm import attached_hook_count
from sae_steer.steer import generate_steered, generate_unsteered
from sae_steer.steer.batch import generate_rows, steering_rows

# (feature, absolute scale) per group; None: unsteered
GROUPS = [(1, 2.0), None, (3, -1.5), (5, 4.0)]


def _mixed(model, sae, cfg):
    """Rows of every group, interleaved, each group with the seeds of its own run."""
    deltas, seeds, want = [], [], []
    for g, group in enumerate(GROUPS):
        run_cfg = cfg.replace(seed=10 + g, n_samples=3)
        if group is None:
            own = generate_unsteered(model, run_cfg)
            vec = torch.zeros(sae.cfg.d_in)
        else:
            own = generate_steered(model, sae, group[0], group[1], run_cfg)
            vec = group[1] * sae.W_dec[group[0]].detach().float()
        for j, s in enumerate(own.seeds):
            deltas.append(vec)
            seeds.append(s)
            want.append(own.tokens[j].tolist())
    order = torch.randperm(len(seeds), generator=torch.Generator().manual_seed(0)).tolist()
    return (torch.stack([deltas[i] for i in order]), [seeds[i] for i in order],
            [want[i] for i in order])



@pytest.mark.parametrize("positions", ["all", "generated"])
@pytest.mark.parametrize("use_kv_cache", [True, False])
def test_mixed_batch_equals_one_run_per_row(tiny_model, sae, positions, use_kv_cache):
    cfg = SteerConfig(prompt=PROMPT, max_new_tokens=12, temperature=1.0, positions=positions,
                      use_kv_cache=use_kv_cache)
    deltas, seeds, want = _mixed(tiny_model, sae, cfg)
    for batch_size in (None, 5):  # one batch, and batches that cut groups apart
        got = generate_rows(tiny_model, HOOK, deltas, seeds, cfg, batch_size=batch_size)
        assert [t.tolist() for t in got.tokens] == want
        assert got.seeds == seeds
    assert attached_hook_count(tiny_model) == 0


def test_cached_equals_uncached_greedy(tiny_model, sae):
    cfg = SteerConfig(prompt=PROMPT, max_new_tokens=15, temperature=0.0)
    deltas = torch.stack([3.0 * sae.W_dec[2].detach(), torch.zeros(16), -2.0 * sae.W_dec[0].detach()])
    a = generate_rows(tiny_model, HOOK, deltas, [1, 2, 3], cfg.replace(use_kv_cache=True))
    b = generate_rows(tiny_model, HOOK, deltas, [1, 2, 3], cfg.replace(use_kv_cache=False))
    assert [t.tolist() for t in a.tokens] == [t.tolist() for t in b.tokens]


def test_no_deltas_is_unsteered(tiny_model):
    cfg = SteerConfig(prompt=PROMPT, max_new_tokens=10, n_samples=3, seed=4)
    plain = generate_unsteered(tiny_model, cfg)
    rows = generate_rows(tiny_model, HOOK, None, plain.seeds, cfg)
    assert [t.tolist() for t in rows.tokens] == [t.tolist() for t in plain.tokens]


def test_rows_stop_at_eos_like_their_own_run(tok_model):
    from builders import make_sae
    sae = make_sae(hook_name=HOOK)
    cfg = SteerConfig(prompt="Once upon a time", max_new_tokens=40, temperature=1.5)
    own = generate_steered(tok_model, sae, 4, 3.0, cfg.replace(n_samples=6, seed=2))
    deltas = (3.0 * sae.W_dec[4].detach().float()).expand(6, -1)
    got = generate_rows(tok_model, HOOK, deltas, own.seeds, cfg, batch_size=4)
    assert [t.tolist() for t in got.tokens] == [t.tolist() for t in own.tokens]
    assert got.texts == own.texts


@pytest.mark.parametrize("positions", ["all", "generated"])
@pytest.mark.parametrize("use_kv_cache", [True, False])
def test_finished_rows_leave_the_batch_and_the_rest_keep_their_vectors(tok_model, positions,
                                                                        use_kv_cache):
    """Rows that write EOS early drop out of later passes (their cache too); every other
    row still gets its own vector, so each row equals its own run."""
    from builders import make_sae
    sae = make_sae(hook_name=HOOK)
    cfg = SteerConfig(prompt="Once upon a time", max_new_tokens=40, temperature=1.5,
                      positions=positions, use_kv_cache=use_kv_cache)
    deltas, seeds, want = _mixed(tok_model, sae, cfg)
    widths: list[int] = []
    tok_model.add_hook(HOOK, lambda act, hook: widths.append(act.shape[0]))
    try:
        got = generate_rows(tok_model, HOOK, deltas, seeds, cfg)
    finally:
        tok_model.reset_hooks()
    assert [t.tolist() for t in got.tokens] == want
    lengths = {len(t) for t in want}
    assert len(lengths) > 2, "the test needs rows that stop at different steps"
    passes = widths[widths.index(len(seeds)):]  # (checking the hook's width runs one row)
    assert min(passes) < len(seeds) and passes == sorted(passes, reverse=True)  # it shrank
    assert attached_hook_count(tok_model) == 0


def test_bad_deltas_clear_errors_and_no_hooks(tiny_model):
    cfg = SteerConfig(prompt=PROMPT, max_new_tokens=4)
    with pytest.raises(ValueError, match="steering vectors for"):
        generate_rows(tiny_model, HOOK, torch.zeros(2, 16), [1, 2, 3], cfg)
    with pytest.raises(ValueError, match=r"needs \[rows, 16\]"):
        generate_rows(tiny_model, HOOK, torch.zeros(3, 15), [1, 2, 3], cfg)
    with pytest.raises(ValueError, match="NaN or inf"):
        generate_rows(tiny_model, HOOK, torch.full((3, 16), float("nan")), [1, 2, 3], cfg)
    tokens = torch.tensor([PROMPT])
    with pytest.raises(ValueError, match="rows but 2 steering vectors"):
        with steering_rows(tiny_model, HOOK, torch.zeros(2, 16)):
            tiny_model(tokens)
    assert attached_hook_count(tiny_model) == 0
