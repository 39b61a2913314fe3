"""The KV cache the decoder writes into.

The decoder only calls `update(layer, k, v) -> (k_all, v_all)` and reads `length`; anything with that shape of
interface (a paged cache, a continuous-batching slot table) can replace this class without touching the model.
"""

from __future__ import annotations

import torch


class KVCache:
    """Contiguous per-layer buffers [B, kv_heads, capacity, head_dim]; all rows share one length (left padding)."""

    def __init__(self, num_layers: int, batch: int, kv_heads: int, head_dim: int, capacity: int, dtype, device):
        shape = (batch, kv_heads, capacity, head_dim)
        self.k = [torch.empty(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.v = [torch.empty(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.length = 0  # tokens already stored (committed by `advance`)
        self.capacity = capacity

    @property
    def batch_size(self) -> int:
        return self.k[0].shape[0]

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k/v [B, kv_heads, L, D] after the committed tokens; return all keys/values so far."""
        end = self.length + k.shape[2]
        if end > self.capacity:
            raise RuntimeError(f"KV cache capacity {self.capacity} exceeded ({end} tokens)")
        self.k[layer][:, :, self.length : end] = k
        self.v[layer][:, :, self.length : end] = v
        return self.k[layer][:, :, :end], self.v[layer][:, :, :end]

    def advance(self, n: int) -> None:
        self.length += n

    def truncate(self, n: int) -> None:
        """Forget everything after the first n tokens (to reuse a shared prefix)."""
        self.length = min(self.length, n)

    def select(self, rows: torch.Tensor | list[int]) -> None:
        """Keep only these batch rows (finished sequences leave the batch)."""
        rows = torch.as_tensor(rows, dtype=torch.long, device=self.k[0].device)
        self.k = [t.index_select(0, rows) for t in self.k]
        self.v = [t.index_select(0, rows) for t in self.v]

    def grow(self, capacity: int) -> None:
        """Make room for `capacity` tokens, keeping what is stored (a conversation's next turn)."""
        if capacity <= self.capacity:
            return
        pad = capacity - self.capacity
        self.k = [torch.nn.functional.pad(t, (0, 0, 0, pad)) for t in self.k]
        self.v = [torch.nn.functional.pad(t, (0, 0, 0, pad)) for t in self.v]
        self.capacity = capacity

    @staticmethod
    def concat(caches: list["KVCache"], length: int, capacity: int) -> "KVCache":
        """Stack the rows of several caches into one of `capacity`, each right-aligned so that all end at
        `length` (>= every cache's length); the left padding must be masked out by the caller."""
        first = caches[0].k[0]
        batch = sum(c.batch_size for c in caches)
        out = KVCache(len(caches[0].k), batch, first.shape[1], first.shape[3], capacity, first.dtype, first.device)
        for layer in range(len(out.k)):
            row = 0
            for c in caches:
                rows = slice(row, row + c.batch_size)
                start = length - c.length
                out.k[layer][rows, :, :start] = 0  # padding: masked, but never NaN
                out.v[layer][rows, :, :start] = 0
                out.k[layer][rows, :, start:length] = c.k[layer][:, :, : c.length]
                out.v[layer][rows, :, start:length] = c.v[layer][:, :, : c.length]
                row += c.batch_size
        out.length = length
        return out
