"""The Triton kernel of `int4_linear`: x [M, K] @ W^T with W int4 in compressed-tensors' pack-quantized layout,
dequantised in registers inside the K loop (as exllama / Marlin-style kernels and vLLM's Triton AWQ / GPTQ
kernels do): the weight never exists in float in memory.

    packed [N, K/8] int32   value k of row n sits in word k // 8, bits 4*(k % 8) .. 4*(k % 8) + 3 (little
                            endian, low nibble first), stored offset by 8 (nibble 0..15 -> value -8..7)
    scale  [N, K/group]     one scale per row and group of `group` consecutive input features

One program per (M tile, N tile, K split). Each K step loads BLOCK_K/8 words per column, unpacks them to a
[BLOCK_K, BLOCK_N] tile of integers in x's dtype (exact: |value| <= 8) and multiplies it with x's tile:
  SCALE_AFTER_DOT  (the block lies inside one group: group % BLOCK_K == 0) the dot runs on the raw integers and
                   its fp32 result is scaled per column, so the weight is never rounded to x's dtype;
  otherwise        the scales are gathered per (k, n), the tile dequantised in fp32, rounded to x's dtype, then dotted.
Accumulation is fp32. With SPLIT_K > 1 each split stores its fp32 partial sum ([SPLIT_K, M, N]) and the caller
sums them (a plain sum, not atomics: the result does not depend on scheduling).
"""

from __future__ import annotations

import triton
import triton.language as tl

from glmv.kernels.tiles import grouped_tile


@triton.jit
def int4_gemm_kernel(
    x_ptr, w_ptr, s_ptr, out_ptr,  # x [M, K], w [N, K/8] int32, s [N, K/group], out [SPLIT_K, M, N] (or [M, N])
    M, N, K, group,
    stride_xm, stride_wn, stride_sn, stride_om, stride_split,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
    SPLIT_K: tl.constexpr, SCALE_AFTER_DOT: tl.constexpr, PRECISION: tl.constexpr,
):
    pid_m, pid_n = grouped_tile(tl.program_id(0), M, N, BLOCK_M, BLOCK_N, GROUP_M)
    pid_k = tl.program_id(1)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # [BM]
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # [BN]
    row_ok = rows < M
    col_ok = cols < N
    words = tl.arange(0, BLOCK_K // 8)  # [BK/8] words per column and K step
    shifts = tl.arange(0, 8) * 4  # nibble j of a word: bits 4j .. 4j+3
    ks = tl.arange(0, BLOCK_K)

    x_rows = x_ptr + rows.to(tl.int64)[:, None] * stride_xm  # [BM, 1]
    w_cols = w_ptr + cols.to(tl.int64)[None, :] * stride_wn  # [1, BN]
    s_cols = s_ptr + cols.to(tl.int64) * stride_sn  # [BN]

    steps = tl.cdiv(K, BLOCK_K)
    per_split = tl.cdiv(steps, SPLIT_K)
    first = pid_k * per_split
    last = tl.minimum(first + per_split, steps)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for step in range(first, last):
        k0 = step * BLOCK_K
        k = k0 + ks
        a = tl.load(x_rows + k[None, :], mask=row_ok[:, None] & (k[None, :] < K), other=0.0)  # [BM, BK]
        wk = k0 // 8 + words  # [BK/8]; K % 8 == 0, so a word is either wholly inside K or wholly past it
        packed = tl.load(w_cols + wk[:, None], mask=(wk[:, None] < K // 8) & col_ok[None, :], other=0)  # [BK/8, BN]
        nibbles = (packed[:, None, :] >> shifts[None, :, None]) & 0xF  # [BK/8, 8, BN]: row k = 8 * word + nibble
        q = tl.reshape(nibbles, (BLOCK_K, BLOCK_N)) - 8  # [BK, BN] int32; past K: -8, against zeros of x
        if SCALE_AFTER_DOT:  # the whole step lies in group k0 // group
            scale = tl.load(s_cols + k0 // group, mask=col_ok, other=0.0).to(tl.float32)  # [BN]
            part = tl.dot(a, q.to(a.dtype), input_precision=PRECISION)
            acc += part * scale[None, :]
        else:
            s_ptrs = s_cols[None, :] + (k // group)[:, None]  # [BK, BN]
            scale = tl.load(s_ptrs, mask=(k[:, None] < K) & col_ok[None, :], other=0.0).to(tl.float32)
            w = (q.to(tl.float32) * scale).to(a.dtype)
            acc = tl.dot(a, w, acc, input_precision=PRECISION)

    out_ptrs = out_ptr + pid_k * stride_split + rows.to(tl.int64)[:, None] * stride_om + cols[None, :]
    tl.store(out_ptrs, acc.to(out_ptr.dtype.element_ty), mask=row_ok[:, None] & col_ok[None, :])
