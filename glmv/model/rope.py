"""Rotary position embeddings: the decoder's 3D (M-RoPE) variant and the vision tower's 2D variant.

Decoder: only the first `rotary_dim` dims of each head rotate. Frequency j belongs to one axis (temporal,
height, width) by `mrope_section`. GLM-4.5V (MoE) rotates NeoX-style, pairs (i, i + rotary_dim/2); GLM-4.1V
(dense) rotates GPT-J-style, pairs (2i, 2i+1). Angles are computed in fp32 and cast to the activations' dtype
before use, as the reference does.
"""

from __future__ import annotations

import torch


def inv_freq(dim: int, theta: float, device=None) -> torch.Tensor:
    """[dim/2] inverse frequencies theta^(-2j/dim)."""
    return 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float32, device=device) / dim))


def mrope_cos_sin(
    position_ids: torch.Tensor, rotary_dim: int, theta: float, mrope_section: list[int], interleaved: bool, dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """position_ids [3, B, L] -> cos, sin [B, L, rotary_dim] in `dtype`."""
    freqs = position_ids[..., None].float() * inv_freq(rotary_dim, theta, position_ids.device)  # [3, B, L, R/2]
    # frequency block i takes its angle from axis i % 3 (temporal, height, width)
    freqs = torch.cat([part[i % 3] for i, part in enumerate(freqs.split(mrope_section, dim=-1))], dim=-1)
    freqs = freqs.repeat_interleave(2, dim=-1) if interleaved else torch.cat([freqs, freqs], dim=-1)
    return freqs.cos().to(dtype), freqs.sin().to(dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def rotate_pairs(x: torch.Tensor) -> torch.Tensor:
    """GPT-J rotation: (x0, x1) -> (-x1, x0) on adjacent pairs."""
    return torch.stack((-x[..., 1::2], x[..., 0::2]), dim=-1).flatten(-2)


def apply_partial_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, interleaved: bool) -> torch.Tensor:
    """x [B, H, L, D]; cos/sin [B, L, R] with R <= D: rotate x[..., :R], pass the rest through."""
    r = cos.shape[-1]
    cos, sin = cos[:, None], sin[:, None]
    x_rot, x_pass = x[..., :r], x[..., r:]
    rot = rotate_pairs(x_rot) if interleaved else rotate_half(x_rot)
    return torch.cat([x_rot * cos + rot * sin, x_pass], dim=-1)


def vision_cos_sin(hw: torch.Tensor, head_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """hw [N, 2] patch (row, col) -> fp32 cos, sin [N, head_dim] of the axial 2D rotary."""
    freqs = hw[..., None].float() * inv_freq(head_dim // 2, theta, hw.device)  # [N, 2, head_dim/4]
    freqs = freqs.flatten(1)  # [h freqs | w freqs]
    freqs = torch.cat([freqs, freqs], dim=-1)
    return freqs.cos(), freqs.sin()


def apply_vision_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [N, H, D] rotated in fp32 (NeoX, full head), returned in its own dtype."""
    dtype = x.dtype
    x = x.float()
    return (x * cos[:, None] + rotate_half(x) * sin[:, None]).to(dtype)
