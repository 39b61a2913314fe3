"""The optimizer every stage uses: AdamW over the trainable parameters in groups (weight decay or not, a
learning-rate factor per name prefix), with linear warmup then cosine decay."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from glmv.errors import ConfigError
from glmv.train.recipe import Recipe


def lr_lambda(recipe: Recipe) -> Callable[[int], float]:
    def f(step: int) -> float:
        if step < recipe.warmup:
            return (step + 1) / recipe.warmup
        progress = min(1.0, (step - recipe.warmup) / max(1, recipe.steps - recipe.warmup))
        return recipe.min_lr_ratio + (1 - recipe.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return f


def _check_prefixes(key: str, prefixes, names: list[str], which: str) -> None:
    """A prefix that names no parameter is an error, so a typo cannot silently leave everything as it was."""
    unknown = [f for f in prefixes if not any(n.startswith(f) for n in names)]
    if unknown:
        raise ConfigError(f"recipe {key!r} prefixes {unknown} match no {which} of the model; parameter names "
                          f"look like {names[:3]}")


def trainable_parameters(model: torch.nn.Module, freeze: list[str]) -> list[tuple[str, torch.nn.Parameter]]:
    """Fix every parameter whose name starts with one of the `freeze` prefixes; return the others by name."""
    names = [n for n, _ in model.named_parameters()]
    _check_prefixes("freeze", freeze, names, "parameter")
    for n, p in model.named_parameters():
        p.requires_grad_(not n.startswith(tuple(freeze)))
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def lr_factor(name: str, scale: dict[str, float]) -> float:
    """The recipe's factor on the learning rate for one parameter: the longest matching prefix's, else 1."""
    matches = [prefix for prefix in scale if name.startswith(prefix)]
    return float(scale[max(matches, key=len)]) if matches else 1.0


def param_groups(named: list[tuple[str, torch.nn.Parameter]], recipe: Recipe,
                 weight_decay: float) -> list[dict]:
    """AdamW groups: one per (learning-rate factor, decayed or not). Norms, biases and embeddings are not
    decayed. Empty groups are left out."""
    _check_prefixes("lr_scale", recipe.lr_scale, [n for n, _ in named], "trainable parameter")
    groups: dict[tuple[float, bool], list[torch.nn.Parameter]] = {}
    for n, p in named:
        decay = weight_decay > 0 and p.ndim >= 2 and "embed" not in n
        groups.setdefault((lr_factor(n, recipe.lr_scale), decay), []).append(p)
    return [{"params": ps, "lr": recipe.lr * factor, "weight_decay": weight_decay if decay else 0.0}
            for (factor, decay), ps in sorted(groups.items(), key=lambda kv: (-kv[0][0], not kv[0][1]))]


def build_optimizer(named: list[tuple[str, torch.nn.Parameter]], recipe: Recipe, weight_decay: float
                    ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW (betas 0.9 / 0.95) and its warmup + cosine schedule; each group's peak is `lr` x its factor."""
    opt = torch.optim.AdamW(param_groups(named, recipe, weight_decay), lr=recipe.lr, betas=(0.9, 0.95))
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(recipe))
