"""`glmv agent`: one GUI-agent step on a screenshot: the official prompt of the action space, the model's answer
parsed into a typed action, and a dry run that draws it on the screenshot."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from glmv.commands._common import add_model_args, add_sampling_args, load_llm, sampling_params

SPACES = ("mobile", "desktop", "web")  # glmv.agent.SPACES; listed here so `glmv --help` imports nothing heavy


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "agent", help="one GUI-agent step: the model's next action on a screenshot, drawn on it",
        description="Ask the model for the next GUI action towards a task, print it as a typed action and draw it "
                    "on the screenshot (a dry run: nothing is clicked).\n\n"
                    "examples:\n"
                    "  glmv agent --screenshot screen.png \"Click the Save button. Give the action as JSON.\"\n"
                    "  glmv agent -m GLM-4.5V --space desktop --screenshot desk.png \"Open the terminal\" --json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("task", help="what the agent should do")
    p.add_argument("--screenshot", "-s", required=True, help="the current screen (image path or URL)")
    p.add_argument("--space", choices=SPACES, default="mobile",
                   help="action space: mobile (JSON actions with box_2d, the default and the world's GUI task's), "
                        "desktop (left_click(start_box='[x,y]') calls) or web (set-of-marks: Click [N])")
    p.add_argument("--prompt", choices=("glm-4.5v", "bare"), default=None,
                   help="glm-4.5v: the official agent prompt of the space; bare: the task text alone, as the "
                        "world's GUI task asks (default: bare for the bundled nano model, whose 2048-token "
                        "context cannot hold the official prompts; glm-4.5v for a --model)")
    p.add_argument("--out", "-o", default=None,
                   help="where to write the screenshot with the action drawn (default: SCREENSHOT-action.png "
                        "in the current directory)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object: the action (thousandths and pixels), the answer, the overlay path")
    add_model_args(p)
    add_sampling_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from glmv.agent import DryRunExecutor, agent_messages, describe, parse_action, screen_point
    from glmv.inputs.media import load_image

    screenshot = load_image(args.screenshot)
    style = args.prompt or ("bare" if args.model is None else "glm-4.5v")
    llm = load_llm(args)
    answer = llm.chat(agent_messages(args.space, args.task, screenshot, style), sampling_params(args, llm),
                      enable_thinking=args.think)[0].outputs[0]
    action = parse_action(answer.text, args.space)  # InputError (exit 1, one line) when there is no action
    at = screen_point(action, *screenshot.size)
    dry_run = DryRunExecutor(screenshot)
    dry_run.execute(action)
    out = dry_run.save(args.out or f"{Path(args.screenshot).stem}-action.png")
    if args.json:
        print(json.dumps({"action": action.to_dict(), "pixels": action.to_pixels(*screenshot.size).to_dict(),
                          "point": [at.x, at.y] if at else None, "screen": list(screenshot.size),
                          "text": answer.text, "overlay": str(out)}, ensure_ascii=False))
        return 0
    print(describe(action) + (f" at ({at.x}, {at.y}) px" if at else ""))
    print(repr(action))
    print(f"overlay: {out}")
    return 0
