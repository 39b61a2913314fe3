"""Training recipes: one YAML file per stage, read into a dataclass (unknown keys are errors)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

import yaml

from glmv.errors import ConfigError

STAGES = ("vision", "pretrain", "sft", "rl", "finetune")
FINETUNE_FIELDS = ("method", "lora", "data", "gradient_checkpointing", "dtype")


@dataclass
class Recipe:
    stage: str  # vision | pretrain | sft | rl | finetune (pretrain also covers the long-context/video stage)
    out: str  # run directory: checkpoints, logs, final model
    init: str = "scratch"  # "scratch" (a new nano model + tokenizer) or the checkpoint of the previous stage
    tasks: dict[str, float] = field(default_factory=dict)  # task -> sampling weight
    steps: int = 1000
    batch_size: int = 16
    grad_accum: int = 1
    lr: float = 1e-3
    min_lr_ratio: float = 0.1
    warmup: int = 50
    weight_decay: float = 0.05
    max_grad_norm: float = 1.0
    seed: int = 0
    freeze: list[str] = field(default_factory=list)  # parameter-name prefixes kept fixed (e.g. "visual.blocks")
    # parameter-name prefix -> factor on `lr` (the longest matching prefix wins), e.g. {visual: 0.1,
    # visual.merger: 1.0}: a pretrained encoder keeps learning, slowly, instead of being frozen
    lr_scale: dict[str, float] = field(default_factory=dict)
    # probability that a training sample is drawn in a random look and wording (glmv.world.sample's variety);
    # 0 gives the plain samples
    variety: float = 0.0
    # fraction of SFT examples / RL prompts in the thinking format; unset: none for SFT, all for RL
    thinking: float | None = None
    save_every: int = 200
    log_every: int = 10
    keep_checkpoints: int = 2
    # scratch only: tokenizer and model size
    vocab_size: int = 4096
    tokenizer_samples: int = 200  # per task, texts the tokenizer is trained on
    model: dict = field(default_factory=dict)  # overrides of glmv.train.nano.NANO_TEXT
    max_pixels: int = 224 * 224
    # rl only
    group_size: int = 8
    kl_coef: float = 0.02
    temperature: float = 1.0
    max_new_tokens: int = 48
    curriculum: bool = True
    # finetune only (checked by glmv.train.finetune_recipe): lora | dora | full, the adapter, the data sources
    method: str | None = None
    lora: dict = field(default_factory=dict)  # r, alpha, dropout, targets, exclude, rslora
    data: list = field(default_factory=list)  # [{jsonl: PATH}, {world: {tasks: [...], n: N}}]
    gradient_checkpointing: bool = False
    dtype: str = "auto"  # base weights: auto (bf16 for adapters on a bf16 GPU, else fp32) | float32 | bfloat16

    @classmethod
    def load(cls, path: str | Path, **overrides) -> "Recipe":
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as e:
            raise ConfigError(f"cannot read recipe {path}: {e}") from None
        data.update({k: v for k, v in overrides.items() if v is not None})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"recipe {path}: unknown keys {unknown}; known keys: {sorted(known)}")
        for required in ("stage", "out"):
            if required not in data:
                raise ConfigError(f"recipe {path}: missing the required key {required!r}")
        if not isinstance(data.get("freeze", []), list) or not all(isinstance(f, str) for f in data.get("freeze", [])):
            raise ConfigError(f"recipe {path}: 'freeze' must be a list of parameter-name prefixes, "
                              f"e.g. [visual.blocks], got {data['freeze']!r}")
        scale = data.get("lr_scale", {})
        if not isinstance(scale, dict) or not all(isinstance(k, str) and isinstance(v, (int, float)) and v > 0
                                                  for k, v in scale.items()):
            raise ConfigError(f"recipe {path}: 'lr_scale' must map parameter-name prefixes to positive factors, "
                              f"e.g. {{visual: 0.1}}, got {scale!r}")
        recipe = cls(**data)
        if not isinstance(recipe.variety, (int, float)) or not 0 <= recipe.variety <= 1:
            raise ConfigError(f"recipe {path}: 'variety' is a probability in [0, 1], got {recipe.variety!r}")
        if recipe.thinking is not None and (not isinstance(recipe.thinking, (int, float)) or not 0 <= recipe.thinking <= 1):
            raise ConfigError(f"recipe {path}: 'thinking' is a fraction in [0, 1], got {recipe.thinking!r}")
        if recipe.stage not in STAGES:
            raise ConfigError(f"recipe {path}: stage must be one of {STAGES}, got {recipe.stage!r}")
        if recipe.stage == "finetune":
            from glmv.train.finetune_recipe import FinetuneSpec

            FinetuneSpec.from_recipe(recipe, f"recipe {path}")
            return recipe
        misplaced = [k for k in FINETUNE_FIELDS if k in data]
        if misplaced:
            raise ConfigError(f"recipe {path}: {misplaced} are fields of stage: finetune")
        if not recipe.tasks:
            raise ConfigError(f"recipe {path}: give at least one task under 'tasks'")
        return recipe
