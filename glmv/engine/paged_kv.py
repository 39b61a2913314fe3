"""The paged KV cache: per layer one pool of fixed-size blocks, read and written through block tables.

The decoder only calls `cache.update(layer, k, v) -> (k_all, v_all)` and reads `cache.length` (see
glmv/model/cache.py), so the model never knows about pages or batching. For each forward the runner builds a
`PagedStep`: where each new token's key/value goes (`write` slots) and, per row, the slots of every key it attends
to (`read` slots, left-padded, ending with its new tokens). Attention gathers those keys into a padded
[B, heads, T, D] tensor and runs SDPA with the padding masked (the portable path; fused paged kernels can
replace `update` behind the same interface).
"""

from __future__ import annotations

import torch


class PagedKVCache:
    """Key and value pools [num_blocks + 1, block_size, kv_heads, head_dim] per layer. The extra last block is
    scratch: padding positions write there and read from there (finite values, always masked)."""

    def __init__(self, num_layers: int, num_blocks: int, block_size: int, kv_heads: int, head_dim: int,
                 dtype: torch.dtype, device: torch.device | str):
        shape = ((num_blocks + 1) * block_size, kv_heads, head_dim)  # flat slots: block b holds b*bs .. b*bs+bs-1
        # Empty, not zeros: a slot is always written before it is read, and on CPU untouched pages cost no RAM.
        self.k = [torch.empty(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.v = [torch.empty(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.num_blocks, self.block_size = num_blocks, block_size
        self.pad_slot = num_blocks * block_size
        for pool in self.k + self.v:
            pool[self.pad_slot :].zero_()  # the scratch block is read (masked) before anything is written there

    @staticmethod
    def bytes_per_block(num_layers: int, block_size: int, kv_heads: int, head_dim: int, dtype: torch.dtype) -> int:
        return 2 * num_layers * block_size * kv_heads * head_dim * torch.empty((), dtype=dtype).element_size()

    def slots(self, block_table: list[int], n: int) -> torch.Tensor:
        """Flat slot indices [n] of the first n tokens of a sequence with this block table."""
        bs = self.block_size
        blocks = torch.tensor(block_table[: -(-n // bs)], dtype=torch.long)
        return (blocks[:, None] * bs + torch.arange(bs)).flatten()[:n]

    def step(self, write: torch.Tensor, read: torch.Tensor) -> "PagedStep":
        return PagedStep(self, write, read)


class PagedStep:
    """The cache as one forward sees it. write [B, q] slots of the new tokens; read [B, past + q] slots of all
    keys per row (the last q are `write`)."""

    def __init__(self, cache: PagedKVCache, write: torch.Tensor, read: torch.Tensor):
        self.cache, self.write, self.read = cache, write.reshape(-1), read
        self.length = read.shape[1] - write.shape[1]  # keys before the new ones, padding included

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k/v [B, kv_heads, q, D] at the write slots; return the keys/values [B, kv_heads, past + q, D]."""
        pool_k, pool_v = self.cache.k[layer], self.cache.v[layer]
        pool_k.index_copy_(0, self.write, k.transpose(1, 2).reshape(-1, *k.shape[1::2]))
        pool_v.index_copy_(0, self.write, v.transpose(1, 2).reshape(-1, *v.shape[1::2]))
        return pool_k[self.read].transpose(1, 2), pool_v[self.read].transpose(1, 2)

    def advance(self, n: int) -> None:
        """The model reports the tokens it appended; the runner keeps that count on each sequence instead."""
