"""`fused_experts`: the routed experts of a GLM-4.5V MoE layer as two fused Triton grouped GEMMs, with the
contract of `glmv.model.moe.Experts.forward` (inference only: no autograd).

    align_pairs         ids [T, k] -> (token, slot) pairs sorted by expert, padded to blocks of BLOCK_M
    gate_up_kernel      -> h [T*k, I] = SiLU(gate) * up
    down_kernel         -> y [T*k, H] = routing weight * (h @ down^T)
    sum over the slots  -> [T, H]   (a plain sum, not atomics: the result does not depend on scheduling)
"""

from __future__ import annotations


import torch

from glmv.kernels import triton_runs_on

from glmv.kernels.moe_align import align_pairs
from glmv.kernels.moe_configs import MoEConfig, pick_config

DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def available(x: torch.Tensor) -> bool:
    """Whether fused_experts can run on x's device (glmv.kernels.triton_runs_on)."""
    return triton_runs_on(x)


def fused_experts(x: torch.Tensor, gate_up_proj: torch.Tensor, down_proj: torch.Tensor, weights: torch.Tensor,
                  ids: torch.Tensor, config: MoEConfig | None = None) -> torch.Tensor:
    """x [T, H], gate_up_proj [E, 2I, H] (gate rows first), down_proj [E, H, I], weights [T, k] fp32, ids [T, k]
    -> [T, H] in x's dtype: sum over slots of weight * down(SiLU(gate(x)) * up(x)) with the slot's expert.
    `config` overrides the tile sizes (moe_configs.py picks them by shape otherwise)."""
    from glmv.kernels import fused_moe_kernels as kernels  # imports triton: only once a kernel is to run

    _check_inputs(x, gate_up_proj, down_proj, weights, ids)
    t, hidden = x.shape
    experts, inner = down_proj.shape[0], down_proj.shape[2]
    k = ids.shape[1]
    if t == 0:
        return torch.empty_like(x)
    cfg = pick_config(t, experts, inner, hidden, k) if config is None else config
    align = align_pairs(ids, experts, cfg.block_m)
    rows = align.sorted_pairs.numel()
    # fp32 dots follow torch's own setting, so that the comparison with eager matmuls is like for like
    precision = "tf32" if x.dtype == torch.float32 and torch.backends.cuda.matmul.allow_tf32 else "ieee"
    tiles = dict(BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, BLOCK_K=cfg.block_k, GROUP_M=cfg.group_m,
                 PRECISION=precision, num_warps=cfg.num_warps, num_stages=cfg.num_stages)
    blocks_m = -(-rows // cfg.block_m)

    h = x.new_empty(t * k, inner)  # [P, I] in pair order (token-major), written only at real pairs
    kernels.gate_up_kernel[(blocks_m * -(-inner // cfg.block_n),)](
        x, gate_up_proj, h, align.sorted_pairs, align.block_experts, align.num_padded,
        t * k, k, hidden, inner, rows,
        x.stride(0), gate_up_proj.stride(0), gate_up_proj.stride(1), h.stride(0), **tiles)
    y = x.new_empty(t * k, hidden)  # [P, H]
    kernels.down_kernel[(blocks_m * -(-hidden // cfg.block_n),)](
        h, down_proj, y, weights, align.sorted_pairs, align.block_experts, align.num_padded,
        t * k, hidden, inner, rows,
        h.stride(0), down_proj.stride(0), down_proj.stride(1), y.stride(0), **tiles)
    return y.view(t, k, hidden).sum(1)  # torch sums low-precision floats in fp32 and rounds once


def _check_inputs(x: torch.Tensor, gate_up_proj: torch.Tensor, down_proj: torch.Tensor, weights: torch.Tensor,
                  ids: torch.Tensor) -> None:
    """Shapes, dtypes, devices and layouts the kernels rely on (they index raw pointers, so a mismatch would read
    wrong memory rather than fail). Expert ids are not range-checked: that would need a host sync."""

    def need(ok: bool, msg: str) -> None:
        if not ok:
            raise ValueError(f"fused_experts: {msg}")

    need(x.dim() == 2, f"x must be [T, H], got shape {tuple(x.shape)}")
    need(gate_up_proj.dim() == 3 and down_proj.dim() == 3,
         f"gate_up_proj must be [E, 2I, H] and down_proj [E, H, I], got {tuple(gate_up_proj.shape)} and "
         f"{tuple(down_proj.shape)}")
    t, hidden = x.shape
    experts, inner = down_proj.shape[0], down_proj.shape[2]
    need(tuple(gate_up_proj.shape) == (experts, 2 * inner, hidden) and down_proj.shape[1] == hidden,
         f"with x [T, {hidden}] and down_proj {tuple(down_proj.shape)}, gate_up_proj must be "
         f"{(experts, 2 * inner, hidden)}, got {tuple(gate_up_proj.shape)}")
    need(ids.dim() == 2 and ids.shape[0] == t and tuple(weights.shape) == tuple(ids.shape),
         f"weights and ids must both be [T={t}, k], got {tuple(weights.shape)} and {tuple(ids.shape)}")
    need(x.dtype in DTYPES, f"x dtype must be one of {DTYPES}, got {x.dtype}")
    need(gate_up_proj.dtype == x.dtype and down_proj.dtype == x.dtype,
         f"expert weights must have x's dtype {x.dtype}, got {gate_up_proj.dtype} and {down_proj.dtype}")
    need(weights.dtype == torch.float32, f"routing weights must be float32, got {weights.dtype}")
    need(not ids.is_floating_point() and not ids.is_complex(), f"ids must be integers, got {ids.dtype}")
    devices = {x.device, gate_up_proj.device, down_proj.device, weights.device, ids.device}
    need(len(devices) == 1, f"all tensors must be on one device, got {sorted(map(str, devices))}")
    for name, tensor in [("x", x), ("gate_up_proj", gate_up_proj), ("down_proj", down_proj),
                         ("weights", weights), ("ids", ids)]:
        need(tensor.is_contiguous(), f"{name} must be contiguous (call .contiguous() first)")
