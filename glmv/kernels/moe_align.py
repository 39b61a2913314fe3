"""Alignment for the fused MoE kernels (vLLM's `moe_align_block_size`, in plain torch): the (token, slot) pairs
sorted by expert, each expert's run padded to a multiple of BLOCK_M rows, so that every block of BLOCK_M rows
belongs to one expert and a grouped GEMM can give one program per (block, N tile).

Device ops only (no `.item()`, `.tolist()`, `bincount` or boolean indexing, which read sizes on the host): a
decode step that calls this can be captured in a CUDA graph. The buffers have a static worst-case size instead;
blocks past `num_padded` are skipped by the kernels, which read it on the device.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class Alignment(NamedTuple):
    sorted_pairs: torch.Tensor  # [max_padded] int32: pair index t*k + slot, or num_pairs where a row is padding
    block_experts: torch.Tensor  # [max_padded // block_m] int32: the expert of each block, -1 past num_padded
    num_padded: torch.Tensor  # [1] int32: rows in use (every expert's run rounded up to block_m), on the device


def max_padded_rows(num_pairs: int, num_experts: int, block_m: int) -> int:
    """Worst case of sum over experts of round_up(count, block_m): each non-empty expert (at most
    min(E, pairs) of them) wastes at most block_m - 1 rows; rounded up to whole blocks."""
    rows = num_pairs + min(num_experts, num_pairs) * (block_m - 1)
    return -(-rows // block_m) * block_m


def align_pairs(ids: torch.Tensor, num_experts: int, block_m: int) -> Alignment:
    """ids [T, k] expert of each (token, slot) -> the pairs in expert order, each expert's run padded to block_m."""
    flat = ids.flatten()  # [P] token-major: pair p is token p // k, slot p % k
    num_pairs = flat.numel()
    device = flat.device
    counts = torch.zeros(num_experts, dtype=torch.int64, device=device)
    counts.scatter_add_(0, flat.long(), torch.ones_like(flat, dtype=torch.int64))  # bincount without a sync
    padded = (counts + block_m - 1) // block_m * block_m  # [E] rows each expert occupies
    padded_end = padded.cumsum(0)  # [E] where each expert's padded run ends
    run_start = counts.cumsum(0) - counts  # [E] where each expert's run starts in the unpadded sorted order

    order = flat.argsort(stable=True)  # [P] pairs by expert, token order kept within an expert
    expert_of = flat[order].long()  # [P]
    rank = torch.arange(num_pairs, device=device) - run_start[expert_of]  # position inside the expert's run
    dest = padded_end[expert_of] - padded[expert_of] + rank  # row in the padded layout

    rows = max_padded_rows(num_pairs, num_experts, block_m)
    sorted_pairs = torch.full((rows,), num_pairs, dtype=torch.int32, device=device)
    sorted_pairs[dest] = order.to(torch.int32)

    block_start = torch.arange(0, rows, block_m, device=device)  # [blocks]
    block_experts = torch.searchsorted(padded_end, block_start, right=True)  # first expert ending after the start
    num_padded = padded_end[-1:]
    block_experts = torch.where(block_start < num_padded, block_experts, -1).to(torch.int32)
    return Alignment(sorted_pairs, block_experts, num_padded.to(torch.int32))
