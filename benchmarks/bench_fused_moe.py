"""Fused Triton MoE (glmv.kernels.fused_moe) vs glmv's eager Experts forward, on GLM-4.5V's routed-expert layer
(128 experts, top-8, hidden 4096, moe_intermediate_size 1408), one GPU, bf16 by default.

    python benchmarks/bench_fused_moe.py [--tokens 1 8 64 512] [--dtype bfloat16] [--repeats 5]

For each token count the two run alternately (so clock and load changes hit both alike) on the same random
routing; prints ms per forward, the ratio eager / fused (>1: fused is faster) and the max abs difference. The
tile sizes in glmv/kernels/moe_configs.py are untuned starting points. On a machine without CUDA it says so and
exits 0.
"""

from __future__ import annotations

import argparse

import torch

from glmv.config import TextConfig
from glmv.timing import median_time

E, TOP_K, HIDDEN, INNER = 128, 8, 4096, 1408


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, nargs="+", default=[1, 8, 64, 512])
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("bench_fused_moe: needs a CUDA GPU (the kernels are Triton); none here, nothing measured")
        return
    from glmv.kernels.fused_moe import fused_experts
    from glmv.model.moe import Experts

    dtype, device = getattr(torch, args.dtype), torch.device("cuda")
    cfg = TextConfig(moe=True, vocab_size=16, hidden_size=HIDDEN, num_hidden_layers=1, num_attention_heads=1,
                     num_key_value_heads=1, head_dim=128, intermediate_size=1, moe_intermediate_size=INNER,
                     n_routed_experts=E, num_experts_per_tok=TOP_K)
    experts = Experts(cfg)
    with torch.no_grad():
        experts.gate_up_proj.normal_(std=HIDDEN**-0.5)
        experts.down_proj.normal_(std=INNER**-0.5)
    experts = experts.to(device, dtype)
    gate_up, down = experts.gate_up_proj.data, experts.down_proj.data

    def timed(fn):
        def call():
            fn()
            torch.cuda.synchronize()
        return call

    print(f"GLM-4.5V routed experts: E={E}, top-{TOP_K}, H={HIDDEN}, I={INNER}, {args.dtype}, "
          f"{torch.cuda.get_device_name(device)}")
    print(f"{'tokens':>7} {'eager ms':>10} {'fused ms':>10} {'eager/fused':>12} {'max |diff|':>11}")
    g = torch.Generator(device).manual_seed(0)
    with torch.no_grad():
        for t in args.tokens:
            x = torch.randn(t, HIDDEN, device=device, dtype=dtype, generator=g)
            scores = torch.rand(t, E, device=device, generator=g)
            weights, ids = scores.topk(TOP_K, dim=-1)
            weights = weights / weights.sum(-1, keepdim=True)
            eager = timed(lambda: experts(x, weights, ids))
            fused = timed(lambda: fused_experts(x, gate_up, down, weights, ids))
            times = {"eager": [], "fused": []}
            for _ in range(args.repeats):  # alternate: one sample of each per round
                times["eager"].append(median_time(eager, 1))
                times["fused"].append(median_time(fused, 1))
            e_ms, f_ms = (sorted(v)[len(v) // 2] * 1e3 for v in times.values())
            diff = (experts(x, weights, ids).float() - fused_experts(x, gate_up, down, weights, ids).float())
            print(f"{t:>7} {e_ms:>10.3f} {f_ms:>10.3f} {e_ms / f_ms:>12.2f} {diff.abs().max().item():>11.2e}")


if __name__ == "__main__":
    main()
