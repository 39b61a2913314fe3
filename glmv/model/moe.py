"""GLM-4.5-Air style mixture of experts: sigmoid router with selection-only bias, group-limited top-k,
stacked expert weights and tokens grouped per expert.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from glmv.config import TextConfig
from glmv.device import cuda_capability
from glmv.kernels import fused_moe
from glmv.model.layers import SwiGLU, activation


class Router(nn.Module):
    def __init__(self, cfg: TextConfig):
        super().__init__()
        self.cfg = cfg
        self.weight = nn.Parameter(torch.empty(cfg.n_routed_experts, cfg.hidden_size))
        # fp32 always (the reference keeps it strictly fp32); it only shifts which experts are chosen.
        self.register_buffer("e_score_correction_bias", torch.zeros(cfg.n_routed_experts, dtype=torch.float32))
        self.last_load: torch.Tensor | None = None  # tokens per expert of the last training forward (balancing)

    def forward(self, x: torch.Tensor, real: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """x [T, H] -> (weights [T, k] fp32, expert ids [T, k]). real [T] bool: the tokens a training forward
        counts toward the experts' load (padding is routed like any token but left out of the balance)."""
        cfg = self.cfg
        scores = F.linear(x.float(), self.weight.float()).sigmoid()  # [T, E]
        choice = scores + self.e_score_correction_bias.float()
        if cfg.n_group > 1:  # DeepSeek-V3 rule: keep the topk_group groups with the best top-2 sums
            t = choice.shape[0]
            groups = choice.view(t, cfg.n_group, -1)
            best = groups.topk(2, dim=-1).values.sum(-1).topk(cfg.topk_group, dim=-1, sorted=False).indices
            keep = torch.zeros(t, cfg.n_group, dtype=torch.bool, device=x.device).scatter_(1, best, True)
            choice = choice.masked_fill(~keep[..., None].expand_as(groups).reshape(t, -1), float("-inf"))
        ids = choice.topk(cfg.num_experts_per_tok, dim=-1, sorted=False).indices
        if self.training:
            load = torch.bincount((ids if real is None else ids[real]).flatten(), minlength=cfg.n_routed_experts)
            self.last_load = load if self.last_load is None else self.last_load + load
        weights = scores.gather(1, ids)
        if cfg.norm_topk_prob:
            weights = weights / (weights.sum(-1, keepdim=True) + 1e-20)
        return weights * cfg.routed_scaling_factor, ids


