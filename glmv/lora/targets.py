"""Which weights of a glmv model an adapter targets: presets, globs and regular expressions over module names.

Two kinds of weights take adapters: every plain nn.Linear (attention, dense and shared-expert MLPs, the ViT, the
projector, lm_head), named by its module name; and the stacked routed experts, named by parameter
(`language_model.layers.N.mlp.experts.gate_up_proj` / `.down_proj`), since one Experts module holds two weights
that peft adapts separately. Everything else (norms, convolutions, embeddings, the router) cannot be adapted.
"""

from __future__ import annotations

import fnmatch
import re

from torch import nn

from glmv.errors import ConfigError
from glmv.model.moe import Experts
from glmv.quant.modules import QuantLinear

EXPERT_PARAMS = ("gate_up_proj", "down_proj")  # registration order: peft nests its wrappers in this order

PRESETS = {
    "attention": r"language_model\.layers\.\d+\.self_attn\.[qkvo]_proj",
    # the dense MLPs (GLM-4.1V's fused gate_up_proj, GLM-4.5V's first dense layers) and the shared experts
    "mlp": r"language_model\.layers\.\d+\.mlp\.(shared_experts\.)?(gate_up|gate|up|down)_proj",
    "experts": r"language_model\.layers\.\d+\.mlp\.experts\.(gate_up|down)_proj",
    "projector": r"visual\.merger\.(proj|gate_proj|up_proj|down_proj)",
    "vit": r"visual\.blocks\.\d+\.(attn\.(qkv|proj)|mlp\.(gate|up|down)_proj)",
}


def _matcher(pattern: str):
    if not isinstance(pattern, str) or not pattern:
        raise ConfigError(f"LoRA target patterns are non-empty strings, got {pattern!r}")
    if pattern in PRESETS:
        regex = re.compile(PRESETS[pattern])
        return lambda name: regex.fullmatch(name) is not None
    if pattern.startswith("re:"):
        try:
            regex = re.compile(pattern[3:])
        except re.error as e:
            raise ConfigError(f"LoRA target {pattern!r} is not a valid regular expression ({e})") from None
        return lambda name: regex.fullmatch(name) is not None
    # a glob matches the whole name or a dotted suffix of it, as peft's target_modules entries do ("q_proj")
    return lambda name: fnmatch.fnmatchcase(name, pattern) or fnmatch.fnmatchcase(name, "*." + pattern)


def candidates(model: nn.Module) -> dict[str, nn.Module]:
    """Every name a target may select -> the module that holds that weight (an nn.Linear or an Experts). Quantised
    ones are listed too, so that selecting one is refused with a reason (glmv/lora/adapt.py) instead of skipped."""
    out: dict[str, nn.Module] = {}
    for name, module in model.named_modules():
        if isinstance(module, Experts):
            out.update({f"{name}.{p}": module for p in EXPERT_PARAMS})
        elif isinstance(module, (nn.Linear, QuantLinear)):
            out[name] = module
    return out


def resolve_targets(model: nn.Module, targets: tuple[str, ...], exclude: tuple[str, ...] = ()) -> list[str]:
    """The glmv names (modules, or `<experts>.gate_up_proj` / `.down_proj`) that `targets` select minus `exclude`,
    in model order. ConfigError for a pattern that selects nothing adaptable, naming what it did match."""
    names = candidates(model)
    includes = [(p, _matcher(p)) for p in targets]
    excludes = [_matcher(p) for p in exclude]
    chosen = []
    for pattern, match in includes:
        hits = [n for n in names if match(n) or (_is_experts(names, n) and match(n.rsplit(".", 1)[0]))]
        if not hits:
            others = [n for n, _ in model.named_modules() if n and match(n)]
            what = (f"it matches only {', '.join(others[:3])}, which are not linear layers or routed experts"
                    if others else "no module of this model has such a name")
            raise ConfigError(
                f"LoRA target {pattern!r} selects nothing to adapt: {what}. Use a preset ({', '.join(PRESETS)}), a "
                "glob over glmv module names such as 'language_model.layers.*.self_attn.q_proj', or 're:<regex>'"
            )
        chosen.extend(hits)
    selected = [n for n in names if n in set(chosen) and not any(m(n) for m in excludes)]
    if not selected:
        raise ConfigError(f"LoRA: exclude {list(exclude)} removes every target of {list(targets)}; nothing to adapt")
    return selected


def _is_experts(names: dict[str, nn.Module], name: str) -> bool:
    return isinstance(names[name], Experts)
