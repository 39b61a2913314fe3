"""`glmv bench`: prefill and decode tokens/s and vision-encoder time of a model on this machine."""

from __future__ import annotations

import argparse
import json
import time
from typing import TYPE_CHECKING

from glmv.commands._common import add_model_args, load_llm
from glmv.errors import InputError
from glmv.timing import median_seconds, median_time

if TYPE_CHECKING:  # torch-heavy: imported only when the command runs, so `glmv --help` stays instant
    from glmv.engine.llm import LLM
    from glmv.engine.sampling import SamplingParams


def register(subparsers) -> None:
    p = subparsers.add_parser("bench", help="measure prefill/decode speed and vision time",
                              description="Measure prefill tokens/s, decode tokens/s (per batch size) and the "
                                          "vision encoder's time per image on this machine.")
    add_model_args(p)
    p.add_argument("--prompt-tokens", type=int, default=256, help="prompt length for prefill (default 256)")
    p.add_argument("--decode-tokens", type=int, default=32,
                   help="tokens generated per sequence (default 32; at least 2: the first comes from prefill)")
    p.add_argument("--batch", type=int, action="append", default=None, help="batch sizes (default 1 and 8)")
    p.add_argument("--image-size", type=int, default=448, help="side of the square test image (default 448)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per measurement, median reported (default 3)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.set_defaults(func=run)


def check_args(args: argparse.Namespace) -> None:
    """Settings that could only give meaningless numbers, refused before the model loads."""
    for name, least in (("repeats", 1), ("decode_tokens", 2), ("prompt_tokens", 1)):
        if getattr(args, name) < least:
            raise InputError(f"--{name.replace('_', '-')} must be at least {least}, got {getattr(args, name)}")
    if any(b < 1 for b in args.batch or []):
        raise InputError(f"--batch sizes must be at least 1, got {args.batch}")


def decode_seconds(llm: LLM, prompts: list[list[int]], params: SamplingParams) -> float:
    """Seconds from the first generated token to the last in one run: the decode steps alone, timed directly.
    (Subtracting a prefill-only run's time from a full run's leaves noise when decoding is fast; it can be zero or
    negative and gave absurd rates.)"""
    seqs = [seq for p in prompts for seq in llm.prepare_prompt(p, params).seqs]
    first_token_at = None
    for _ in llm.engine.run(seqs):
        if first_token_at is None:  # the first step's token comes from prefill: decoding starts here
            first_token_at = time.perf_counter()
    return time.perf_counter() - first_token_at


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch
    from PIL import Image

    from glmv.engine.sampling import SamplingParams

    check_args(args)
    llm = load_llm(args)
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (args.image_size, args.image_size, 3), dtype=np.uint8))
    feats = llm.processor.process_image(image)
    vocab = llm.model.config.text.vocab_size
    prompt = rng.integers(0, min(vocab, 1000), args.prompt_tokens).tolist()
    results = {"model": str(llm.path), "device": str(llm.model.device), "dtype": str(llm.model.dtype),
               "threads": torch.get_num_threads()}

    def vision():
        with torch.inference_mode():
            llm.model.encode_images(feats.pixel_values.to(llm.model.device), torch.tensor([feats.grid_thw]))
    results["vision_ms_per_image"] = 1000 * median_time(vision, args.repeats)
    results["image_tokens"] = feats.num_tokens

    caption = [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": "Describe the image."}]}]
    answer = SamplingParams(temperature=0, max_tokens=32)
    # end to end, as a user waits for it: preprocessing, vision, prefill and the whole (short) answer
    results["caption_latency_s"] = median_time(lambda: llm.chat(caption, answer, enable_thinking=False), args.repeats)

    one = SamplingParams(temperature=0, max_tokens=1)
    t = median_time(lambda: llm.generate([prompt], one), args.repeats)
    results["prefill_tokens_per_s"] = args.prompt_tokens / t
    params = SamplingParams(temperature=0, max_tokens=args.decode_tokens, ignore_eos=True)
    for b in args.batch or [1, 8]:
        t = median_seconds(lambda: decode_seconds(llm, [prompt] * b, params), args.repeats)
        results[f"decode_tokens_per_s_batch{b}"] = b * (args.decode_tokens - 1) / t
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for k, v in results.items():
            print(f"{k:32} {v:.3f}" if isinstance(v, float) and v < 10 else
                  f"{k:32} {v:.1f}" if isinstance(v, float) else f"{k:32} {v}")
    return 0
