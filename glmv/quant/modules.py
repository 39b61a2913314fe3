"""Linears and routed experts whose weights stay quantised in memory, dequantised as they are used.

A quantised module registers its tensors under the checkpoint's own suffixes (`weight` or `weight_packed`,
`weight_scale` or `weight_scale_inv`), so the loader fills them like any other tensor; routed experts keep one
stack per projection ([E, ...], gate and up apart, as the checkpoint stores them per expert).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from glmv.model.moe import Experts, per_expert
from glmv.quant.matmul import fast_matmul
from glmv.quant.scheme import WeightQuant
from glmv.quant.tensors import dequantize


class QuantWeight(nn.Module):
    """One quantised [out, in] weight, or a stack of `experts` of them."""

    def __init__(self, wq: WeightQuant, out_features: int, in_features: int, scale_dtype: torch.dtype,
                 experts: int | None = None):
        super().__init__()
        self.wq, self.in_features, self.out_features = wq, in_features, out_features
        self.num_stacked = experts or 0
        self.from_float = False  # filled by quantising a float checkpoint's weight as it loads (quant/on_load.py)
        lead = () if experts is None else (experts,)
        data_dtype = torch.int32 if wq.packed else (torch.float8_e4m3fn if wq.kind == "float" else torch.int8)
        self.register_buffer(wq.data_name, torch.empty(*lead, *wq.data_shape(out_features, in_features), dtype=data_dtype))
        self.register_buffer(wq.scale_name, torch.empty(*lead, *wq.scale_shape(out_features, in_features), dtype=scale_dtype))

    @property
    def device(self) -> torch.device:
        """Where the stored weight lives (so QuantExperts answers `down_proj.device` as Experts does)."""
        return getattr(self, self.wq.data_name).device

    def _stored(self, expert: int | None) -> tuple[torch.Tensor, torch.Tensor]:
        data, scale = getattr(self, self.wq.data_name), getattr(self, self.wq.scale_name)
        return (data, scale) if expert is None else (data[expert], scale[expert])

    def dequantized(self, dtype: torch.dtype, expert: int | None = None) -> torch.Tensor:
        data, scale = self._stored(expert)
        return dequantize(data, scale, self.wq, self.in_features, dtype)

    def linear(self, x: torch.Tensor, expert: int | None = None) -> torch.Tensor:
        """x [..., in] @ W.T in x's dtype: through a matmul that reads the quantised weight where the device has
        one (glmv/quant/matmul.py), else by dequantising the weight for this call."""
        data, scale = self._stored(expert)
        fast = fast_matmul(x, self.wq, self.out_features, self.in_features)
        if fast is not None:
            out = fast(x.reshape(-1, x.shape[-1]).contiguous(), data, scale)
            return out.view(*x.shape[:-1], self.out_features)
        return F.linear(x, dequantize(data, scale, self.wq, self.in_features, x.dtype))

    def extra_repr(self) -> str:
        return f"{self.out_features}x{self.in_features}, {self.wq.kind}{self.wq.bits} per {self.wq.strategy}"


class QuantLinear(QuantWeight):
    """nn.Linear with a quantised weight: `x @ dequant(W).T + b` in x's dtype."""

    def __init__(self, linear: nn.Linear, wq: WeightQuant, scale_dtype: torch.dtype):
        super().__init__(wq, linear.out_features, linear.in_features, scale_dtype)
        self.bias = linear.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.linear(x)
        return out if self.bias is None else out + self.bias


class QuantExperts(Experts):
    """Routed experts with quantised gate / up / down stacks, run expert by expert (the looped path): only the
    experts that receive tokens are touched, and the stacks are never dequantised whole."""

    def __init__(self, experts: Experts, wq: WeightQuant, scale_dtype: torch.dtype):
        nn.Module.__init__(self)  # not Experts.__init__: no float stacks
        e, inter2, h = experts.gate_up_proj.shape
        self.act = experts.act
        self.gate_proj = QuantWeight(wq, inter2 // 2, h, scale_dtype, experts=e)
        self.up_proj = QuantWeight(wq, inter2 // 2, h, scale_dtype, experts=e)
        self.down_proj = QuantWeight(wq, h, inter2 // 2, scale_dtype, experts=e)

    @property
    def num_experts(self) -> int:
        return self.down_proj.num_stacked

    def grouped_fits(self, x: torch.Tensor) -> bool:
        return False

    def _looped(self, xs: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        def mlp(e: int, rows: torch.Tensor) -> torch.Tensor:
            hidden = self.act(self.gate_proj.linear(rows, e)) * self.up_proj.linear(rows, e)
            return self.down_proj.linear(hidden, e)

        return per_expert(xs, counts, mlp)


def quantize_modules(model: nn.Module, schemes: dict[str, tuple[WeightQuant, torch.dtype]],
                     from_float: bool = False) -> None:
    """Replace the named nn.Linear / Experts modules of `model` (built on the meta device) by their quantised
    counterparts, with storage shaped for the given (scheme, scale dtype). `from_float`: the checkpoint holds
    these weights in float, to be quantised as they load."""
    for name, (wq, scale_dtype) in schemes.items():
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        module = getattr(parent, child)
        if isinstance(module, Experts):
            new = QuantExperts(module, wq, scale_dtype)
        elif isinstance(module, nn.Linear):
            new = QuantLinear(module, wq, scale_dtype)
        else:
            raise TypeError(f"{name} is a {type(module).__name__}, not a linear or experts module")
        for weight in new.modules():
            if isinstance(weight, QuantWeight):
                weight.from_float = from_float
        setattr(parent, child, new)
