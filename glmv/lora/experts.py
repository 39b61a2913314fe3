"""LoRA on the stacked routed experts: one low-rank pair per expert, stacked the way the experts are.

    gate_up_proj [E, 2I, H]  +  s * B [E, 2I, r] @ A [E, r, H]
    down_proj    [E, H, I]   +  s * B [E, H, r]  @ A [E, r, I]

Why a per-expert low-rank term and not the adapted weight W_e + s B_e A_e (what peft's target_parameters does,
through a parametrization): that weight is a second copy of every expert of the layer on each forward, and its
gradient a full-size [E, 2I, H] tensor on each backward, although only the experts that received tokens compute.
Here each expert's rows take `x W_e^T + s (x A_e^T) B_e^T`: O(tokens * r) extra work, nothing the size of the
experts, the same result up to rounding (the tests hold both to 1e-5 in fp32), and the grouped-GEMM inference path
keeps working: one more grouped GEMM pair per projection.

The module stays the same Experts object (its class becomes this subclass, which overrides the two expert paths of
glmv/model/moe.py: `_grouped` without grad, `_looped` with it), so routing, token sorting and offloading are
moe.py's own code. No dropout: peft's target_parameters has none (it cannot factor x out of a merged weight), and
an adapter glmv writes must load there.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from glmv.lora.config import AdapterSpec
from glmv.lora.linear import wide
from glmv.model.moe import Experts, _grouped_mm_fits, per_expert

GROUPED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


class LoraExperts(Experts):
    specs: dict[str, AdapterSpec]  # "gate_up_proj" / "down_proj" -> its adapter's hyper-parameters
    lora_A: nn.ParameterDict  # [E, r, in] per adapted projection
    lora_B: nn.ParameterDict  # [E, out, r]

    @classmethod
    def adapt(cls, experts: Experts, specs: dict[str, AdapterSpec], dtype: torch.dtype) -> "LoraExperts":
        """Turn `experts` (in place) into a LoraExperts adapting the projections named in `specs`. A is drawn as
        peft draws its [E*r, in] lora_A (kaiming-uniform, a=sqrt(5), fan-in = in), B is zero."""
        experts.__class__ = cls
        experts.specs = dict(specs)
        experts.lora_A, experts.lora_B = nn.ParameterDict(), nn.ParameterDict()
        for name, spec in specs.items():
            w = getattr(experts, name)
            e, out, inp = w.shape
            a = torch.empty(e, spec.r, inp, device=w.device, dtype=dtype)
            nn.init.kaiming_uniform_(a.view(e * spec.r, inp), a=math.sqrt(5))
            experts.lora_A[name] = nn.Parameter(a)
            experts.lora_B[name] = nn.Parameter(torch.zeros(e, out, spec.r, device=w.device, dtype=dtype))
        return experts

    def delta_weight(self, name: str, expert: int | None = None) -> torch.Tensor:
        """s * B_e @ A_e in fp32 (fp64 on an fp64 model) for one expert ([out, in]) or all of them ([E, out, in])."""
        a, b = self.lora_A[name], self.lora_B[name]
        if expert is not None:
            a, b = a[expert], b[expert]
        return self.specs[name].scaling * (wide(b) @ wide(a))

    def grouped_fits(self, x: torch.Tensor) -> bool:
        # grouped GEMMs need one dtype throughout (fp32 / bf16 / fp16: torch._grouped_mm refuses fp64) and the
        # 16-byte row rule for the adapter stacks too
        adapters = [*self.lora_A.values(), *self.lora_B.values()]
        return (x.dtype in GROUPED_DTYPES and all(t.dtype == x.dtype for t in adapters)
                and _grouped_mm_fits(x, self.gate_up_proj, self.down_proj, *adapters))

    def _grouped(self, xs: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        offs = counts.cumsum(0).to(torch.int32)

        def project(name: str, rows: torch.Tensor) -> torch.Tensor:
            out = torch._grouped_mm(rows, getattr(self, name).transpose(1, 2), offs=offs)
            if name in self.specs:
                low = torch._grouped_mm(rows, self.lora_A[name].transpose(1, 2), offs=offs)
                out = out + self.specs[name].scaling * torch._grouped_mm(low, self.lora_B[name].transpose(1, 2), offs=offs)
            return out

        gate, up = project("gate_up_proj", xs).chunk(2, dim=-1)
        return project("down_proj", self.act(gate) * up)

    def _looped(self, xs: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        # unbind once (see Experts._looped): per-expert indexing would make autograd build full-size gradients
        base = {"gate_up_proj": self.gate_up_proj.unbind(0), "down_proj": self.down_proj.unbind(0)}
        low = {n: (self.lora_A[n].unbind(0), self.lora_B[n].unbind(0), self.specs[n].scaling) for n in self.specs}

        def project(name: str, e: int, rows: torch.Tensor) -> torch.Tensor:
            out = F.linear(rows, base[name][e])
            if name in low:
                a, b, s = low[name]
                lx = rows.to(a[e].dtype)
                out = out + (F.linear(F.linear(lx, a[e]), b[e]) * s).to(out.dtype)
            return out

        def mlp(e: int, chunk: torch.Tensor) -> torch.Tensor:
            gate, up = project("gate_up_proj", e, chunk).chunk(2, dim=-1)
            return project("down_proj", e, self.act(gate) * up)

        return per_expert(xs, counts, mlp)

    def strip(self) -> Experts:
        """Drop the adapters and become a plain Experts again (same object, same weights)."""
        del self.lora_A, self.lora_B, self.specs
        self.__class__ = Experts
        return self

    def extra_repr(self) -> str:
        return ", ".join(f"{n}: LoRA r={s.r}, alpha={s.lora_alpha}" for n, s in self.specs.items())
