"""Triton int4 dequant-GEMM (glmv.kernels.int4_gemm.int4_linear) vs glmv's current int4 path (dequantise the
weight, then F.linear) vs a plain bf16 F.linear, at GLM-4.5V's routed-expert shapes, one GPU.

    python benchmarks/bench_int4_gemm.py [--rows 1 8 64] [--group 128] [--dtype bfloat16] [--repeats 5]

Shapes (N x K): gate+up 2816 x 4096 (moe_intermediate_size 1408, two projections) and down 4096 x 1408. The
weights are random int4 words in compressed-tensors' pack-quantized layout with random scales (bf16 scales for
bf16 activations), so nothing beyond torch and triton is needed. For each shape and row count the three run
alternately (so clock and load changes hit all alike); prints ms per call, the ratios dequant/int4 and bf16/int4
(>1: the kernel is faster) and the max abs difference between the kernel and the dequantised path (the kernel
scales in fp32; the dequantised path rounds every weight to the scale dtype, so they differ at that rounding).
The kernel's tile sizes (glmv/kernels/int4_gemm.py) are untuned starting points. On a machine without CUDA it
says so and exits 0.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from glmv.quant.scheme import WeightQuant
from glmv.quant.tensors import dequantize
from glmv.timing import median_time

SHAPES = [("gate_up", 1408 * 2, 4096), ("down", 4096, 1408)]  # (name, N = out features, K = in features)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, nargs="+", default=[1, 8, 64])
    ap.add_argument("--group", type=int, default=128)
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16"])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("bench_int4_gemm: needs a CUDA GPU (the kernel is Triton); none here, nothing measured")
        return
    from glmv.kernels.int4_gemm import int4_linear, pick_config

    dtype, device = getattr(torch, args.dtype), torch.device("cuda")
    wq = WeightQuant("int", 4, "group", group_size=args.group, packed=True)
    g = torch.Generator(device).manual_seed(0)

    def timed(fn):
        def call():
            fn()
            torch.cuda.synchronize()
        return call

    print(f"GLM-4.5V expert projections, int4 groups of {args.group}, {args.dtype}, "
          f"{torch.cuda.get_device_name(device)}")
    print(f"{'shape':>16} {'M':>4} {'int4 ms':>9} {'dequant ms':>11} {'bf16 ms':>9} {'dequant/int4':>13} "
          f"{'bf16/int4':>10} {'max |diff|':>11}  config")
    with torch.no_grad():
        for name, n, k in SHAPES:
            packed = torch.randint(-2**31, 2**31 - 1, (n, k // 8), device=device, dtype=torch.int64,
                                   generator=g).to(torch.int32)
            scale = (torch.rand(n, k // args.group, device=device, generator=g) * 2 / k**0.5).to(dtype)
            dense = dequantize(packed, scale, wq, k, dtype)  # what the bf16 baseline multiplies
            for m in args.rows:
                x = torch.randn(m, k, device=device, dtype=dtype, generator=g)
                runs = {
                    "int4": timed(lambda: int4_linear(x, packed, scale, args.group)),
                    "dequant": timed(lambda: F.linear(x, dequantize(packed, scale, wq, k, dtype))),
                    "bf16": timed(lambda: F.linear(x, dense)),
                }
                times = {key: [] for key in runs}
                for _ in range(args.repeats):  # alternate: one sample of each per round
                    for key, fn in runs.items():
                        times[key].append(median_time(fn, 1))
                i_ms, d_ms, b_ms = (sorted(v)[len(v) // 2] * 1e3 for v in times.values())
                diff = int4_linear(x, packed, scale, args.group).float() - F.linear(x, dense).float()
                cfg = pick_config(m, n, k, args.group, torch.cuda.get_device_properties(device).multi_processor_count)
                print(f"{name + f' {n}x{k}':>16} {m:>4} {i_ms:>9.4f} {d_ms:>11.4f} {b_ms:>9.4f} {d_ms / i_ms:>13.2f} "
                      f"{b_ms / i_ms:>10.2f} {diff.abs().max().item():>11.2e}  "
                      f"{cfg.block_m}x{cfg.block_n}x{cfg.block_k} split {cfg.split_k}")


if __name__ == "__main__":
    main()
