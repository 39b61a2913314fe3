"""Quantising a float checkpoint while it loads: what the memory planner's formats apply when no quantised
checkpoint was written beforehand (`glmv convert` writes one). Each float weight is read, cast to the model dtype,
quantised with the same arithmetic as `glmv convert` and stored in its quantised module; the float copy is
dropped at once, so peak memory is the quantised model plus one weight.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from glmv.errors import CheckpointError
from glmv.model.moe import Experts
from glmv.quant.modules import QuantWeight
from glmv.quant.scheme import SCHEMES, WeightQuant
from glmv.quant.tensors import quantize

COMPONENTS = ("attention", "dense_mlp", "shared_experts", "routed_experts")  # the decoder's linears, by role
INT4_GROUPS = (128, 64, 32, 16)  # the first that divides a weight's input width


@dataclass
class QuantizeOnLoad:
    """Where the loader puts one float checkpoint weight that is to be held quantised."""

    module: QuantWeight
    expert: int | None
    dtype: torch.dtype  # the model's: the weight is cast to it first, and the scales are in it

    @property
    def shape(self) -> torch.Size:
        return torch.Size((self.module.out_features, self.module.in_features))

    def numel(self) -> int:
        return self.shape.numel()

    def copy_(self, weight: torch.Tensor) -> None:
        wq = self.module.wq
        stored = quantize(weight.to(self.dtype), wq)
        for name in (wq.data_name, wq.scale_name):
            target = getattr(self.module, name)
            (target if self.expert is None else target[self.expert]).copy_(stored[name])


def _component(name: str, module: nn.Module) -> str | None:
    """Which of COMPONENTS a decoder module is (None: stays float: ViT, embeddings, lm_head, router, norms)."""
    if not name.startswith("language_model.layers."):
        return None
    if isinstance(module, Experts):
        return "routed_experts"
    if not isinstance(module, nn.Linear):
        return None
    if ".self_attn." in name:
        return "attention"
    return "shared_experts" if ".mlp.shared_experts." in name else "dense_mlp"


def _scheme(fmt: str, in_features: int) -> WeightQuant:
    if fmt != "int4":
        return SCHEMES[fmt](0)
    group = next((g for g in INT4_GROUPS if in_features % g == 0), None)
    if group is None:
        raise CheckpointError(f"int4 needs an input width divisible by 16; this model has a {in_features}-wide linear")
    return SCHEMES["int4"](group)


def schemes_for(model: nn.Module, formats: dict[str, str] | str, dtype: torch.dtype) -> dict[str, tuple[WeightQuant, torch.dtype]]:
    """Module name -> (scheme, scale dtype) for the decoder modules `formats` quantises: a format for every
    decoder linear ("int8"), or one per component ({"routed_experts": "int4", "attention": "fp8"}; "bf16" or an
    absent component stays float)."""
    if isinstance(formats, str):
        formats = dict.fromkeys(COMPONENTS, formats)
    unknown = {f for f in formats.values() if f not in (*SCHEMES, "bf16")} | (set(formats) - set(COMPONENTS))
    if unknown:
        raise CheckpointError(f"quantize: {sorted(unknown)} not understood; formats are {', '.join(SCHEMES)} (or "
                              f"bf16 for float), components {', '.join(COMPONENTS)}")
    out = {}
    for name, module in model.named_modules():
        fmt = formats.get(_component(name, module) or "", "bf16")
        if fmt == "bf16":
            continue
        if isinstance(module, Experts):  # one scheme for gate/up (hidden-wide inputs) and down (inner-wide)
            width = math.gcd(module.gate_up_proj.shape[-1], module.down_proj.shape[-1])
        else:
            width = module.in_features
        out[name] = (_scheme(fmt, width), dtype)
    return out
