"""Small building blocks shared by the vision tower and the decoder."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from glmv.errors import ConfigError

ACTIVATIONS = {"silu": F.silu, "gelu": F.gelu}


def activation(name: str):
    if name not in ACTIVATIONS:
        raise ConfigError(f"config.json: hidden_act {name!r} is not supported (use one of {sorted(ACTIVATIONS)})")
    return ACTIVATIONS[name]


class RMSNorm(nn.Module):
    """RMSNorm computed in fp32, then `weight * x.to(input dtype)` (the reference's order, bit for bit in bf16)."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


class SwiGLU(nn.Module):
    """`down(act(gate(x)) * up(x))` with separate gate/up projections and no biases."""

    def __init__(self, dim: int, inner: int, act: str = "silu"):
        super().__init__()
        self.gate_proj = nn.Linear(dim, inner, bias=False)
        self.up_proj = nn.Linear(dim, inner, bias=False)
        self.down_proj = nn.Linear(inner, dim, bias=False)
        self.act = activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act(self.gate_proj(x)) * self.up_proj(x))


class FusedSwiGLU(nn.Module):
    """GLM-4.1V's dense MLP: one `gate_up_proj` whose first half is the gate and second half the up projection."""

    def __init__(self, dim: int, inner: int, act: str = "silu"):
        super().__init__()
        self.gate_up_proj = nn.Linear(dim, 2 * inner, bias=False)
        self.down_proj = nn.Linear(inner, dim, bias=False)
        self.act = activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
        return self.down_proj(up * self.act(gate))
