"""The GLM-V vision tower (AIMv2-derived ViT) and its projector into the decoder's embedding space.

Input rows are patches of C x 2 (temporal) x 14 x 14 values, ordered block-major: the four patches of each
2x2 merge window are contiguous, windows in row-major order (see glmv.inputs.image). One "item" is an image or
one 2-frame temporal slice of a video; attention never crosses items.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from glmv.config import VisionConfig
from glmv.model.layers import RMSNorm, SwiGLU, activation
from glmv.model.rope import apply_vision_rotary, vision_cos_sin


def patch_coords(grid_thw: torch.Tensor, merge: int) -> torch.Tensor:
    """grid_thw [n, 3] -> [N, 2] (row, col) of every patch in block-major order, repeated t times per item."""
    coords = []
    for t, h, w in grid_thw.tolist():
        hh, ww = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        block = (h // merge, merge, w // merge, merge)
        hw = torch.stack([hh.reshape(block).transpose(1, 2).flatten(), ww.reshape(block).transpose(1, 2).flatten()], -1)
        coords.append(hw.repeat(t, 1))
    return torch.cat(coords).to(grid_thw.device)


class VisionAttention(nn.Module):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.num_heads = cfg.num_heads
        self.qkv = nn.Linear(cfg.hidden_size, 3 * cfg.hidden_size, bias=cfg.attention_bias)
        self.proj = nn.Linear(cfg.hidden_size, cfg.hidden_size, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, seqlens: list[int]) -> torch.Tensor:
        n = x.shape[0]
        q, k, v = self.qkv(x).view(n, 3, self.num_heads, -1).unbind(1)  # each [N, H, D]
        q, k = apply_vision_rotary(q, cos, sin), apply_vision_rotary(k, cos, sin)
        # Items of equal length (all frames of a video, same-size images) go through SDPA as one batch.
        outs, start = [], 0
        for length, count in _runs(seqlens):
            end = start + length * count
            qs, ks, vs = (t[start:end].view(count, length, self.num_heads, -1).transpose(1, 2) for t in (q, k, v))
            outs.append(F.scaled_dot_product_attention(qs, ks, vs).transpose(1, 2).reshape(end - start, -1))
            start = end
        return self.proj(torch.cat(outs))


def _runs(seqlens: list[int]) -> list[tuple[int, int]]:
    """[4, 4, 4, 6, 4] -> [(4, 3), (6, 1), (4, 1)]: consecutive equal lengths grouped."""
    runs: list[tuple[int, int]] = []
    for s in seqlens:
        if runs and runs[-1][0] == s:
            runs[-1] = (s, runs[-1][1] + 1)
        else:
            runs.append((s, 1))
    return runs


class VisionBlock(nn.Module):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.norm1 = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.norm2 = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.attn = VisionAttention(cfg)
        # The ViT MLP is out_hidden_size wide; intermediate_size belongs to the projector.
        self.mlp = SwiGLU(cfg.hidden_size, cfg.out_hidden_size, cfg.hidden_act)

    def forward(self, x, cos, sin, seqlens):
        x = x + self.attn(self.norm1(x), cos, sin, seqlens)
        return x + self.mlp(self.norm2(x))


class PatchMerger(nn.Module):
    """The projector: Linear -> LayerNorm -> GELU (erf) -> SwiGLU."""

    def __init__(self, dim: int, inner: int, act: str):
        super().__init__()
        self.proj = nn.Linear(dim, dim, bias=False)
        self.post_projection_norm = nn.LayerNorm(dim, eps=1e-5)
        self.gate_proj = nn.Linear(dim, inner, bias=False)
        self.up_proj = nn.Linear(dim, inner, bias=False)
        self.down_proj = nn.Linear(inner, dim, bias=False)
        self.act = activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.post_projection_norm(self.proj(x)))
        return self.down_proj(self.act(self.gate_proj(x)) * self.up_proj(x))


class PatchEmbed(nn.Module):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        k = (cfg.temporal_patch_size, cfg.patch_size, cfg.patch_size)
        self.shape = (cfg.in_channels, *k)
        self.proj = nn.Conv3d(cfg.in_channels, cfg.hidden_size, kernel_size=k, stride=k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # A stride=kernel Conv3d over one patch is a Linear over its flattened (C, T, P, P) values.
        w = self.proj.weight
        return F.linear(x.to(w.dtype), w.view(w.shape[0], -1), self.proj.bias)


class PositionEmbedding(nn.Module):
    """Learned (S x S) table, resampled bicubically to each item's patch grid and added to the patch embeddings."""

    def __init__(self, cfg: VisionConfig):
        super().__init__()
        side = cfg.image_size // cfg.patch_size
        self.position_embedding = nn.Embedding(side * side, cfg.hidden_size)

    def forward(self, x: torch.Tensor, hw: torch.Tensor, grid_hw: torch.Tensor) -> torch.Tensor:
        """x [N, C]; hw [N, 2] patch coords; grid_hw [N, 2] the (H, W) patch grid of each patch's item."""
        table = self.position_embedding.weight
        side = int(table.shape[0] ** 0.5)
        table2d = table.view(side, side, -1).permute(2, 0, 1)[None].float()  # [1, C, S, S]
        # Sample at patch centres in [-1, 1] (x = column, y = row), as the reference does.
        grid = ((hw.float() + 0.5) / grid_hw.float()) * 2 - 1
        grid = grid.flip(-1)[None, :, None, :]  # [1, N, 1, (x, y)]
        pos = F.grid_sample(table2d, grid, mode="bicubic", align_corners=False, padding_mode="border")
        return x + pos[0, :, :, 0].T.to(table.dtype).to(x.device)


class VisionTower(nn.Module):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.cfg = cfg
        self.patch_embed = PatchEmbed(cfg)
        self.post_conv_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.embeddings = PositionEmbedding(cfg)
        self.blocks = nn.ModuleList(VisionBlock(cfg) for _ in range(cfg.depth))
        self.post_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        m = cfg.spatial_merge_size
        self.downsample = nn.Conv2d(cfg.hidden_size, cfg.out_hidden_size, kernel_size=m, stride=m)
        self.merger = PatchMerger(cfg.out_hidden_size, cfg.intermediate_size, cfg.hidden_act)

    @property
    def dtype(self) -> torch.dtype:
        return self.patch_embed.proj.weight.dtype

    def forward(self, pixel_values: torch.Tensor, grid_thw: torch.Tensor) -> torch.Tensor:
        """pixel_values [N, C*T*P*P], grid_thw [n, 3] -> [N / merge^2, out_hidden_size] decoder embeddings."""
        cfg, m = self.cfg, self.cfg.spatial_merge_size
        hw = patch_coords(grid_thw, m)
        per_item = grid_thw[:, 1:].repeat_interleave(grid_thw[:, 0] * grid_thw[:, 1] * grid_thw[:, 2], dim=0)
        seqlens = (grid_thw[:, 1] * grid_thw[:, 2]).repeat_interleave(grid_thw[:, 0]).tolist()

        x = self.post_conv_layernorm(self.patch_embed(pixel_values))
        x = self.embeddings(x, hw, per_item)
        cos, sin = vision_cos_sin(hw, cfg.head_dim, cfg.rope_theta)
        for block in self.blocks:
            x = block(x, cos, sin, seqlens)
        x = self.post_layernorm(x)
        # Four consecutive rows form one 2x2 window (block-major order): fold them through the strided conv.
        x = x.view(-1, m, m, x.shape[-1]).permute(0, 3, 1, 2)
        x = self.downsample(x).view(-1, cfg.out_hidden_size)
        return self.merger(x)
