"""`glmv train RECIPE.yaml`: run one stage of the training pipeline (vision, pretrain, sft or rl) or a fine-tune
(finetune: LoRA / DoRA / full on JSONL and world data); `glmv train --probe MODEL...`: linear probes of vision
towers (glmv.train.probe)."""

from __future__ import annotations

import argparse
from pathlib import Path

from glmv.commands._common import DEVICE_HELP
from glmv.errors import ConfigError


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train", help="run one training stage from a YAML recipe",
        description="Run one stage of glmv's pipeline (vision -> warmup -> pretrain -> video -> sft -> rl) from a "
                    "YAML recipe; recipes for the nano GLM-V are in glmv/train/recipes/. A 'stage: finetune' recipe "
                    "fine-tunes any checkpoint (LoRA, DoRA or full) on JSONL conversations and world tasks "
                    "(docs/finetune.md). Checkpoints go to the recipe's 'out' directory; --resume continues from "
                    "the latest one exactly. Launched by torchrun (torchrun --nproc-per-node N -m glmv train ...), "
                    "pretrain and sft stages train data-parallel with FSDP2 (glmv/distributed/trainer.py). With "
                    "--probe, print linear-probe accuracies of the given checkpoints' vision towers instead.",
    )
    p.add_argument("recipe", nargs="?", help="recipe YAML file (or the name of a bundled recipe, e.g. nano_pretrain)")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in 'out'")
    p.add_argument("--stop-after", type=int, default=None, help="stop (after checkpointing) at this step")
    p.add_argument("--out", default=None, help="override the recipe's output directory")
    p.add_argument("--init", default=None, help="override the recipe's starting checkpoint")
    p.add_argument("--steps", type=int, default=None, help="override the number of steps")
    p.add_argument("--device", default="auto", help=DEVICE_HELP + "; bf16 autocast on cuda")
    p.add_argument("--probe", nargs="+", metavar="MODEL", default=None,
                   help="checkpoint directories whose vision towers to probe (colour, shape, count, position, OCR "
                        "letters) instead of training")
    p.add_argument("--probe-n", type=int, default=500, help="images per probe label")
    p.set_defaults(func=run)


def recipe_path(name: str) -> Path:
    path = Path(name)
    if path.is_file():
        return path
    bundled = Path(__file__).parents[1] / "train" / "recipes" / f"{name}.yaml"
    return bundled if bundled.is_file() else path


def run(args: argparse.Namespace) -> int:
    import os

    from glmv.device import resolve_device
    from glmv.train.pipeline import run_stage
    from glmv.train.recipe import Recipe

    device = resolve_device(args.device)  # before a stage may spend minutes building its starting checkpoint
    if args.probe:
        from glmv.train.probe import probe_models, probe_table

        print(probe_table(probe_models(args.probe, args.probe_n, device=device)))
        return 0
    if args.recipe is None:
        raise ConfigError("glmv train needs a recipe (or --probe MODEL...)")
    recipe = Recipe.load(recipe_path(args.recipe), out=args.out, init=args.init, steps=args.steps)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # launched by torchrun
        from glmv.distributed.trainer import run_stage_distributed

        run_stage_distributed(recipe, resume=args.resume, stop_after=args.stop_after, device=device)
        return 0
    run_stage(recipe, resume=args.resume, stop_after=args.stop_after, device=device)
    return 0
