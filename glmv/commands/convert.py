"""`glmv convert SRC DST`: re-save a checkpoint in another dtype, quantised (compressed-tensors layout), or with a
LoRA / DoRA adapter merged into its weights (`--merge-lora`)."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "convert", help="re-save a checkpoint quantised (fp8, int8, int4), in another dtype, or with a LoRA merged",
        description="Stream a checkpoint into a new directory, tensor by tensor (peak memory about one shard): "
                    "with --quantize, the decoder's routed experts (--only experts, the default) or all its linears "
                    "(--only all) are stored quantised in the compressed-tensors layout that vLLM and transformers "
                    "read; the vision tower, router, embeddings and lm_head stay float.\n\n"
                    "examples:\n  glmv convert GLM-4.5V GLM-4.5V-int4 --quantize int4 --group-size 128\n"
                    "  glmv convert nano nano-int8 --quantize int8 --only all\n"
                    "  glmv convert GLM-4.5V GLM-4.5V-int4-fp8 --quantize int4 --rest fp8\n"
                    "  glmv convert GLM-4.1V GLM-4.1V-bf16 --dtype bfloat16\n"
                    "  glmv convert GLM-4.5V GLM-4.5V-tuned --merge-lora my-adapter",
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
    p.add_argument("--merge-lora", metavar="ADAPTER", default=None,
                   help="a LoRA / DoRA adapter directory in peft's layout (adapter_config.json + "
                        "adapter_model.safetensors) to fold into the weights; loads the whole model into memory. "
                        "With --quantize the merged checkpoint is written to a temporary directory beside DST first")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from glmv.engine.engine import parse_memory
    from glmv.lora.merge import merge_checkpoint
    from glmv.quant.convert import convert

    shard = parse_memory(args.max_shard_size)
    if args.merge_lora is None:
        out = convert(args.src, args.dst, args.quantize, group_size=args.group_size, only=args.only, dtype=args.dtype,
                      max_shard_bytes=shard, rest=args.rest)
    elif args.quantize is None:
        out = merge_checkpoint(args.src, args.merge_lora, args.dst, dtype=args.dtype, max_shard_bytes=shard)
    else:  # merge, then quantise the merged weights (quantising first would fold the adapter into rounded weights)
        Path(args.dst).parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=Path(args.dst).parent, prefix=".glmv-merge-") as merged:
            merge_checkpoint(args.src, args.merge_lora, merged, dtype=args.dtype, max_shard_bytes=shard)
            out = convert(merged, args.dst, args.quantize, group_size=args.group_size, only=args.only,
                          dtype=args.dtype, max_shard_bytes=shard, rest=args.rest)
    print(f"wrote {out}")
    return 0
