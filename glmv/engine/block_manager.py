"""Paged KV memory: fixed-size blocks handed to sequences, and automatic prefix caching across requests.

A full block that has been computed is registered under a chained hash of (the previous block's hash, its token
ids, the features of any image/video placeholders in it), so two requests with the same text but different
images never share a block past the image; the chain starts from the sequence's LoRA adapter, so requests under
different adapters (or none) share nothing. Blocks are reference-counted: a shared system prompt or the prompt
of n samples is stored once. A block nobody holds goes to the free list but keeps its contents and hash, so a
later request (the next turn of a conversation) can take it back; allocation evicts the least recently freed.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass

from glmv.engine.sequence import Sequence


@dataclass
class Block:
    id: int
    ref_count: int = 0
    hash: bytes | None = None  # set once the block is full and computed


class BlockManager:
    def __init__(self, num_blocks: int, block_size: int, prefix_caching: bool = True):
        self.block_size = block_size
        self.prefix_caching = prefix_caching
        self.blocks = [Block(i) for i in range(num_blocks)]
        self.free: OrderedDict[int, None] = OrderedDict((i, None) for i in range(num_blocks))  # LRU first
        self.by_hash: dict[bytes, int] = {}
        self.hits = 0  # prompt tokens served from the cache (for /metrics)
        self.queries = 0  # prompt tokens looked up
        self.peak_used = 0  # most blocks held at once (benchmarks)

    @property
    def num_free(self) -> int:
        return len(self.free)

    def blocks_for(self, n_tokens: int) -> int:
        return -(-n_tokens // self.block_size)

    # --- admission ---------------------------------------------------------------------------------------------
    def allocate(self, seq: Sequence) -> bool:
        """Give `seq` blocks for all its tokens, reusing cached ones for its longest cached prefix; sets
        seq.num_computed to the cached tokens (at least one token is always left to compute, for its logits).
        False, with nothing taken, when the free blocks do not suffice."""
        assert not seq.block_table
        hits = self._cached_prefix(seq)
        needed = self.blocks_for(len(seq)) - len(hits)
        revived = sum(self.blocks[b].ref_count == 0 for b in hits)  # cached blocks taken back from the free list
        if needed + revived > self.num_free:
            return False
        for b in hits:
            self._take(b)
        seq.block_table = hits + [self._take(self._evict()) for _ in range(needed)]
        seq.num_computed = seq.num_cached_tokens = len(hits) * self.block_size
        self.hits += seq.num_cached_tokens
        self.queries += len(seq.prompt_ids)
        return True

    def _cached_prefix(self, seq: Sequence) -> list[int]:
        """Ids of the cached blocks that hold seq's first tokens, block by block while the hashes match."""
        out, parent = [], _root(seq)
        full = (len(seq) - 1) // self.block_size  # never the block holding the last token: it must be computed
        if not self.prefix_caching:
            return out
        for i in range(full):
            h = self._hash(parent, seq, i)
            b = self.by_hash.get(h)
            if b is None:
                break
            out.append(b)
            parent = h
        return out

    def _hash(self, parent: bytes, seq: Sequence, i: int) -> bytes:
        bs = self.block_size
        return hashlib.blake2b(parent + seq.block_content(i * bs, (i + 1) * bs), digest_size=16).digest()

    def _take(self, b: int) -> int:
        block = self.blocks[b]
        if block.ref_count == 0:
            del self.free[b]
        block.ref_count += 1
        self.peak_used = max(self.peak_used, len(self.blocks) - len(self.free))
        return b

    def _evict(self) -> int:
        """The least recently freed block, its cached content forgotten."""
        b = next(iter(self.free))
        block = self.blocks[b]
        if block.hash is not None and self.by_hash.get(block.hash) == b:
            del self.by_hash[block.hash]
        block.hash = None
        return b

    def forget_cached(self) -> None:
        """Drop every cached prefix (the weights changed: the stored keys/values are stale). Blocks in use keep
        their contents but are no longer found by later requests."""
        for block in self.blocks:
            block.hash = None
        self.by_hash.clear()

    # --- growth and release ------------------------------------------------------------------------------------
    def can_append(self, seq: Sequence) -> bool:
        """Whether the token about to be computed (the last of seq's tokens) has, or can get, a slot."""
        return len(seq.block_table) * self.block_size >= len(seq) or self.num_free > 0

    def append(self, seq: Sequence) -> None:
        if len(seq.block_table) * self.block_size < len(seq):
            seq.block_table.append(self._take(self._evict()))

    def free_blocks(self, seq: Sequence) -> None:
        """Release seq's blocks (most recent last, so its tail is evicted first); their content stays cached."""
        for b in reversed(seq.block_table):
            block = self.blocks[b]
            block.ref_count -= 1
            if block.ref_count == 0:
                self.free[b] = None
        seq.block_table = []
        seq.num_computed = 0

    def register(self, seq: Sequence, computed_before: int) -> None:
        """After a forward computed seq's tokens up to seq.num_computed: hash the blocks that became full, so
        other sequences can share them. Only computed blocks are registered: a block still being prefilled
        must never be found by another request."""
        if not self.prefix_caching:
            return
        bs = self.block_size
        first, last = computed_before // bs, seq.num_computed // bs
        parent = self.blocks[seq.block_table[first - 1]].hash if first else _root(seq)
        for i in range(first, last):
            block = self.blocks[seq.block_table[i]]
            if block.hash is None:
                block.hash = self._hash(parent, seq, i)
                self.by_hash.setdefault(block.hash, block.id)
            parent = block.hash


def _root(seq: Sequence) -> bytes:
    """Where a sequence's hash chain starts: keys and values computed under an adapter are that adapter's, never
    found by the base model or another adapter (every block hash chains from this)."""
    return b"" if seq.lora is None else b"lora:" + seq.lora.encode()
