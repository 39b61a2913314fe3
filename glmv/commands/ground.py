"""`glmv ground`: where a phrase is in an image (or how many there are), as pixel boxes and an overlay PNG."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

from glmv.commands._common import add_model_args, add_sampling_args, load_llm, sampling_params


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "ground", help="locate (or count) a phrase in an image: pixel boxes and an overlay",
        description="Ask the model where a phrase is in an image, with GLM-V's grounding prompt, and print the\n"
                    "boxes in pixels (left, top, right, bottom); --out draws them, labelled, over the image.\n\n"
                    "examples:\n  glmv ground photo.png \"the red circle\" --out overlay.png\n"
                    "  glmv ground photo.png \"red circles\" --count --json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("image", help="image path or URL")
    p.add_argument("phrase", help="what to look for, e.g. \"the red circle\" (with --count: \"red circles\")")
    p.add_argument("--out", "-o", default=None, help="write the image with the boxes drawn on it to this PNG")
    p.add_argument("--count", action="store_true", help="ask how many there are (and where) instead")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    add_model_args(p)
    add_sampling_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from glmv.engine.grounding import draw_boxes
    from glmv.inputs.media import load_image

    image = load_image(args.image)  # once: the model, the boxes and the overlay all see this image
    llm = load_llm(args)
    ask = llm.count if args.count else llm.ground
    result = ask(image, args.phrase, sampling_params=sampling_params(args, llm), enable_thinking=args.think)
    if args.json:
        print(json.dumps(asdict(result), ensure_ascii=False))
    else:
        print(_summary(result, args.count))
    if args.out:
        numbered = len(result.boxes) > 1  # numbers match the printed list when there are several
        labels = [f"{b.label} {k}" if numbered else b.label for k, b in enumerate(result.boxes, 1)]
        draw_boxes(image, [b.pixels for b in result.boxes], labels).save(args.out)
        if not args.json:  # keep --json output one parseable object
            print(f"wrote {args.out}")
    return 0


def _summary(result, counting: bool) -> str:
    lines = [f"count: {result.count if result.count is not None else 'no number in the answer'}"] if counting else []
    lines.append(f"{result.phrase}: {len(result.boxes)} box{'' if len(result.boxes) == 1 else 'es'} "
                 "(left, top, right, bottom in pixels, then in thousandths of the image)")
    for k, b in enumerate(result.boxes, 1):
        lines.append(f"  {k}. {list(b.pixels)}  ({', '.join(f'{v:g}' for v in b.box_1000)})")
    if not result.boxes:
        lines.append(f"  the model's answer: {result.text.strip()!r}")
    return "\n".join(lines)
