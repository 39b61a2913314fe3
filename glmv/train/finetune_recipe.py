"""The fine-tuning part of a recipe (`stage: finetune`): method, adapter, what stays frozen, where the data comes
from. Read from the Recipe's fields and checked in one place, so that a mistake is a ConfigError naming the recipe
before any model loads.

    stage: finetune
    init: nano                      # the bundled nano GLM-V, or a checkpoint directory (Hugging Face layout)
    out: runs/my-finetune
    method: lora                    # lora | dora | full
    lora: {r: 8, alpha: 16, dropout: 0.0, targets: [attention, mlp]}   # lora / dora only
    freeze: [vit]                   # full only: vit, projector, llm, or parameter-name prefixes
    data:
      - jsonl: data/train.jsonl     # OpenAI chat or ShareGPT lines (glmv/train/user_data.py)
        repeat: 2                   # optional: every line twice per epoch
      - world: {tasks: [color, shape], n: 200}   # 200 training samples of each world task
    gradient_checkpointing: true    # recompute each decoder layer in the backward pass
    dtype: auto                     # auto | float32 | bfloat16 (base weights; adapters stay float32)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from glmv.errors import ConfigError

if TYPE_CHECKING:
    import torch

    from glmv.lora import LoraConfig
    from glmv.train.recipe import Recipe

METHODS = ("lora", "dora", "full")
DTYPES = ("auto", "float32", "bfloat16")
LORA_KEYS = {"r": "r", "alpha": "lora_alpha", "lora_alpha": "lora_alpha", "dropout": "lora_dropout",
             "lora_dropout": "lora_dropout", "targets": "targets", "exclude": "exclude", "rslora": "use_rslora",
             "use_rslora": "use_rslora"}
# freeze groups (method: full): the vision encoder, the projector (visual.merger, as the lora preset and the nano
# recipes' lr_scale name it), the language model with its head
PROJECTOR = "visual.merger"
FREEZE_GROUPS = ("vit", "projector", "llm")


@dataclass(frozen=True)
class JsonlSource:
    path: Path
    repeat: int = 1


@dataclass(frozen=True)
class WorldSource:
    tasks: tuple[str, ...]
    n: int  # training samples per task (indices 0..n-1 of the train split)
    variety: float = 0.0
    repeat: int = 1


@dataclass(frozen=True)
class FinetuneSpec:
    method: str
    lora: dict = field(default_factory=dict)  # LoraConfig keyword arguments
    freeze: tuple[str, ...] = ()
    data: tuple[JsonlSource | WorldSource, ...] = ()
    gradient_checkpointing: bool = False
    dtype: str = "auto"

    @property
    def adapter(self) -> bool:
        return self.method in ("lora", "dora")

    def lora_config(self) -> "LoraConfig":
        from glmv.lora import LoraConfig

        return LoraConfig(**self.lora, use_dora=self.method == "dora")

    @classmethod
    def from_recipe(cls, recipe: "Recipe", where: str = "recipe") -> "FinetuneSpec":
        """Check and read the fine-tuning fields of a `stage: finetune` recipe."""
        def fail(message: str) -> ConfigError:
            return ConfigError(f"{where}: {message}")

        if recipe.method not in METHODS:
            raise fail(f"set method to one of {METHODS} (lora / dora train adapters, full the weights), got "
                       f"{recipe.method!r}")
        if recipe.init in ("scratch", "", None):
            raise fail("a finetune recipe starts from a checkpoint: set init to a checkpoint directory, or 'nano' "
                       "for the bundled nano GLM-V")
        if recipe.tasks:
            raise fail("a finetune recipe takes its data from 'data' ([{jsonl: PATH}, {world: {tasks: [...], n: N}}]), "
                       "not 'tasks'")
        if recipe.dtype not in DTYPES:
            raise fail(f"dtype must be one of {DTYPES}, got {recipe.dtype!r}")
        if not isinstance(recipe.gradient_checkpointing, bool):
            raise fail(f"gradient_checkpointing is true or false, got {recipe.gradient_checkpointing!r}")
        adapter = recipe.method in ("lora", "dora")
        lora = _lora(recipe.lora, fail) if adapter else {}
        if not adapter and recipe.lora:
            raise fail("'lora' settings need method: lora or dora (method: full trains the weights themselves)")
        if adapter and recipe.freeze:
            raise fail("'freeze' is for method: full; LoRA / DoRA train only their adapters (choose what they adapt "
                       "with lora.targets)")
        spec = cls(recipe.method, lora, tuple(recipe.freeze), _sources(recipe, fail),
                   recipe.gradient_checkpointing, recipe.dtype)
        if adapter:
            spec.lora_config()  # LoraConfig's own checks (r, alpha, dropout, target list)
        return spec


def _lora(settings, fail) -> dict:
    if not isinstance(settings, dict):
        raise fail(f"'lora' is a mapping such as {{r: 8, alpha: 16, targets: [attention, mlp]}}, got {settings!r}")
    unknown = sorted(set(settings) - set(LORA_KEYS))
    if unknown:
        raise fail(f"lora: unknown keys {unknown}; known: r, alpha, dropout, targets, exclude, rslora")
    out = {LORA_KEYS[k]: v for k, v in settings.items()}
    for key in ("targets", "exclude"):
        if key in out:
            value = out[key]
            if isinstance(value, str) or not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise fail(f"lora.{key} is a list of presets (attention, mlp, experts, projector, vit), globs or "
                           f"'re:' patterns, got {value!r}")
            out[key] = tuple(value)
    return out


def _count(value, key: str, fail, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise fail(f"{key} must be an integer >= {minimum}, got {value!r}")
    return value


def _sources(recipe: "Recipe", fail) -> tuple[JsonlSource | WorldSource, ...]:
    from glmv.world import TASKS

    if not isinstance(recipe.data, list) or not recipe.data:
        raise fail("'data' lists the training data: [{jsonl: PATH}, {world: {tasks: [...], n: N}}]")
    out = []
    for i, entry in enumerate(recipe.data):
        key = f"data[{i}]"
        if not isinstance(entry, dict) or len({"jsonl", "world"} & set(entry)) != 1:
            raise fail(f"{key} must be {{jsonl: PATH}} or {{world: {{tasks: [...], n: N}}}}, got {entry!r}")
        unknown = sorted(set(entry) - {"jsonl", "world", "repeat"})
        if unknown:
            raise fail(f"{key}: unknown keys {unknown} (jsonl or world, and repeat)")
        repeat = _count(entry.get("repeat", 1), f"{key}.repeat", fail)
        if "jsonl" in entry:
            if not isinstance(entry["jsonl"], str) or not Path(entry["jsonl"]).is_file():
                raise fail(f"{key}: jsonl {entry['jsonl']!r} is not a file (paths are relative to the working "
                           "directory)")
            out.append(JsonlSource(Path(entry["jsonl"]), repeat))
            continue
        world = entry["world"]
        if not isinstance(world, dict) or set(world) - {"tasks", "n", "variety"}:
            raise fail(f"{key}.world takes tasks, n and variety, got {world!r}")
        tasks = world.get("tasks")
        if isinstance(tasks, str) or not isinstance(tasks, list) or not tasks:
            raise fail(f"{key}.world.tasks is a list of world tasks, e.g. [color, shape], got {tasks!r}")
        missing = [t for t in tasks if t not in TASKS]
        if missing:
            raise fail(f"{key}.world: unknown tasks {missing}; `glmv world list` shows them")
        n = _count(world.get("n"), f"{key}.world.n (training samples per task)", fail)
        variety = world.get("variety", recipe.variety)
        if isinstance(variety, bool) or not isinstance(variety, (int, float)) or not 0 <= variety <= 1:
            raise fail(f"{key}.world.variety is a probability in [0, 1], got {variety!r}")
        out.append(WorldSource(tuple(tasks), n, float(variety), repeat))
    return tuple(out)


def freeze_prefixes(model: "torch.nn.Module", freeze: tuple[str, ...]) -> list[str]:
    """Parameter-name prefixes for a full fine-tune's `freeze` list: the groups vit, projector and llm expanded,
    anything else kept as a prefix (trainable_parameters rejects one that names no parameter)."""
    names = [n for n, _ in model.named_parameters()]
    tops = list(dict.fromkeys(".".join(n.split(".")[:2]) for n in names))  # visual.blocks, language_model.layers, ...
    out: list[str] = []
    for entry in freeze:
        if entry == "vit":
            out += [t for t in tops if t.startswith("visual.") and t != PROJECTOR]
        elif entry == "projector":
            out.append(PROJECTOR)
        elif entry == "llm":
            out += [t for t in tops if t.startswith(("language_model.", "lm_head"))]
        else:
            out.append(entry)
    return list(dict.fromkeys(out))


def start_checkpoint(recipe: "Recipe") -> Path:
    """The checkpoint a finetune recipe starts from: `nano` (the bundled model) or a directory."""
    from glmv.model_path import resolve_model_path

    path = resolve_model_path(recipe.init)
    if not (path / "config.json").is_file():
        raise ConfigError(f"recipe init {recipe.init!r} is not a checkpoint directory (no config.json)")
    return path
