"""`int4_linear`: x @ W^T for an int4 weight stored as compressed-tensors' pack-quantized groups (W4A16), by a
Triton kernel that dequantises the weight in registers inside the K loop (int4_gemm_kernels.py), so a decode step
reads 4.25 bits per weight (the ints and a bf16 scale per 128) instead of the 16 of a dequantised copy.

Tile sizes are UNTUNED STARTING POINTS, written without a GPU: a decode tile (M <= 16: BLOCK_M 16, the smallest
tensor-core tile, narrow N tiles) and a prefill tile, with the K loop split over programs when the tiles alone
would not fill the GPU. Measure with benchmarks/bench_int4_gemm.py before any speed claim.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import torch

from glmv.kernels import triton_runs_on

DTYPES = (torch.float32, torch.bfloat16, torch.float16)
SCALE_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


class Int4Config(NamedTuple):
    block_m: int  # rows of x per program
    block_n: int  # output columns (weight rows) per program
    block_k: int  # reduction step: a power of two >= 16 (8 int4 per word: BLOCK_K / 8 words per column)
    group_m: int = 8  # M tiles that walk the same weight tiles together (L2 reuse)
    split_k: int = 1  # programs along K, each storing an fp32 partial sum (summed afterwards)
    num_warps: int = 4
    num_stages: int = 3


DECODE = Int4Config(16, 64, 128, 1, num_warps=4, num_stages=4)  # M <= 16: a weight read
PREFILL = Int4Config(64, 128, 64, 8, num_warps=4, num_stages=3)
MAX_SPLIT_K = 8


@functools.lru_cache(maxsize=None)
def _sm_count(device: torch.device) -> int:
    return torch.cuda.get_device_properties(device).multi_processor_count


def available(x: torch.Tensor) -> bool:
    """Whether int4_linear can run on x's device (glmv.kernels.triton_runs_on)."""
    return triton_runs_on(x)


def pick_config(m: int, n: int, k: int, group: int, sm_count: int = 1) -> Int4Config:
    """The decode or the prefill tile for this shape. BLOCK_K shrinks to the largest power of two that divides
    the group (when that is >= 32), so that every K step lies in one group and the kernel scales the dot's result
    instead of the weight; the K loop is split (up to MAX_SPLIT_K ways, at least two steps per split) while the
    output tiles number fewer than `sm_count`."""
    base = DECODE if m <= 16 else PREFILL
    block_k = base.block_k
    if group % block_k:
        pow2 = group & -group  # the largest power of two dividing group
        if pow2 >= 32:
            block_k = pow2
    tiles = -(-m // base.block_m) * -(-n // base.block_n)
    steps = -(-k // block_k)
    split = 1
    while tiles * split < sm_count and split * 2 <= MAX_SPLIT_K and steps >= 4 * split:
        split *= 2
    return base._replace(block_k=block_k, split_k=split)


def int4_linear(x: torch.Tensor, packed: torch.Tensor, scale: torch.Tensor, group: int,
                config: Int4Config | None = None) -> torch.Tensor:
    """x [M, K] (fp32/bf16/fp16) @ W^T -> [M, N] in x's dtype, W [N, K] int4 stored as `packed` [N, K/8] int32
    (compressed-tensors' pack-quantized: values offset by 8, 8 per word, little endian along K) and `scale`
    [N, K/group] (fp32/bf16/fp16). The sum is accumulated in fp32 and rounded once. `config` overrides the tile
    sizes (pick_config chooses them by shape otherwise)."""
    from glmv.kernels import int4_gemm_kernels as kernels  # imports triton: only once the kernel is to run

    _check_inputs(x, packed, scale, group)
    m, k = x.shape
    n = packed.shape[0]
    if m == 0 or n == 0:
        return x.new_zeros(m, n)
    if config is None:
        config = pick_config(m, n, k, group, _sm_count(x.device) if x.is_cuda else 1)
    _check_config(config)
    scale_after_dot = group % config.block_k == 0
    # fp32 dots follow torch's own setting, so that the comparison with eager matmuls is like for like
    precision = "tf32" if x.dtype == torch.float32 and torch.backends.cuda.matmul.allow_tf32 else "ieee"
    split = config.split_k
    out = x.new_empty(m, n) if split == 1 else torch.empty(split, m, n, device=x.device, dtype=torch.float32)
    grid = (-(-m // config.block_m) * -(-n // config.block_n), split)
    kernels.int4_gemm_kernel[grid](
        x, packed, scale, out, m, n, k, group,
        x.stride(0), packed.stride(0), scale.stride(0), out.stride(-2), out.stride(0) if split > 1 else 0,
        BLOCK_M=config.block_m, BLOCK_N=config.block_n, BLOCK_K=config.block_k, GROUP_M=config.group_m,
        SPLIT_K=split, SCALE_AFTER_DOT=scale_after_dot, PRECISION=precision,
        num_warps=config.num_warps, num_stages=config.num_stages)
    return out if split == 1 else out.sum(0).to(x.dtype)


def _check_config(config: Int4Config) -> None:
    def pow2(v: int) -> bool:
        return v > 0 and v & (v - 1) == 0

    if not (pow2(config.block_m) and pow2(config.block_n) and pow2(config.block_k) and config.block_k >= 16
            and config.block_m >= 1 and config.group_m >= 1 and config.split_k >= 1):
        raise ValueError(f"int4_linear: block sizes must be powers of two (BLOCK_K >= 16) and group_m, split_k "
                         f">= 1, got {config}")


def _check_inputs(x: torch.Tensor, packed: torch.Tensor, scale: torch.Tensor, group: int) -> None:
    """Shapes, dtypes, devices and layouts the kernel relies on (it indexes raw pointers, so a mismatch would read
    wrong memory rather than fail)."""

    def need(ok: bool, msg: str) -> None:
        if not ok:
            raise ValueError(f"int4_linear: {msg}")

    need(x.dim() == 2, f"x must be [M, K], got shape {tuple(x.shape)}")
    need(packed.dim() == 2 and scale.dim() == 2,
         f"packed must be [N, K/8] and scale [N, K/group], got {tuple(packed.shape)} and {tuple(scale.shape)}")
    need(isinstance(group, int) and group >= 1, f"group must be a positive int, got {group!r}")
    k = x.shape[1]
    need(k % 8 == 0 and k % group == 0,
         f"K (x's last dimension, the weight's input features) must be a multiple of 8 (int4 per int32 word) and "
         f"of the group size {group}, got K={k}; other shapes take the dequantise-then-matmul path")
    n = packed.shape[0]
    need(tuple(packed.shape) == (n, k // 8),
         f"with x [M, {k}], packed must be [N, {k // 8}] (8 int4 per int32), got {tuple(packed.shape)}")
    need(tuple(scale.shape) == (n, k // group),
         f"with packed [{n}, {k // 8}] and group {group}, scale must be [{n}, {k // group}], got {tuple(scale.shape)}")
    need(x.dtype in DTYPES, f"x dtype must be one of {DTYPES}, got {x.dtype}")
    need(packed.dtype == torch.int32, f"packed must be int32, got {packed.dtype}")
    need(scale.dtype in SCALE_DTYPES, f"scale dtype must be one of {SCALE_DTYPES}, got {scale.dtype}")
    devices = {x.device, packed.device, scale.device}
    need(len(devices) == 1, f"all tensors must be on one device, got {sorted(map(str, devices))}")
    for name, tensor in [("x", x), ("packed", packed), ("scale", scale)]:
        need(tensor.is_contiguous(), f"{name} must be contiguous (call .contiguous() first)")