class Experts(nn.Module):
    """All routed experts as two stacked tensors: gate_up_proj [E, 2I, H] (gate rows first), down_proj [E, H, I]."""

    def __init__(self, cfg: TextConfig):
        super().__init__()
        e, i, h = cfg.n_routed_experts, cfg.moe_intermediate_size, cfg.hidden_size
        self.gate_up_proj = nn.Parameter(torch.empty(e, 2 * i, h))
        self.down_proj = nn.Parameter(torch.empty(e, h, i))
        self.act = activation(cfg.hidden_act)

    def forward(self, x: torch.Tensor, weights: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """x [T, H], weights/ids [T, k] -> [T, H]: the (token, slot) pairs sorted by expert, each expert's run
        through its weights, weighted and summed back per token. Experts whose weights live on another device
        than x (routed experts offloaded to host RAM) compute there: only rows and routing travel."""
        home = self.down_proj.device
        if x.device != home:
            return self(x.to(home), weights.to(home), ids.to(home)).to(x.device, x.dtype)
        if self.fused_fits(x):
            return fused_moe.fused_experts(x.contiguous(), self.gate_up_proj, self.down_proj, weights, ids)
        if self.gathered_fits():
            return self._gathered(x, weights, ids)
        k = ids.shape[1]
        flat = ids.flatten()  # [T*k] (token-major)
        order = flat.argsort(stable=True)
        counts = torch.bincount(flat, minlength=self.num_experts)
        tokens = order // k  # token of each sorted (token, slot) pair
        xs = x[tokens]  # [T*k, H] grouped by expert: one contiguous run per expert
        if self.grouped_fits(x):
            out = self._grouped(xs, counts)
        else:
            out = self._looped(xs, counts)
        out = out * weights.flatten()[order, None].to(x.dtype)
        return torch.zeros_like(x).index_add_(0, tokens, out)

    def _grouped(self, xs: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """One grouped GEMM per projection, the runs given by device offsets: no host synchronisation, so a
        decode step can be compiled or graph-captured (inference only: torch._grouped_mm has no CPU backward)."""
        offs = counts.cumsum(0).to(torch.int32)
        gate, up = torch._grouped_mm(xs, self.gate_up_proj.transpose(1, 2), offs=offs).chunk(2, dim=-1)
        return torch._grouped_mm(self.act(gate) * up, self.down_proj.transpose(1, 2), offs=offs)

    def _gathered(self, x: torch.Tensor, weights: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """Each (token, slot) pair against its own expert's gathered weights, one batched matmul per projection:
        static shapes, no sort, no counts. Compiled it reads only the chosen experts and beats the eager grouped
        GEMM 2.4x at 1 token and 1.4x at 8 (the nano model's layer, one CPU thread); eager, the weight copies
        make it 3-10x slower than the grouped GEMM, so only the compiled decode step uses it."""
        t, k = ids.shape
        flat = ids.reshape(-1)  # [T*k]
        rows = x.repeat_interleave(k, dim=0)[:, :, None]  # [T*k, H, 1]
        gate, up = torch.bmm(self.gate_up_proj[flat], rows).squeeze(-1).chunk(2, dim=-1)  # [T*k, I] each
        out = torch.bmm(self.down_proj[flat], (self.act(gate) * up)[:, :, None]).squeeze(-1)  # [T*k, H]
        return (out.view(t, k, -1) * weights[..., None].to(out.dtype)).sum(1)

    def gathered_fits(self) -> bool:
        """While a decode step is being compiled (glmv/engine/compiled_step.py), for plain float Experts: the
        grouped GEMM has no fp32 meta kernel to trace and the sorted path's counts are data-dependent shapes."""
        return type(self) is Experts and torch.compiler.is_compiling()

    @property
    def num_experts(self) -> int:
        return self.gate_up_proj.shape[0]

    def fused_fits(self, x: torch.Tensor) -> bool:
        """Whether the fused Triton kernels (glmv/kernels/fused_moe.py) serve this forward: inference (they have
        no backward) on CUDA, SiLU experts, float stacks in x's dtype. Plain Experts only: subclasses
        (QuantExperts, adapters) change the expert maths and keep their own paths."""
        return (type(self) is Experts and x.is_cuda and not torch.is_grad_enabled() and self.act is F.silu
                and x.dtype == self.gate_up_proj.dtype and fused_moe.available(x))

    def grouped_fits(self, x: torch.Tensor) -> bool:
        return _grouped_mm_fits(x, self.gate_up_proj, self.down_proj)

    def _looped(self, xs: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """A Python loop over the experts that received tokens (the run lengths are read on the host): the
        training path."""
        # unbind once: indexing the stacked parameter per expert would make autograd allocate (and zero) a
        # full-size gradient for every expert; unbind's backward assembles them in one tensor
        gate_up, down = self.gate_up_proj.unbind(0), self.down_proj.unbind(0)

        def mlp(e: int, chunk: torch.Tensor) -> torch.Tensor:
            gate, up = F.linear(chunk, gate_up[e]).chunk(2, dim=-1)
            return F.linear(self.act(gate) * up, down[e])

        return per_expert(xs, counts, mlp)


def per_expert(xs: torch.Tensor, counts: torch.Tensor, mlp: Callable[[int, torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """`mlp(e, rows)` over each expert's run of the expert-sorted rows `xs`; experts with no rows cost nothing."""
    # cat (not writes into a preallocated buffer) keeps the backward pass free of full-size zero fills
    return torch.cat([mlp(e, chunk) for e, chunk in enumerate(xs.split(counts.tolist())) if chunk.shape[0]])


def _grouped_mm_fits(x: torch.Tensor, *weights: torch.Tensor) -> bool:
    """Whether torch._grouped_mm serves this forward: no gradient needed, rows a multiple of 16 bytes (its
    stride rule), and a device that has it (any CPU; bf16 on CUDA compute capability 9.0+)."""
    if torch.is_grad_enabled() or not hasattr(torch, "_grouped_mm"):
        return False
    if x.dtype not in (torch.float32, torch.bfloat16, torch.float16):  # its kernels' dtypes (float64 loops)
        return False
    if any(w.shape[-1] * w.element_size() % 16 or w.shape[-2] * w.element_size() % 16 for w in weights):
        return False
    if x.device.type == "cpu":
        return True
    return x.device.type == "cuda" and x.dtype == torch.bfloat16 and cuda_capability(x.device) >= (9, 0)




class MoE(nn.Module):
    def __init__(self, cfg: TextConfig):
        super().__init__()
        self.gate = Router(cfg)
        self.experts = Experts(cfg)
        self.shared_experts = SwiGLU(cfg.hidden_size, cfg.moe_intermediate_size * cfg.n_shared_experts, cfg.hidden_act)

    def forward(self, x: torch.Tensor, real: torch.Tensor | None = None) -> torch.Tensor:
        """x [B, L, H] -> [B, L, H]; real [B * L] bool: Router.forward."""
        shape = x.shape
        flat = x.reshape(-1, shape[-1])
        weights, ids = self.gate(flat, real)
        return self.experts(flat, weights, ids).view(shape) + self.shared_experts(x)
