"""`glmv convert SRC DST`: re-save a checkpoint in another dtype, or quantised (compressed-tensors layout)."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "convert", help="re-save a checkpoint quantised (fp8, int8, int4) or in another dtype",
        description="Stream a checkpoint into a new directory, tensor by tensor (peak memory about one shard): "
                    "with --quantize, the decoder's routed experts (--only experts, the default) or all its linears "
                    "(--only all) are stored quantised in the compressed-tensors layout that vLLM and transformers "
                    "read; the vision tower, router, embeddings and lm_head stay float.\n\n"
                    "examples:\n  glmv convert GLM-4.5V GLM-4.5V-int4 --quantize int4 --group-size 128\n"
                    "  glmv convert nano nano-int8 --quantize int8 --only all\n"
                    "  glmv convert GLM-4.5V GLM-4.5V-int4-fp8 --quantize int4 --rest fp8\n"
                    "  glmv convert GLM-4.1V GLM-4.1V-bf16 --dtype bfloat16",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("src", help="checkpoint directory to read (Hugging Face layout)")
    p.add_argument("dst", help="directory to write (created; its old *.safetensors are replaced)")
    p.add_argument("--quantize", choices=("fp8", "int8", "int4"), default=None,
                   help="fp8 (e4m3, per output channel), int8 (per output channel) or int4 (per group)")
    p.add_argument("--group-size", type=int, default=128, help="int4 group size along the input (default 128)")
    p.add_argument("--only", choices=("experts", "all"), default="experts",
                   help="quantise the routed experts only (default; most of an MoE's weights) or every decoder "
                        "linear (attention, dense MLPs, shared experts too)")
    p.add_argument("--rest", choices=("fp8", "int8", "int4"), default=None,
                   help="with --only experts: quantise the decoder's other linears (attention, dense MLPs, shared "
                        "experts) to this format, e.g. --quantize int4 --rest fp8 (the planner's int4 + 8-bit rung)")
    p.add_argument("--dtype", default=None, help="dtype of the float tensors and scales written (default: the "
                                                  "checkpoint's), e.g. bfloat16")
    p.add_argument("--max-shard-size", default="5GiB", help="largest output shard (default 5GiB)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from glmv.engine.engine import parse_memory
    from glmv.quant.convert import convert

    out = convert(args.src, args.dst, args.quantize, group_size=args.group_size, only=args.only, dtype=args.dtype,
                  max_shard_bytes=parse_memory(args.max_shard_size), rest=args.rest)
    print(f"wrote {out}")
    return 0
