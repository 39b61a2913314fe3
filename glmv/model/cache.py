"""Attention over a KV cache, and the contiguous cache.

The decoder talks to a cache through three calls: `length` (tokens already stored), `attention_mask(mask2d,
q_len)` (what `attend` needs for this forward, computed once for all layers) and `attend(layer, q, k, v, mask)`
(store the new keys/values, attend over everything stored), then `advance(n)`. The model never knows how keys
are laid out: this contiguous cache, the engine's paged cache read by gather + SDPA, and the paged cache read
by FlexAttention (glmv/engine/paged_kv.py) all answer these calls.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def attention_mask_for(
    attention_mask: torch.Tensor | None, q_len: int, past: int, device
) -> torch.Tensor | None:
    """Boolean mask [B, 1, q_len, past + q_len] (True = attend), or None when plain causal attention is exact.

    attention_mask [B, past + q_len] marks real tokens (1) and padding (0). A padding query may always see itself,
    so no row is fully masked (a fully masked row would give NaN, and NaN values poison later layers).
    Reads attention_mask's values (a host sync on a GPU): callers on the decode path build the mask on the
    host, from host tensors.
    """
    total = past + q_len
    if attention_mask is None or bool(attention_mask.all()):
        if q_len == 1 or past == 0:
            return None
        attention_mask = torch.ones(1, total, dtype=torch.bool, device=device)
    q_pos = torch.arange(past, total, device=device)[:, None]
    k_pos = torch.arange(total, device=device)[None, :]
    causal = k_pos <= q_pos  # [q, k]
    keys = attention_mask[:, None, None, :].bool()  # [B, 1, 1, k]
    return (causal & keys) | (k_pos == q_pos)


def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """q [B, H, L, D] over k/v [B, Hkv, T, D] (grouped-query heads); mask None: causal when T == L, else none."""
    causal = mask is None and q.shape[2] > 1 and k.shape[2] == q.shape[2]
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal,
                                          enable_gqa=q.shape[1] != k.shape[1])


class KVCache:
    """Contiguous per-layer buffers [B, kv_heads, capacity, head_dim]; all rows share one length (left padding).
    The simplest cache: the reference the paged ones are tested against, and enough for a plain generate loop."""

    def __init__(self, num_layers: int, batch: int, kv_heads: int, head_dim: int, capacity: int, dtype, device):
        shape = (batch, kv_heads, capacity, head_dim)
        self.k = [torch.empty(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.v = [torch.empty(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.length = 0  # tokens already stored (committed by `advance`)
        self.capacity = capacity

    def attention_mask(self, attention_mask: torch.Tensor | None, q_len: int) -> torch.Tensor | None:
        return attention_mask_for(attention_mask, q_len, self.length, self.k[0].device)

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               mask: torch.Tensor | None) -> torch.Tensor:
        """Store k/v [B, kv_heads, L, D] after the committed tokens; attend q over all keys so far."""
        end = self.length + k.shape[2]
        if end > self.capacity:
            raise RuntimeError(f"KV cache capacity {self.capacity} exceeded ({end} tokens)")
        self.k[layer][:, :, self.length : end] = k
        self.v[layer][:, :, self.length : end] = v
        return sdpa(q, self.k[layer][:, :, :end], self.v[layer][:, :, :end], mask)

    def advance(self, n: int) -> None:
        self.length += n
