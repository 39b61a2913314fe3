"""Tile sizes for the fused MoE kernels, per layer shape and token count.

UNTUNED STARTING POINTS: written without a GPU to tune on, after the shape of vLLM's tuned tables (small BLOCK_M
while each expert sees few rows, larger tiles as rows per expert grow). Replace them with measured values
(benchmarks/bench_fused_moe.py) before trusting any speed claim.
"""

from __future__ import annotations

from typing import NamedTuple


class MoEConfig(NamedTuple):
    block_m: int  # rows (token, slot pairs) per block: every block belongs to one expert
    block_n: int  # output columns per program
    block_k: int  # reduction step
    group_m: int = 8  # blocks of rows that walk the same weight tiles together (L2 reuse)
    num_warps: int = 4
    num_stages: int = 3


# (experts, moe_intermediate_size, hidden, top_k) -> {max tokens: config}: the smallest key >= T applies, the
# largest beyond the last key.
CONFIGS: dict[tuple[int, int, int, int], dict[int, MoEConfig]] = {
    # GLM-4.5V / GLM-4.5-Air. Decode (T*8 pairs over 128 experts: ~1 row per expert) is a weight read, so
    # BLOCK_M stays at 16 (the smallest tensor-core tile) and narrow N tiles give enough programs.
    (128, 1408, 4096, 8): {
        1: MoEConfig(16, 64, 128, 1, num_warps=4, num_stages=4),
        16: MoEConfig(16, 64, 128, 1, num_warps=4, num_stages=4),
        64: MoEConfig(16, 128, 128, 8, num_warps=4, num_stages=3),
        512: MoEConfig(32, 128, 64, 8, num_warps=4, num_stages=4),
        4096: MoEConfig(64, 128, 64, 8, num_warps=8, num_stages=3),
    },
}

# Any other shape: the small-batch tile while experts see at most ~16 rows each, a prefill tile after that.
SMALL = MoEConfig(16, 64, 64, 1, num_warps=4, num_stages=3)
LARGE = MoEConfig(64, 128, 64, 8, num_warps=8, num_stages=3)


def pick_config(tokens: int, experts: int, inner: int, hidden: int, top_k: int) -> MoEConfig:
    table = CONFIGS.get((experts, inner, hidden, top_k))
    if table is None:
        return SMALL if tokens * top_k <= 16 * experts else LARGE
    return table[min((key for key in table if key >= tokens), default=max(table))]
