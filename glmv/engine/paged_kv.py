"""The paged KV cache: per layer one pool of fixed-size blocks, read and written through block tables.

The decoder sees a cache through `attention_mask` / `attend` / `advance` (glmv/model/cache.py), so it never knows
about pages or batching. For each forward the runner builds one step object with everything prepared as tensors
(no host synchronisation inside the model), by one of two attention backends:

- "sdpa" (`PagedStep`): per row, the slots of every key it attends to (`read`, left-padded), gathered into a
  padded [B, heads, T, D] tensor and run through SDPA with a boolean mask built on the host. Portable; the
  default.
- "flex" (`FlexPagedStep`): no gather. The whole pool is one key sequence and FlexAttention's mask maps each
  physical slot back to its row's logical position through a physical -> logical block table, so each query
  attends to its own blocks only (shared prefix blocks included) and causally. On CUDA, flex_attention is
  compiled into a fused kernel that skips masked blocks; on CPU it runs unfused (tests compare it with "sdpa").
"""

from __future__ import annotations

from functools import lru_cache

import torch

from glmv.model.cache import sdpa

BACKENDS = ("sdpa", "flex")


class PagedKVCache:
    """Key and value pools [num_blocks + 1, block_size, kv_heads, head_dim] per layer. The extra last block is
    scratch: padding positions write there and read from there (finite values, always masked)."""

    def __init__(self, num_layers: int, num_blocks: int, block_size: int, kv_heads: int, head_dim: int,
                 dtype: torch.dtype, device: torch.device | str, zeroed: bool = False):
        shape = ((num_blocks + 1) * block_size, kv_heads, head_dim)  # flat slots: block b holds b*bs .. b*bs+bs-1
        # For "sdpa", empty: a slot is written before it is read, and on CPU untouched pages cost no RAM. "flex"
        # reads the whole pool: a masked score is dropped, but 0 x a NaN of uninitialised memory in the values
        # is NaN, so its pool starts zeroed.
        alloc = torch.zeros if zeroed else torch.empty
        self.k = [alloc(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.v = [alloc(shape, dtype=dtype, device=device) for _ in range(num_layers)]
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

    def write(self, layer: int, slots: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
        """Store k/v [B, kv_heads, q, D] at slots [B * q]."""
        self.k[layer].index_copy_(0, slots, k.transpose(1, 2).reshape(-1, *k.shape[1::2]))
        self.v[layer].index_copy_(0, slots, v.transpose(1, 2).reshape(-1, *v.shape[1::2]))


class PagedStep:
    """The "sdpa" backend as one forward sees it. write [B, q] slots of the new tokens; read [B, past + q] slots
    of all keys per row (the last q are `write`); mask [B, 1, q, past + q] (True = attend) or None when plain
    attention over `read` is exact."""

    def __init__(self, cache: PagedKVCache, write: torch.Tensor, read: torch.Tensor, mask: torch.Tensor | None):
        self.cache, self.write, self.read, self.mask = cache, write.reshape(-1), read, mask
        self.length = read.shape[1] - write.shape[1]  # keys before the new ones, padding included

    def attention_mask(self, attention_mask: torch.Tensor | None, q_len: int) -> torch.Tensor | None:
        return self.mask  # built by the runner on the host: the model reads no device values

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               mask: torch.Tensor | None) -> torch.Tensor:
        self.cache.write(layer, self.write, k, v)
        keys = self.cache.k[layer][self.read].transpose(1, 2)  # [B, kv_heads, past + q, D]
        values = self.cache.v[layer][self.read].transpose(1, 2)
        return sdpa(q, keys, values, mask)

    def advance(self, n: int) -> None:
        """The model reports the tokens it appended; the runner keeps that count on each sequence instead."""


class FlexPagedStep:
    """The "flex" backend as one forward sees it. write [B, q] slots of the new tokens; positions [B, q] the
    logical index of each query token in its sequence (-1 for padding); logical [B, num_blocks + 1] each
    physical block's logical index in that row's block table (-1 where the row does not hold it)."""

    def __init__(self, cache: PagedKVCache, write: torch.Tensor, positions: torch.Tensor, logical: torch.Tensor):
        self.cache, self.write = cache, write.reshape(-1)
        self.rows, self.q = positions.shape
        self.length = 0  # the model only passes it on; positions come from the runner
        bs = cache.block_size
        flat_pos = positions.reshape(-1)  # query i of the packed batch belongs to row i // q
        row_of = torch.arange(self.rows * self.q, device=positions.device) // self.q

        def mask_mod(b, h, q_idx, kv_idx):
            block = logical[row_of[q_idx], kv_idx // bs]
            return (block >= 0) & (block * bs + kv_idx % bs <= flat_pos[q_idx])

        from torch.nn.attention.flex_attention import create_block_mask

        slots = (cache.num_blocks + 1) * bs
        self.block_mask = create_block_mask(mask_mod, None, None, self.rows * self.q, slots,
                                            device=positions.device)

    def attention_mask(self, attention_mask: torch.Tensor | None, q_len: int) -> None:
        return None  # the block mask says it all

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               mask: torch.Tensor | None) -> torch.Tensor:
        self.cache.write(layer, self.write, k, v)
        b, heads, n, d = q.shape
        packed = q.transpose(0, 1).reshape(1, heads, b * n, d)  # every row's queries in one sequence
        keys = self.cache.k[layer].permute(1, 0, 2)[None]  # [1, kv_heads, slots, D]: the pool as it lies
        values = self.cache.v[layer].permute(1, 0, 2)[None]
        out = _flex(q.device.type)(packed, keys, values, block_mask=self.block_mask,
                                   enable_gqa=heads != keys.shape[1])
        return out.reshape(heads, b, n, d).transpose(0, 1)  # padding queries see nothing: zeros, never read

    def advance(self, n: int) -> None:
        """As PagedStep: the runner keeps the counts."""


@lru_cache(maxsize=None)
def _flex(device_type: str):
    """flex_attention, compiled on CUDA (a fused kernel); eager elsewhere (unfused, exact, for tests)."""
    import warnings

    from torch.nn.attention.flex_attention import flex_attention

    if device_type == "cuda":
        return torch.compile(flex_attention, dynamic=True)
    warnings.filterwarnings("ignore", message=".*flex_attention called without torch.compile.*")
    return flex_attention
