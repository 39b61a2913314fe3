"""Matmuls that read quantised weights without dequantising them, where a device has one; None elsewhere (the
caller then dequantises the weight for the call, the reference path).

  int8 weight-only (CPU, bf16/fp16 activations)  torch._weight_int8pack_mm: rows scaled after the dot product
  FP8 W8A8 (CUDA compute capability 8.9+)        activations quantised per token to e4m3 on the fly, then
                                                 torch._scaled_mm with per-row x per-channel scales (vLLM's
                                                 dynamic-FP8 path); also runs on CPU, where tests check it
  int4 per group (CUDA 8.0+, triton)             glmv.kernels.int4_gemm.int4_linear: a Triton GEMM that unpacks
                                                 and scales the int4 weight in registers inside its K loop
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch

from glmv.device import cuda_capability
from glmv.kernels import int4_gemm
from glmv.quant.scheme import FP8_MAX, WeightQuant

Matmul = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]  # (rows [M, K], data, scale) -> [M, N]


def int8_weight_only(rows: torch.Tensor, data: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return torch._weight_int8pack_mm(rows, data, scale.view(-1).to(rows.dtype))


def fp8_dynamic(rows: torch.Tensor, data: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """rows [M, K] (bf16/fp16) @ fp8 weight [N, K].T with weight scales per tensor [1] or per channel [N, 1]."""
    amax = rows.abs().amax(dim=-1, keepdim=True).float().clamp(min=1e-12)  # [M, 1]
    row_scale = amax / FP8_MAX
    q = (rows.float() / row_scale).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)
    weight_scale = scale.float().view(1, -1).expand(1, data.shape[0]).contiguous()  # [1, N]
    return torch._scaled_mm(q, data.t(), scale_a=row_scale, scale_b=weight_scale, out_dtype=rows.dtype)


@functools.lru_cache(maxsize=None)
def int4_group(group_size: int) -> Matmul:
    """rows [M, K] @ an int4 weight packed [N, K/8] int32 with scales [N, K/group_size], by the Triton kernel."""
    return functools.partial(int4_gemm.int4_linear, group=group_size)


def fast_matmul(x: torch.Tensor, wq: WeightQuant, out_features: int, in_features: int) -> Matmul | None:
    """The matmul that serves these activations and this scheme without dequantising, or None."""
    if x.dtype not in (torch.bfloat16, torch.float16):
        return None
    if wq.packed:
        if (x.device.type == "cuda" and (wq.kind, wq.bits, wq.strategy) == ("int", 4, "group")
                and in_features % 8 == 0 and in_features % wq.group_size == 0 and int4_gemm.available(x)):
            return int4_group(wq.group_size)
        return None
    if x.device.type == "cpu" and (wq.kind, wq.bits, wq.strategy) == ("int", 8, "channel"):
        return int8_weight_only
    if (x.device.type == "cuda" and wq.kind == "float" and wq.strategy in ("tensor", "channel")
            and out_features % 16 == 0 and in_features % 16 == 0 and cuda_capability(x.device) >= (8, 9)):
        return fp8_dynamic
    return None
