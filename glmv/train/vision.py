"""The vision stage: pretrain the nano ViT, its 2x2 merge and the projector on world images before any LM stage,
as GLM-4.5V starts from a pretrained AIMv2 encoder.

Objective: dense supervision from the world's exact ground truth (glmv.train.vision_targets), read by linear
heads from the projector's output tokens (glmv.train.vision_heads). Trained under the LM loss alone the nano
ViT collapsed (docs/training.md); here every token has its own target, which keeps tokens apart by
construction. Measured against a random ViT with linear probes: docs/training.md.

Only `visual.*` trains; the decoder's weights are saved back bit-identical. The heads travel in the trainer
state of every checkpoint (so `resume` is exact) and are dropped from the final model.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from glmv.errors import ConfigError
from glmv.inputs.image import ImageFeatures
from glmv.train.data import world_sample
from glmv.train.optim import trainable_parameters
from glmv.train.recipe import Recipe
from glmv.train.trainer import Trainer
from glmv.train.vision_heads import VisionHeads
from glmv.train.vision_targets import VISION_TASKS, ImageTargets, collate_targets, image_targets

VISUAL = "visual."

ImageItem = tuple[ImageFeatures, ImageTargets]


class VisionTrainer(Trainer):
    def __init__(self, recipe: Recipe, model_dir: Path, make_item: Callable[[str, int], ImageItem] | None = None,
                 device: str | torch.device = "cpu", progress: bool = True):
        """make_item(task, index) builds one (processed image, targets) pair; the default draws from the world."""
        unknown = sorted(set(recipe.tasks) - set(VISION_TASKS)) if make_item is None else []
        if unknown:
            raise ConfigError(f"the vision stage trains on tasks whose truth lists everything drawn: "
                              f"{', '.join(VISION_TASKS)}; not {unknown}")
        super().__init__(recipe, model_dir, device=device, progress=progress)
        self.make_item = make_item or self._world_item
        self.heads: VisionHeads | None = None

    def _world_item(self, task: str, index: int) -> ImageItem:
        s = world_sample(self.recipe, task, index)
        features = self.processor.process_image(s.image)
        return features, image_targets(s.truth, features.grid_thw)

    def batch(self, step: int, micro: int) -> dict:
        r = self.recipe
        items = [self.make_item(task, index) for task, index in self.mixture.draw(step * r.grad_accum + micro,
                                                                                 r.batch_size)]
        # Images of one size next to each other: the ViT runs attention once per run of equal sizes.
        items.sort(key=lambda item: item[0].grid_thw)
        return {"pixel_values": torch.cat([f.pixel_values for f, _ in items]),
                "grid_thw": torch.tensor([f.grid_thw for f, _ in items]),
                **collate_targets([t for _, t in items])}

    def trainable(self, model: torch.nn.Module) -> list[tuple[str, torch.nn.Parameter]]:
        """The vision tower's parameters (less any the recipe freezes) and the heads'; the decoder stays fixed."""
        named = [(n, p) for n, p in trainable_parameters(model, self.recipe.freeze) if n.startswith(VISUAL)]
        for n, p in model.named_parameters():
            if not n.startswith(VISUAL):
                p.requires_grad_(False)
        with torch.random.fork_rng(devices=[]):  # the heads' init is a function of the seed alone
            torch.manual_seed(self.recipe.seed)
            self.heads = VisionHeads(model.config.vision.out_hidden_size).to(self.device)
        return named + [(f"heads.{n}", p) for n, p in self.heads.named_parameters()]

    def loss(self, model: torch.nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        tokens = model.visual(batch["pixel_values"].to(model.visual.dtype), batch["grid_thw"])
        return self.heads(tokens, batch)

    @staticmethod
    def tokens(batch: dict) -> int:
        return len(batch["pixel_values"])  # patches through the ViT

    def state(self) -> dict:
        return {"heads": self.heads.state_dict()}

    def restore(self, state: dict) -> None:
        if "heads" in state:
            self.heads.load_state_dict(state["heads"])
