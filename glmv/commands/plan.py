"""`glmv plan`: what of a model fits a device (bf16, quantised or offloaded), from its config.json alone."""

from __future__ import annotations

import argparse

SIZE_FORMS = "bytes, or a number with a unit: 80GiB, 80GB, 141G, '24 GiB', 512MB"


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "plan", help="what of a model fits a device, without loading it",
        description="Size a model's weights per component in bf16 / fp8 / int8 / int4 and its KV cache, and pick "
                    "the first strategy that fits: bf16, 8-bit routed experts, 8-bit decoder, int4 routed experts "
                    "+ 8-bit decoder, then routed experts offloaded to CPU RAM (CUDA) or weights memory-mapped "
                    "from disk (CPU). Reads config.json only (docs/memory.md).\n\n"
                    "examples:\n  glmv plan --model /path/to/GLM-4.5V --device cuda:0 --memory 80GB\n"
                    "  glmv plan --model GLM-4.1V-9B-Thinking/config.json --device cpu --memory auto",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", "-m", default=None,
                   help="checkpoint directory or its config.json; default: the bundled nano GLM-V")
    p.add_argument("--device", default="auto",
                   help="cuda, cuda:N or cpu; auto (the default): CUDA if available, else CPU. Planning for a "
                        "device this machine lacks works with an explicit --memory")
    p.add_argument("--memory", default="auto", metavar="SIZE",
                   help=f"memory to plan for on the device: {SIZE_FORMS}; auto (the default): the device's free "
                        "memory (free GPU memory; available RAM on CPU)")
    p.add_argument("--cpu-memory", default=None, metavar="SIZE",
                   help="CPU RAM that may hold offloaded experts (default: this machine's total RAM)")
    p.add_argument("--max-model-len", type=int, default=None, metavar="N",
                   help="tokens of context per sequence (default: the model's max_position_embeddings)")
    p.add_argument("--max-num-seqs", type=int, default=1, metavar="N",
                   help="sequences whose full context the KV cache holds at once (default 1)")
    p.set_defaults(func=run_plan)


def run_plan(args: argparse.Namespace) -> int:
    from pathlib import Path

    from glmv.config import GlmvConfig
    from glmv.device import resolve_device
    from glmv.model_path import resolve_model_path
    from glmv.plan import free_memory, plan_memory

    path = Path(args.model) if args.model and Path(args.model).is_file() else resolve_model_path(args.model)
    config = GlmvConfig.from_pretrained(path)
    device = str(resolve_device("auto")) if args.device == "auto" else args.device
    memory = free_memory(device) if args.memory == "auto" else parse_size(args.memory, "--memory")
    cpu_memory = None if args.cpu_memory is None else parse_size(args.cpu_memory, "--cpu-memory")
    plan = plan_memory(config, device, memory, args.max_model_len, args.max_num_seqs, cpu_memory)
    print(plan.describe())
    return 0 if plan.fits else 1


def parse_size(value: str, flag: str) -> int:
    """Bytes from "80GiB", "141G", "24 GiB" or plain bytes; a ConfigError naming the flag and the accepted forms."""
    from glmv.engine.engine import parse_memory
    from glmv.errors import ConfigError

    forms = SIZE_FORMS if flag != "--memory" else "auto, " + SIZE_FORMS
    try:
        size = parse_memory(value)
    except ConfigError:
        raise ConfigError(f"{flag} {value!r} is not a size: give {forms}") from None
    if size < 1:
        raise ConfigError(f"{flag} {value!r} is no memory at all: give {forms}")
    return size
