"""`glmv run`: one prompt (with optional images/videos), answer streamed to the terminal."""

from __future__ import annotations

import argparse
import json
import sys

from glmv.commands._common import (
    add_lora_args,
    add_model_args,
    add_sampling_args,
    load_llm,
    sampling_params,
    user_message,
)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "run", help="answer one prompt, streaming the answer",
        description="Answer one prompt about zero or more images/videos and stream the answer.\n\n"
                    "example: glmv run --image photo.png \"What is in this image?\"",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("prompt", help="the question or instruction")
    p.add_argument("--image", "-i", action="append", default=[], help="image path or URL (repeatable)")
    p.add_argument("--video", "-v", action="append", default=[], help="video path or URL (repeatable)")
    p.add_argument("--json", action="store_true", help="print one JSON object (text, reasoning, answer, boxes, usage)")
    add_model_args(p)
    add_lora_args(p, several=False)
    add_sampling_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    llm = load_llm(args)
    params = sampling_params(args, llm)
    messages = [user_message(args.prompt, args.image, args.video)]
    if args.json:
        out = llm.chat(messages, params, enable_thinking=args.think)[0]
        c = out.outputs[0]
        print(json.dumps({
            "text": c.text, "reasoning": c.reasoning, "answer": c.answer, "boxes": c.boxes,
            "finish_reason": c.finish_reason,
            "usage": {"prompt_tokens": out.prompt_tokens, "completion_tokens": out.completion_tokens},
        }, ensure_ascii=False))
        return 0
    for delta in llm.chat_stream(messages, params, enable_thinking=args.think):
        sys.stdout.write(delta)
        sys.stdout.flush()
    sys.stdout.write("\n")
    return 0
