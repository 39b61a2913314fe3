"""Arguments and helpers shared by the commands that load a model (heavy imports stay inside functions
so `glmv --help` is instant)."""

from __future__ import annotations

import argparse

DEVICE_HELP = "auto (the default: CUDA if available, else MPS, else CPU), cpu, cuda, cuda:1 or mps"


def add_model_args(p: argparse.ArgumentParser, compile_default: bool = False) -> None:
    """compile_default: whether decode steps are compiled unless --compile / --no-compile says (on for a server,
    which pays the warm-up once; off for one-off answers, where the warm-up costs more than it saves)."""
    p.add_argument("--model", "-m", default=None,
                   help="checkpoint directory (Hugging Face layout); default: the bundled nano GLM-V")
    p.add_argument("--dtype", default=None, help="float32, bfloat16 or float16 (default: the checkpoint's)")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--kv-cache-memory", default=None, metavar="SIZE",
                   help="paged KV cache size, allocated once, e.g. 2GiB or 512MB (default: on CPU room for 16 "
                        "full-context sequences, at most 1 GiB; on GPU half the free memory)")
    p.add_argument("--memory", default=None, metavar="SIZE|auto",
                   help="fit the model into this much device memory (e.g. 80GiB; auto: what is free) by the plan "
                        "`glmv plan` prints: quantised as it loads, routed experts offloaded to CPU RAM, or "
                        "memory-mapped (default: load the checkpoint as it is)")
    p.add_argument("--cpu-memory", default=None, metavar="SIZE",
                   help="host RAM the plan may use for offloaded experts (default: this machine's)")
    p.add_argument("--block-size", type=int, default=16, help="tokens per KV cache block (default 16)")
    p.add_argument("--max-num-batched-tokens", type=int, default=2048,
                   help="tokens one engine step computes at most; longer prompts are prefilled in chunks between "
                        "decode steps (default 2048)")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="CPU threads for torch's operators (default: the cores this process may use minus the "
                        "1-minute load average, at least 1: OpenMP threads sharing a core with another busy process "
                        "wait on each other, up to 5x slower)")
    p.add_argument("--attention-backend", choices=("sdpa", "flex"), default="sdpa",
                   help="attention over the paged KV cache: sdpa (gather + scaled_dot_product_attention, the "
                        "default) or flex (FlexAttention reading the pool in place; compiled on CUDA)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="decode steps through torch.compile, compiled at start-up (seconds with a warm cache, about "
                        f"half a minute for a new model shape on CPU; default: {'on' if compile_default else 'off'})")
    p.add_argument("--compile-mode", choices=("default", "max-autotune"), default=None,
                   help="max-autotune (implies --compile): weights frozen into the compiled step and Inductor's C++ "
                        "GEMM templates on CPU, the fastest decode (1.3-1.9x the default mode per step on the nano "
                        "model), for a second packed copy of the decoder's weights and minutes of compiling for a "
                        "new checkpoint (default: default)")
    p.set_defaults(compile_default=compile_default)
    p.add_argument("--tensor-parallel-size", type=int, default=1, metavar="N",
                   help="shard the model over N processes started here (one GPU each on CUDA: cuda:0..N-1; gloo "
                        "on CPU): tensor-parallel attention, MLPs and vocabulary (default 1)")
    p.add_argument("--expert-parallel", action="store_true",
                   help="with --tensor-parallel-size: split the routed experts by expert (E/N whole experts per "
                        "process) instead of splitting every expert's intermediate dimension")


def engine_kwargs(args: argparse.Namespace) -> dict:
    """LLM(...) keyword arguments from the engine flags of add_model_args (and --threads, applied here: it is
    process-wide)."""
    import torch

    from glmv.device import default_threads
    from glmv.errors import InputError

    if args.threads is not None and args.threads < 1:
        raise InputError(f"--threads must be at least 1, got {args.threads}")
    torch.set_num_threads(args.threads or default_threads())
    if args.compile is False and args.compile_mode is not None:
        raise InputError("--compile-mode compiles the decode step: drop --no-compile or --compile-mode")
    compile = args.compile if args.compile is not None else (args.compile_default or args.compile_mode is not None)
    return {"kv_cache_memory": args.kv_cache_memory, "block_size": args.block_size,
            "max_num_batched_tokens": args.max_num_batched_tokens, "attention_backend": args.attention_backend,
            "memory": args.memory, "cpu_memory": args.cpu_memory, "compile": compile,
            "compile_mode": args.compile_mode or "default",
            "tensor_parallel_size": getattr(args, "tensor_parallel_size", 1),
            "expert_parallel": getattr(args, "expert_parallel", False)}


def add_lora_args(p: argparse.ArgumentParser, several: bool) -> None:
    """--lora: one adapter for `glmv run` / `chat`; several, each a model id clients pick, for `glmv serve`
    (also spelled as vLLM spells it: --enable-lora --lora-modules NAME=PATH ...)."""
    if not several:
        p.add_argument("--lora", default=None, metavar="PATH",
                       help="answer with this peft-layout LoRA / DoRA adapter, applied unmerged")
        return
    p.add_argument("--lora", "--lora-modules", dest="lora", action="extend", nargs="+", default=[],
                   metavar="NAME=PATH", help="serve this peft-layout LoRA / DoRA adapter beside the base model, "
                   "unmerged, as model id NAME (default: the directory's name); repeatable; a request's `model` "
                   "picks it, one batch mixes adapters")
    p.add_argument("--enable-lora", action="store_true", help="accepted for vLLM compatibility (--lora is enough)")


def lora_kwargs(args: argparse.Namespace) -> dict:
    """LLM(lora=...) from --lora: one directory (its adapter answers every request), or {name: directory}."""
    value = getattr(args, "lora", None)
    if not value:
        return {}
    if isinstance(value, str):
        return {"lora": value}
    from pathlib import Path

    from glmv.errors import ConfigError

    adapters: dict[str, str] = {}
    for item in value:
        name, _, path = item.partition("=") if "=" in item else (Path(item).resolve().name, "", item)
        if not name or not path:
            raise ConfigError(f"--lora {item!r}: give NAME=PATH (or PATH, named after its directory)")
        if name in adapters:
            raise ConfigError(f"--lora: two adapters are named {name!r}; give each its own NAME=PATH")
        adapters[name] = path
    return {"lora": adapters}


def add_sampling_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-tokens", type=int, default=512, help="most tokens to generate (default 512)")
    p.add_argument("--temperature", type=float, default=None, help="0 = greedy (default: the checkpoint's)")
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--seed", type=int, default=None, help="makes sampling reproducible")
    think = p.add_mutually_exclusive_group()
    think.add_argument("--think", dest="think", action="store_true", default=None,
                       help="let the model reason step by step first (GLM-4.5V's default)")
    think.add_argument("--no-think", dest="think", action="store_false", help="answer directly (/nothink)")


def sampling_params(args: argparse.Namespace, llm):
    from glmv.engine.sampling import SamplingParams

    values = {k: v for k, v in vars(llm.default_sampling_params()).items()}
    for name in ("temperature", "top_p", "top_k", "seed"):
        if getattr(args, name) is not None:
            values[name] = getattr(args, name)
    values["max_tokens"] = args.max_tokens
    return SamplingParams(**values)


def load_llm(args: argparse.Namespace):
    from glmv.engine.llm import LLM

    return LLM(args.model, dtype=args.dtype, device=args.device, **engine_kwargs(args), **lora_kwargs(args))


def user_message(text: str, images: list[str], videos: list[str]) -> dict:
    content = [{"type": "image", "image": i} for i in images] + [{"type": "video", "video": v} for v in videos]
    return {"role": "user", "content": content + [{"type": "text", "text": text}]}
