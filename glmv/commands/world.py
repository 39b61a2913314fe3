"""`glmv world`: list the procedural world's tasks, or render a gallery of one task's samples."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser("world", help="list the world's tasks or show their samples",
                              description="The procedural world: seeded tasks with exact ground truth.\n\n"
                                          "examples:\n  glmv world list\n"
                                          "  glmv world show --task gui_action --n 16 --out grid.png",
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="world_command", metavar="ACTION", required=True)
    ls = sub.add_parser("list", help="the registered tasks, their families and an example prompt")
    ls.set_defaults(func=list_tasks)
    show = sub.add_parser("show", help="a PNG contact sheet of samples with prompts and targets")
    show.add_argument("--task", "-t", required=True)
    show.add_argument("--n", type=int, default=16, help="how many samples (default 16)")
    show.add_argument("--split", default="train", help="train (default), validation or test")
    show.add_argument("--start", type=int, default=0, help="index of the first sample (default 0)")
    show.add_argument("--columns", type=int, default=4)
    show.add_argument("--out", "-o", default="grid.png", help="PNG path (default grid.png)")
    show.set_defaults(func=show_task)


def list_tasks(args: argparse.Namespace) -> int:
    from glmv.world import TASKS, sample

    width = max(len(n) for n in TASKS)
    print(f"{'task'.ljust(width)}  {'family':<10} {'media':<5} think  example prompt")
    for name, t in sorted(TASKS.items(), key=lambda kv: (kv[1].family, kv[0])):
        s = sample(name, "train", 0)
        media = "video" if s.frames else "image" if s.image is not None else "text"
        prompt = s.prompt.splitlines()[0]
        print(f"{name.ljust(width)}  {t.family:<10} {media:<5} {'yes' if t.thinking else 'no ':<5}  {prompt[:60]}")
    return 0


def show_task(args: argparse.Namespace) -> int:
    from glmv.errors import InputError
    from glmv.world import sample
    from glmv.world.gallery import gallery

    if args.n < 1:
        raise InputError("--n must be at least 1")
    samples = [sample(args.task, args.split, i) for i in range(args.start, args.start + args.n)]
    gallery(samples, args.columns).save(args.out)
    print(f"wrote {args.out} ({args.n} samples of {args.task}, {args.split} split)")
    return 0
