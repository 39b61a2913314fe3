"""Quantised vs float decode on one checkpoint (default: the bundled nano GLM-V): weight bytes and decode tokens/s
of fp32, bf16, int8 (weight-only, bf16 activations) and int4 g128 (routed experts), greedy, fixed lengths. The
variants run alternately in one process; ratios are against fp32 (>1: faster / smaller).

    python benchmarks/bench_quant.py [--model PATH | --wide] [--threads 2] [--batch 1] [--new 32] [--device cpu]

--wide builds a random 4-layer checkpoint with GLM-4.5V's expert width (hidden 1024, experts of 1408, 16 of them,
top-4; 0.9 GB in fp32): its weights stream from DRAM at every step, as a real model's do, where the nano model's
mostly stay in cache.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from glmv import LLM, SamplingParams
from glmv.model_path import resolve_model_path
from glmv.quant.convert import convert
from glmv.testing.tiny_checkpoint import make_tiny_model_dir
from glmv.timing import median_time


WIDE = dict(hidden_size=1024, intermediate_size=2048, num_hidden_layers=4, num_attention_heads=16,
            num_key_value_heads=4, head_dim=64, moe_intermediate_size=1408, n_routed_experts=16, num_experts_per_tok=4,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5,
                             "mrope_section": [4, 6, 6]})


def weight_bytes(model: torch.nn.Module) -> int:
    tensors = {t.data_ptr(): t for t in [*model.parameters(), *model.buffers()]}  # tied tensors once
    return sum(t.numel() * t.element_size() for t in tensors.values())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="checkpoint directory (default: the bundled nano GLM-V)")
    ap.add_argument("--wide", action="store_true", help="a random checkpoint with GLM-4.5V's expert width")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--prompt", type=int, default=64)
    ap.add_argument("--new", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp())
    src = make_tiny_model_dir(tmp / "wide", text=WIDE) if args.wide else resolve_model_path(args.model)
    int8 = convert(src, tmp / "int8", "int8", only="all", dtype="bfloat16", progress=False)
    int4 = convert(src, tmp / "int4", "int4", group_size=64, only="experts", dtype="bfloat16", progress=False)
    variants = {"fp32": LLM(src, dtype="float32", device=args.device, progress=False),
                "bf16": LLM(src, dtype="bfloat16", device=args.device, progress=False),
                "int8 (all linears)": LLM(int8, dtype="bfloat16", device=args.device, progress=False),
                "int4 g64 (experts)": LLM(int4, dtype="bfloat16", device=args.device, progress=False)}
    prompts = torch.randint(10, 200, (args.batch, args.prompt), generator=torch.Generator().manual_seed(0)).tolist()

    def run(llm, n):
        return llm.generate(prompts, SamplingParams(temperature=0, max_tokens=n, ignore_eos=True))

    times = {name: [] for name in variants}
    for _ in range(args.repeats):  # alternate the variants so machine load hits them alike
        for name, llm in variants.items():
            full, first = median_time(lambda: run(llm, args.new), 1), median_time(lambda: run(llm, 1), 1)
            times[name].append(args.batch * (args.new - 1) / max(full - first, 1e-9))
    print(f"{src.name}: batch {args.batch}, {args.new} new tokens, {args.threads} threads, {args.device}")
    print(f"{'variant':22} {'weights MB':>11} {'vs fp32':>8} {'decode tok/s':>13} {'vs fp32':>8}")
    base_bytes = weight_bytes(variants["fp32"].model)
    base_tps = sorted(times["fp32"])[len(times["fp32"]) // 2]
    for name, llm in variants.items():
        tps = sorted(times[name])[len(times[name]) // 2]
        size = weight_bytes(llm.model)
        print(f"{name:22} {size / 1e6:11.1f} {base_bytes / size:7.2f}x {tps:13.1f} {tps / base_tps:7.2f}x")


if __name__ == "__main__":
    main()
