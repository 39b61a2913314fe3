"""Run one recipe stage: resolve where it starts (a fresh nano model, the previous stage's checkpoint, or for a
fine-tune the bundled model or any checkpoint) and hand it to the vision trainer, the supervised trainer, GRPO or
the fine-tuning trainer (LoRA / DoRA / full on JSONL and world data)."""

from __future__ import annotations

from pathlib import Path

from glmv.errors import ConfigError
from glmv.train.recipe import Recipe


def world_corpus(tasks: list[str], per_task: int, variety: float = 0.0) -> list[str]:
    """Prompts and targets of the world's training samples: the text the nano tokenizer is trained on. With
    `variety` the training wordings join (never the held-out one: the train split does not use it)."""
    from glmv.world import TASKS, sample

    texts = []
    for task in sorted(set(tasks) | set(TASKS)):
        for i in range(per_task):
            s = sample(task, "train", i, variety)
            texts += [s.prompt, s.target]
    return texts


def start_checkpoint(recipe: Recipe) -> Path:
    if recipe.stage == "finetune":
        from glmv.train.finetune_recipe import start_checkpoint as finetune_start

        return finetune_start(recipe)
    if recipe.init != "scratch":
        path = Path(recipe.init)
        if not (path / "config.json").is_file():
            raise ConfigError(f"recipe init {recipe.init!r} is not a checkpoint directory; run the previous stage first")
        return path
    from glmv.train.nano import create_nano_checkpoint

    path = Path(recipe.out) / "init"
    if not (path / "config.json").is_file():
        corpus = world_corpus(list(recipe.tasks), recipe.tokenizer_samples, recipe.variety)
        create_nano_checkpoint(path, corpus, recipe.vocab_size, recipe.max_pixels, recipe.seed, **recipe.model)
    return path


def run_stage(recipe: Recipe, resume: bool = False, stop_after: int | None = None, device: str = "cpu"):
    start = start_checkpoint(recipe)
    if recipe.stage == "rl":
        from glmv.train.rl import GRPOTrainer

        return GRPOTrainer(recipe, start, device=device).train(resume, stop_after)
    if recipe.stage == "vision":
        from glmv.train.vision import VisionTrainer

        return VisionTrainer(recipe, start, device=device).train(resume, stop_after)
    if recipe.stage == "finetune":
        from glmv.train.finetune import FinetuneTrainer

        return FinetuneTrainer(recipe, start, device=device).train(resume, stop_after)
    from glmv.train.trainer import Trainer

    return Trainer(recipe, start, device=device).train(resume, stop_after)
