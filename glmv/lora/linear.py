"""LoRA and DoRA on an nn.Linear: peft's lora.Linear, the same numerics and the same tensor names.

    LoRA:  y = W x + b + s * B A drop(x)                                    s = alpha / r (alpha / sqrt(r): rsLoRA)
    DoRA:  y = W x + b + (m / |W + s B A| - 1) * W drop(x) + (m / |W + s B A|) * s * B A drop(x)
           (the row norm |.| is detached, as the DoRA paper and peft do; without dropout W drop(x) is W x)

The adapted module stays the same object and keeps its `weight` / `bias` (only its class changes, to this
subclass): save_model, optimizers and anything holding a reference to the layer still see the base weights under
their names, and the adapter's tensors are its children `lora_A.weight`, `lora_B.weight`, `lora_magnitude_vector`,
the names peft gives them (glmv/lora/peft_format.py only adds the prefix).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from glmv.lora.config import AdapterSpec


def wide(t: torch.Tensor) -> torch.Tensor:
    """t in fp32, or kept in fp64: merges and adapted weights are computed at least in single precision."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


class LoraLinear(nn.Linear):
    spec: AdapterSpec
    lora_A: nn.Linear
    lora_B: nn.Linear
    lora_dropout: nn.Module
    lora_magnitude_vector: nn.Parameter | None

    @classmethod
    def adapt(cls, linear: nn.Linear, spec: AdapterSpec, dtype: torch.dtype) -> "LoraLinear":
        """Turn `linear` (in place) into a LoraLinear with a fresh adapter: A as nn.Linear initialises it (peft's
        kaiming-uniform with a=sqrt(5)), B zero, so the adapted layer starts equal to the base one."""
        linear.__class__ = cls
        linear.spec = spec
        device = linear.weight.device
        linear.lora_dropout = nn.Dropout(spec.lora_dropout) if spec.lora_dropout > 0 else nn.Identity()
        linear.lora_A = nn.Linear(linear.in_features, spec.r, bias=False, device=device, dtype=dtype)
        nn.init.kaiming_uniform_(linear.lora_A.weight, a=math.sqrt(5))  # explicit: nn.Linear's own init may change
        linear.lora_B = nn.Linear(spec.r, linear.out_features, bias=False, device=device, dtype=dtype)
        nn.init.zeros_(linear.lora_B.weight)
        linear.lora_magnitude_vector = None
        if spec.use_dora:  # m starts as the row norms of W + s B A (= W, B being zero): DoRA's identity start
            with torch.no_grad():
                norm = linear.adapted_weight().norm(dim=1)
            linear.lora_magnitude_vector = nn.Parameter(norm.to(dtype))
        return linear

    @property
    def scaling(self) -> float:
        return self.spec.scaling

    def delta_weight(self) -> torch.Tensor:
        """s * B @ A in fp32 (fp64 on an fp64 model): what LoRA adds to W (before DoRA's rescaling)."""
        return self.scaling * (wide(self.lora_B.weight) @ wide(self.lora_A.weight))

    def adapted_weight(self) -> torch.Tensor:
        """W + s * B @ A in fp32 (or wider)."""
        return wide(self.weight) + self.delta_weight()

    def merged_weight(self) -> torch.Tensor:
        """The single weight this layer computes with (fp32 or wider): W + s B A, rescaled per row to m for DoRA."""
        w = self.adapted_weight()
        if self.lora_magnitude_vector is not None:
            w = w * (wide(self.lora_magnitude_vector) / w.norm(dim=1))[:, None]
        return w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = F.linear(x, self.weight, self.bias)
        # the adapter computes in its own dtype (fp32 adapters on a bf16 model, as peft's autocast_adapter_dtype)
        lx = self.lora_dropout(x.to(self.lora_A.weight.dtype))
        lora = self.lora_B(self.lora_A(lx))
        if self.lora_magnitude_vector is None:
            return result + (lora * self.scaling).to(result.dtype)
        weight = self.weight.to(lx.dtype)
        lora_weight = (self.lora_B.weight @ self.lora_A.weight).detach()
        norm = (weight + self.scaling * lora_weight).norm(dim=1).detach()
        scale = self.lora_magnitude_vector / norm
        if isinstance(self.lora_dropout, nn.Identity) or not self.training:
            base = result.to(lx.dtype) - (self.bias.to(lx.dtype) if self.bias is not None else 0)  # W x, reused
        else:
            base = F.linear(lx, weight)  # W drop(x): dropout must reach the rescaled base term too
        return result + ((scale - 1) * base + scale * lora * self.scaling).to(result.dtype)

    def strip(self) -> nn.Linear:
        """Drop the adapter and become a plain nn.Linear again (same object, same weight)."""
        for name in ("lora_A", "lora_B", "lora_dropout"):
            delattr(self, name)
        del self.lora_magnitude_vector, self.spec
        self.__class__ = nn.Linear
        return self

    def extra_repr(self) -> str:
        s = self.spec
        kind = "DoRA" if s.use_dora else "LoRA"
        return f"{super().extra_repr()}, {kind} r={s.r}, alpha={s.lora_alpha}, dropout={s.lora_dropout}"
