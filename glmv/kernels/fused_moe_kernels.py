"""The two Triton kernels of the fused MoE (after vLLM's `fused_moe_kernel`): grouped GEMMs over blocks of
BLOCK_M expert-sorted (token, slot) pairs, one program per (block, N tile), every block reading one expert's
weights. Rows are gathered and scattered by pair index, so no sorted copy of the activations is ever written.

    gate_up_kernel: x [T, H], gate_up [E, 2I, H] -> h [P, I] = SiLU(x @ gate^T) * (x @ up^T)   (P = T*k pairs)
    down_kernel:    h [P, I], down [E, H, I], weights [P] -> y [P, H] = weight * (h @ down^T)

Both accumulate in fp32 and round once when they store. Padding rows (pair index == P) load zeros and store
nothing; blocks at or past num_padded (a device scalar) return at once, so the grid can have a static size.
The innermost dimension of every tensor must be contiguous (fused_experts checks it).
"""

from __future__ import annotations

import triton
import triton.language as tl

from glmv.kernels.tiles import grouped_tile


@triton.jit
def gate_up_kernel(
    x_ptr, w_ptr, h_ptr,  # x [T, H], w [E, 2I, H] (gate rows first), h [P, I]
    sorted_pairs_ptr, block_experts_ptr, num_padded_ptr,  # the Alignment (moe_align.py)
    num_pairs, top_k, H, I, rows,  # rows: length of sorted_pairs (the static grid's row count)
    stride_xt, stride_we, stride_wn, stride_ht,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
    PRECISION: tl.constexpr,
):
    pid_m, pid_n = grouped_tile(tl.program_id(0), rows, I, BLOCK_M, BLOCK_N, GROUP_M)
    if pid_m * BLOCK_M >= tl.load(num_padded_ptr):
        return
    pairs = tl.load(sorted_pairs_ptr + pid_m * BLOCK_M + tl.arange(0, BLOCK_M))  # [BM]
    real = pairs < num_pairs
    expert = tl.load(block_experts_ptr + pid_m).to(tl.int64)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # [BN] columns of h
    ks = tl.arange(0, BLOCK_K)

    x_rows = x_ptr + (pairs // top_k).to(tl.int64)[:, None] * stride_xt  # [BM, 1]: pair p reads token p // k
    gate_cols = w_ptr + expert * stride_we + cols.to(tl.int64)[None, :] * stride_wn  # [1, BN]
    up_cols = gate_cols + I * stride_wn
    gate = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    up = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, H, BLOCK_K):
        k = k0 + ks
        a = tl.load(x_rows + k[None, :], mask=real[:, None] & (k[None, :] < H), other=0.0)  # [BM, BK]
        w_mask = (k[:, None] < H) & (cols[None, :] < I)  # [BK, BN]
        gate = tl.dot(a, tl.load(gate_cols + k[:, None], mask=w_mask, other=0.0), gate, input_precision=PRECISION)
        up = tl.dot(a, tl.load(up_cols + k[:, None], mask=w_mask, other=0.0), up, input_precision=PRECISION)

    h = gate * tl.sigmoid(gate) * up  # the SiLU gate in the epilogue: gate and up never reach memory
    h_ptrs = h_ptr + pairs.to(tl.int64)[:, None] * stride_ht + cols[None, :]
    tl.store(h_ptrs, h.to(h_ptr.dtype.element_ty), mask=real[:, None] & (cols[None, :] < I))


@triton.jit
def down_kernel(
    h_ptr, w_ptr, y_ptr, weights_ptr,  # h [P, I], w [E, H, I], y [P, H], weights [P] fp32
    sorted_pairs_ptr, block_experts_ptr, num_padded_ptr,
    num_pairs, H, I, rows,
    stride_ht, stride_we, stride_wn, stride_yt,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
    PRECISION: tl.constexpr,
):
    pid_m, pid_n = grouped_tile(tl.program_id(0), rows, H, BLOCK_M, BLOCK_N, GROUP_M)
    if pid_m * BLOCK_M >= tl.load(num_padded_ptr):
        return
    pairs = tl.load(sorted_pairs_ptr + pid_m * BLOCK_M + tl.arange(0, BLOCK_M))  # [BM]
    real = pairs < num_pairs
    expert = tl.load(block_experts_ptr + pid_m).to(tl.int64)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # [BN] columns of y (hidden units)
    ks = tl.arange(0, BLOCK_K)

    h_rows = h_ptr + pairs.to(tl.int64)[:, None] * stride_ht  # [BM, 1]
    w_cols = w_ptr + expert * stride_we + cols.to(tl.int64)[None, :] * stride_wn  # [1, BN]
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, I, BLOCK_K):
        k = k0 + ks
        a = tl.load(h_rows + k[None, :], mask=real[:, None] & (k[None, :] < I), other=0.0)  # [BM, BK]
        w = tl.load(w_cols + k[:, None], mask=(k[:, None] < I) & (cols[None, :] < H), other=0.0)  # [BK, BN]
        acc = tl.dot(a, w, acc, input_precision=PRECISION)

    acc = acc * tl.load(weights_ptr + pairs, mask=real, other=0.0)[:, None]  # routing weight, in fp32
    y_ptrs = y_ptr + pairs.to(tl.int64)[:, None] * stride_yt + cols[None, :]
    tl.store(y_ptrs, acc.to(y_ptr.dtype.element_ty), mask=real[:, None] & (cols[None, :] < H))
