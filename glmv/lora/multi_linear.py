"""Several LoRA / DoRA adapters on one nn.Linear, each row of a forward taking its own (serving: no dropout, no
training).

    y = W x + b + s_k B_k A_k x                     rows using adapter k (LoRA)
    y = b + d_k * (W x + s_k B_k A_k x)             DoRA, d_k = m_k / |W + s_k B_k A_k| (one value per output row)
    y = W x + b                                     rows using no adapter, or an adapter that leaves this layer out

The adapters are stacked, lora_A [n, r_max, in] and lora_B [n, out, r_max], zero-padded to the largest rank (the
padding adds exact zeros). The layer loops over the adapters present in the batch, each taking its rows
(index_select, two rank-r matmuls, index_add): on CPU that adds about a tenth to the base matmul at 1 to 64 rows,
where gathering each row's A and B and multiplying them batched adds 2x as much at 1 row, 5x at 8 and 14x at 64
(the copies of the weights dominate; glmv/lora/serving.py has the numbers). DoRA's d_k is fixed while serving
(the weights are frozen), so it is computed once at load, in fp32: a DoRA row costs one multiply more than a LoRA
row.

The module stays the same object (its class becomes this subclass), so its weight, bias and name are untouched;
the stacks are non-persistent buffers: save_model never writes them, .to(device) moves them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from glmv.lora.config import AdapterSpec
from glmv.lora.linear import wide
from glmv.lora.mapping import LoraContext


class MultiLoraLinear(nn.Linear):
    lora_context: LoraContext
    lora_A: torch.Tensor  # [n, r_max, in]
    lora_B: torch.Tensor  # [n, out, r_max]
    lora_dora_scale: torch.Tensor  # [n, out]: d_k, 1 for LoRA adapters
    lora_scaling: list[float]  # per adapter
    lora_on: frozenset[int]  # the adapters that adapt this layer
    lora_dora_on: frozenset[int]

    @classmethod
    def adapt(cls, linear: nn.Linear, context: LoraContext, count: int,
              adapters: dict[int, tuple[AdapterSpec, torch.Tensor, torch.Tensor, torch.Tensor | None]],
              dtype: torch.dtype) -> "MultiLoraLinear":
        """Turn `linear` (in place) into a layer serving `count` adapters, of which `adapters` (index -> spec, A
        [r, in], B [out, r], DoRA magnitude [out] or None) adapt it."""
        r_max = max(spec.r for spec, *_ in adapters.values())
        device = linear.weight.device
        a_stack = torch.zeros(count, r_max, linear.in_features, device=device, dtype=dtype)
        b_stack = torch.zeros(count, linear.out_features, r_max, device=device, dtype=dtype)
        dora = torch.ones(count, linear.out_features, device=device, dtype=dtype)
        scaling = [0.0] * count
        for k, (spec, a, b, magnitude) in adapters.items():
            a_stack[k, : spec.r] = a
            b_stack[k, :, : spec.r] = b
            scaling[k] = spec.scaling
            if magnitude is not None:  # DoRA: m / |W + s B A| row by row, as peft computes it (detached)
                adapted = wide(linear.weight) + spec.scaling * (wide(b) @ wide(a))
                dora[k] = wide(magnitude) / adapted.norm(dim=1)
        linear.__class__ = cls
        linear.lora_context = context
        linear.register_buffer("lora_A", a_stack, persistent=False)
        linear.register_buffer("lora_B", b_stack, persistent=False)
        linear.register_buffer("lora_dora_scale", dora, persistent=False)
        linear.lora_scaling = scaling
        linear.lora_on = frozenset(adapters)
        linear.lora_dora_on = frozenset(k for k, (*_, m) in adapters.items() if m is not None)
        return linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.linear(x, self.weight, self.bias)
        mapping = self.lora_context.mapping
        if mapping is None:  # the base model: no adapter work at all
            return out
        flat_x, flat_out = x.reshape(-1, self.in_features), out.view(-1, self.out_features)
        for k, rows in mapping.groups(flat_x.shape[0]):
            if k not in self.lora_on:
                continue
            xs = flat_x if rows is None else flat_x.index_select(0, rows)
            # the adapter computes in its own dtype (fp32 adapters on a bf16 model), as LoraLinear does
            delta = F.linear(F.linear(xs.to(self.lora_A.dtype), self.lora_A[k]), self.lora_B[k]) * self.lora_scaling[k]
            if k in self.lora_dora_on:
                base = flat_out if rows is None else flat_out.index_select(0, rows)
                base = base.to(delta.dtype) - (self.bias.to(delta.dtype) if self.bias is not None else 0)  # W x
                d = self.lora_dora_scale[k]
                delta = (d - 1) * base + d * delta
            if rows is None:
                flat_out += delta.to(out.dtype)
            else:
                flat_out.index_add_(0, rows, delta.to(out.dtype))
        return out

    def extra_repr(self) -> str:
        dora = f", DoRA {sorted(self.lora_dora_on)}" if self.lora_dora_on else ""
        return f"{super().extra_repr()}, adapters {sorted(self.lora_on)} of {len(self.lora_scaling)}{dora}"
