"""Teach the bundled nano GLM-V a new answer wording with a LoRA fine-tune, and measure it.

The nano model names colours in English (1.00 on the world's colour test split). This script writes world colour
questions that ask for the colour in Spanish ("... Answer in Spanish.", target `<|begin_of_box|>rojo<|end_of_box|>`)
as OpenAI-format JSONL with the images beside it, and scores a model (with or without an adapter) on such a file:

    python examples/finetune_colours.py data data/colours_es                 # train.jsonl, test.jsonl, images/
    python examples/finetune_colours.py eval data/colours_es/test.jsonl      # before: the bundled model
    glmv train examples/finetune_colours.yaml                                 # LoRA, a few minutes on a CPU
    python examples/finetune_colours.py eval data/colours_es/test.jsonl --adapter runs/colours_es/final

`eval` prints the accuracy on the JSONL's questions and, to see what the fine-tune cost, on the world's own colour
test split (English answers), both greedy with thinking off.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

SPANISH = {"red": "rojo", "green": "verde", "blue": "azul", "yellow": "amarillo", "purple": "morado",
           "orange": "naranja"}
INSTRUCTION = " Answer in Spanish."


def write_split(out: Path, name: str, split: str, n: int, variety: float) -> Path:
    from glmv.world import sample
    from glmv.world.draw import boxed

    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n):
        s = sample("color", split, i, variety)
        file = images / f"{split}-{i:05d}.png"
        s.image.save(file)
        lines.append({"messages": [
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": f"images/{file.name}"}},
                                         {"type": "text", "text": s.prompt + INSTRUCTION}]},
            {"role": "assistant", "content": boxed(SPANISH[s.truth["answer"]])}]})
    path = out / f"{name}.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def make_data(args) -> None:
    out = Path(args.out)
    train = write_split(out, "train", "train", args.n, args.variety)
    test = write_split(out, "test", "test", args.test_n, 0.0)
    print(f"wrote {train} ({args.n} lines) and {test} ({args.test_n} lines)")


def score_jsonl(llm, path: Path, limit: int, batch: int = 16) -> float:
    """Greedy answers (thinking off) to each line's conversation, scored against its final answer like the world's
    text answers (the boxed answer if there is one; case, spacing and punctuation ignored)."""
    from glmv import SamplingParams
    from glmv.engine.outputs import extract_answer
    from glmv.train.user_data import read_jsonl
    from glmv.world.scoring import text_match

    convs = read_jsonl(path)[:limit]
    params = SamplingParams(temperature=0, max_tokens=32, skip_special_tokens=False)
    right = 0.0
    for start in range(0, len(convs), batch):
        chunk = convs[start:start + batch]
        outs = llm.chat([c.messages[:-1] for c in chunk], params, enable_thinking=False)
        for c, o in zip(chunk, outs):
            reference = c.messages[-1]["content"]
            right += text_match(o.outputs[0].text, extract_answer(reference) or reference)
    return right / len(convs)


def evaluate(args) -> None:
    import torch

    from glmv import LLM
    from glmv.world.evaluate import evaluate as world_eval
    from glmv.world.evaluate import llm_backend

    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    llm = LLM(args.model, lora=args.adapter)
    ours = score_jsonl(llm, Path(args.jsonl), args.limit)
    english = world_eval(llm_backend(llm, max_tokens=32, enable_thinking=False, batch_size=16), ["color"], "test",
                         args.limit, progress=False)["tasks"]["color"]["score"]
    name = f"{args.model or 'nano'}" + (f" + {args.adapter}" if args.adapter else "")
    print(f"{name}: {Path(args.jsonl).name} {ours:.2f}, world colour test split (English) {english:.2f} "
          f"({args.limit} each, {time.perf_counter() - t0:.0f} s)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("data", help="write train.jsonl / test.jsonl and their images")
    d.add_argument("out")
    d.add_argument("--n", type=int, default=600, help="training lines")
    d.add_argument("--test-n", type=int, default=100, help="test lines (the world's test split)")
    d.add_argument("--variety", type=float, default=0.5, help="share of training images in a varied look/wording")
    d.set_defaults(func=make_data)
    e = sub.add_parser("eval", help="score a model (+ adapter) on a JSONL file and on the world's colour test split")
    e.add_argument("jsonl")
    e.add_argument("--model", default=None, help="base checkpoint (default: the bundled nano GLM-V)")
    e.add_argument("--adapter", default=None, help="a LoRA / DoRA adapter directory (peft layout)")
    e.add_argument("--limit", type=int, default=100)
    e.add_argument("--threads", type=int, default=0)
    e.set_defaults(func=evaluate)
    args = p.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
