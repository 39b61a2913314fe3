"""`glmv chat`: an interactive conversation that keeps its cache between turns."""

from __future__ import annotations

import argparse
import sys

from glmv.commands._common import (
    add_lora_args,
    add_model_args,
    add_sampling_args,
    load_llm,
    sampling_params,
    user_message,
)
from glmv.errors import GlmvError

HELP = """commands:
  /image PATH   attach an image to your next message     /video PATH   attach a video
  /think        toggle thinking on/off                    /reset        start a new conversation
  /help         this text                                 /exit         quit (or Ctrl-D)"""


def register(subparsers) -> None:
    p = subparsers.add_parser("chat", help="interactive chat with images and videos",
                              description="Chat with a GLM-V model in the terminal.\n\n" + HELP,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(p)
    add_lora_args(p, several=False)
    add_sampling_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace, stdin=sys.stdin, stdout=sys.stdout) -> int:
    llm = load_llm(args)
    params = sampling_params(args, llm)
    session = llm.start_chat()
    messages: list[dict] = []
    images: list[str] = []
    videos: list[str] = []
    think = args.think if args.think is not None else True
    stdout.write(f"glmv chat ({llm.path.name}); thinking {'on' if think else 'off'}. /help for commands.\n")
    while True:
        stdout.write("> ")
        stdout.flush()
        line = stdin.readline()
        if not line:
            break
        line = line.strip()
        if not line:
            continue
        cmd, _, rest = line.partition(" ")
        if cmd in ("/exit", "/quit"):
            break
        if cmd == "/help":
            stdout.write(HELP + "\n")
        elif cmd in ("/image", "/video"):
            (images if cmd == "/image" else videos).append(rest.strip())
            stdout.write(f"attached {rest.strip()}\n")
        elif cmd == "/think":
            think = not think
            stdout.write(f"thinking {'on' if think else 'off'}\n")
        elif cmd == "/reset":
            messages, images, videos = [], [], []
            session.reset()
            stdout.write("new conversation\n")
        else:
            messages.append(user_message(line, images, videos))
            images, videos = [], []
            try:
                answer = "".join(_echo(session.stream(messages, params, enable_thinking=think), stdout))
            except GlmvError as e:
                messages.pop()
                stdout.write(f"error: {e}\n")
                continue
            stdout.write("\n")
            messages.append({"role": "assistant", "content": answer})
    return 0


def _echo(deltas, stdout):
    for d in deltas:
        stdout.write(d)
        stdout.flush()
        yield d
