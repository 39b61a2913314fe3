"""Put adapters on a loaded glmv model, list them, take them off: the model's code never changes.

Each targeted nn.Linear becomes a LoraLinear and each targeted Experts a LoraExperts in place (the same objects,
their class swapped for an adapter-carrying subclass), so every module and base parameter keeps its name and
identity. Base weights are frozen: only adapter tensors (names containing `lora_`) train.
"""

from __future__ import annotations

import torch
from torch import nn

from glmv.errors import ConfigError
from glmv.lora.config import AdapterSpec, LoraConfig
from glmv.lora.experts import LoraExperts
from glmv.lora.linear import LoraLinear
from glmv.lora.multi_experts import MultiLoraExperts
from glmv.lora.multi_linear import MultiLoraLinear
from glmv.lora.targets import EXPERT_PARAMS, candidates, resolve_targets
from glmv.model.moe import Experts

_SAVED_GRAD = "_lora_saved_requires_grad"  # model attribute: requires_grad of every parameter before adapting


def adapter_dtype(model: nn.Module) -> torch.dtype:
    """fp32 adapters on a bf16/fp16 model (small, and updates smaller than bf16's resolution must not vanish: peft's
    autocast_adapter_dtype), the model's dtype otherwise."""
    dtype = next(model.parameters()).dtype
    return torch.float32 if dtype in (torch.bfloat16, torch.float16) else dtype


def apply_lora(model: nn.Module, config: LoraConfig, dtype: torch.dtype | None = None) -> list[str]:
    """Add fresh adapters (A random, B zero: the model's outputs are unchanged) to the weights `config.targets`
    select, freeze every base parameter, and return the adapted glmv names. `dtype`: the adapters' dtype (default:
    fp32 on a bf16/fp16 model, else the model's)."""
    names = resolve_targets(model, config.targets, config.exclude)
    inject(model, dict.fromkeys(names, config.spec()), dtype)
    return names


def inject(model: nn.Module, specs: dict[str, AdapterSpec], dtype: torch.dtype | None = None) -> None:
    """Adapters on the weights named in `specs` (glmv names: modules, or `<experts>.gate_up_proj` / `.down_proj`),
    each with its own hyper-parameters; all checked before any module changes."""
    dtype = dtype or adapter_dtype(model)
    available = candidates(model)
    per_module: dict[nn.Module, dict[str, AdapterSpec]] = {}  # an Experts module takes up to two adapters
    for name, spec in specs.items():
        module = available.get(name)
        if module is None:
            raise ConfigError(f"LoRA target {name!r} is not a linear layer or routed-expert weight of this model")
        _check_adaptable(model, name, module, spec)
        per_module.setdefault(module, {})[name.rsplit(".", 1)[-1]] = spec
    if not hasattr(model, _SAVED_GRAD):  # the first adapters: remember what trained before, for merge / remove
        setattr(model, _SAVED_GRAD, {n: p.requires_grad for n, p in model.named_parameters()})
    for module, params in per_module.items():
        if isinstance(module, Experts):
            LoraExperts.adapt(module, {p: params[p] for p in EXPERT_PARAMS if p in params}, dtype)
        else:
            LoraLinear.adapt(module, next(iter(params.values())), dtype)
    for name, p in model.named_parameters():
        p.requires_grad_("lora_" in name)


def _check_adaptable(model: nn.Module, name: str, module: nn.Module, spec: AdapterSpec) -> None:
    if isinstance(module, (LoraLinear, LoraExperts)):
        raise ConfigError(f"{name} already carries an adapter (one per weight): merge_lora(model) or "
                          "remove_lora(model) first, or leave it out of the targets")
    if isinstance(module, (MultiLoraLinear, MultiLoraExperts)):
        raise ConfigError(f"{name} serves adapters (serve_adapters): load the model again to train or merge one")
    if type(module) not in (nn.Linear, Experts):
        raise ConfigError(f"{name} is quantised ({type(module).__name__}); adapters need float weights: load the "
                          "checkpoint unquantised (no quantize= / --memory plan that quantises)")
    if isinstance(module, Experts):
        if spec.use_dora:
            raise ConfigError(f"{name}: DoRA is for linear layers only (peft has no DoRA on routed experts); "
                              "use_dora=False or leave the experts out of the targets")
        if spec.lora_dropout:
            raise ConfigError(f"{name}: lora_dropout must be 0 when routed experts are adapted (peft's "
                              "target_parameters, which reads these adapters, has no dropout): set it to 0 or leave "
                              "the experts out")
    if name == "lm_head" and getattr(getattr(model, "config", None), "tie_word_embeddings", False):
        raise ConfigError("lm_head shares its weight with the token embeddings (tie_word_embeddings): merging an "
                          "adapter there would change the embeddings too; leave lm_head out of the targets")


def adapted_modules(model: nn.Module) -> dict[str, LoraLinear | LoraExperts]:
    """glmv module name -> adapted module, in model order."""
    return {n: m for n, m in model.named_modules() if isinstance(m, (LoraLinear, LoraExperts))}


def adapter_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """The adapter tensors under their glmv names (`...q_proj.lora_A.weight`, `...experts.lora_A.gate_up_proj`):
    what an optimizer trains and what save_adapter writes."""
    return {n: p for n, p in model.named_parameters() if "lora_" in n}


def remove_lora(model: nn.Module) -> nn.Module:
    """Take every adapter off without merging it: the base model as it was, trainable as it was."""
    for module in adapted_modules(model).values():
        module.strip()
    _restore_requires_grad(model)
    return model


def _restore_requires_grad(model: nn.Module) -> None:
    saved = model.__dict__.pop(_SAVED_GRAD, {})
    for name, p in model.named_parameters():
        p.requires_grad_(saved.get(name, True))
