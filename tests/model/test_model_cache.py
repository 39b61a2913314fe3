"""A cached forward (prefill in chunks, then token by token) equals one full forward."""

from __future__ import annotations

import pytest
import torch

from glmv.model.cache import KVCache
from glmv.model.positions import continuation_positions
from glmv.testing.prompts import image_tokens, random_pixels, random_text


@pytest.mark.parametrize("model_type", ["glm4v", "glm4v_moe"])
def test_cached_equals_full_forward(make_pair, model_type):
    _, model, _ = make_pair(model_type)
    cfg = model.config.text
    a = random_text(3, 1) + image_tokens(4, 6) + random_text(12, 2)
    b = random_text(7, 3) + image_tokens(4, 4) + random_text(4, 4)
    n = max(len(a), len(b))
    ids = torch.tensor([[0] * (n - len(a)) + a, [0] * (n - len(b)) + b])
    mask = (torch.arange(n)[None] >= torch.tensor([[n - len(a)], [n - len(b)]])).long()
    grids = torch.tensor([(1, 4, 6), (1, 4, 4)])
    pv = random_pixels(grids.tolist(), 7)
    with torch.no_grad():
        full = model(ids, attention_mask=mask, pixel_values=pv, image_grid_thw=grids).logits

        # Prefill everything but the last 5 tokens, then feed those one at a time through the cache.
        split = n - 5
        cache = KVCache(cfg.num_hidden_layers, 2, cfg.num_key_value_heads, cfg.head_dim, n, torch.float32, "cpu")
        out = model(ids[:, :split], attention_mask=mask[:, :split], pixel_values=pv, image_grid_thw=grids, cache=cache)
        pieces = [out.logits]
        real = mask[:, :split].sum(1)
        for i in range(split, n):
            pos = continuation_positions(out.rope_deltas, real, 1)
            step = model(ids[:, i : i + 1], attention_mask=mask[:, : i + 1], position_ids=pos, cache=cache)
            pieces.append(step.logits)
            real = real + 1
    cached = torch.cat(pieces, dim=1)
    keep = mask.bool()
    assert (cached[keep] - full[keep]).abs().max() <= 1e-4
    assert cache.length == n
