"""The prior's image encoder: a plain ViT over 16x16 patches (the checkpoint's `model.visual.*`).

Unlike GLM-V's vision tower it has LayerNorm (with bias), no rotary, no final norm and no patch merger: each patch
becomes one feature, and the VQ quantiser (vq.py) turns each feature into one visual token id. Positions come
from a learned (image_size/patch)^2 table, resampled bilinearly to every image's own grid (spec 1.1, 1.5).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from glmv.errors import InputError
from glmv.image.config import ImageVisionConfig
from glmv.model.layers import activation


class PatchEmbed(nn.Module):
    def __init__(self, cfg: ImageVisionConfig):
        super().__init__()
        self.in_channels, self.patch_size, self.dim = cfg.in_channels, cfg.patch_size, cfg.hidden_size
        self.proj = nn.Conv2d(cfg.in_channels, cfg.hidden_size, kernel_size=cfg.patch_size, stride=cfg.patch_size)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels [N, C*P*P] (the processor's patch rows) -> [N, hidden]."""
        p = self.patch_size
        x = pixels.to(self.proj.weight.dtype).view(-1, self.in_channels, p, p)  # [N, C, P, P]
        return self.proj(x).view(-1, self.dim)


class PositionTable(nn.Module):
    """The learned position table, resampled per image (`embeddings.position_embedding` in the checkpoint)."""

    def __init__(self, cfg: ImageVisionConfig):
        super().__init__()
        self.position_embedding = nn.Embedding(cfg.table_side**2, cfg.hidden_size)

    def forward(self, x: torch.Tensor, grid_thw: list[tuple[int, int, int]]) -> torch.Tensor:
        """x [N, hidden] patch embeddings of the images in `grid_thw` order (row-major per image) -> x + positions.

        Patch (row, col) of an h x w grid samples the table at its centre ((col + 0.5) / w, (row + 0.5) / h) in
        the table's [-1, 1] coordinates, bilinearly with border padding, in fp32 (the reference's grid_sample)."""
        weight = self.position_embedding.weight
        side = int(weight.shape[0] ** 0.5)
        table = weight.view(side, side, -1).permute(2, 0, 1)[None].float()  # [1, hidden, side, side]
        coords = []
        for _, h, w in grid_thw:
            rows = torch.arange(h, device=x.device, dtype=torch.float32)[:, None].expand(h, w)
            cols = torch.arange(w, device=x.device, dtype=torch.float32)[None, :].expand(h, w)
            coords.append(torch.stack([(cols + 0.5) / w * 2 - 1, (rows + 0.5) / h * 2 - 1], -1).reshape(-1, 2))
        grid = torch.cat(coords)[None, :, None, :]  # [1, N, 1, 2] as (x = col, y = row)
        pos = F.grid_sample(table, grid, mode="bilinear", align_corners=False, padding_mode="border")  # [1, hid, N, 1]
        return x + pos[0, :, :, 0].t().to(weight.dtype)


class VisionAttention(nn.Module):
    def __init__(self, cfg: ImageVisionConfig):
        super().__init__()
        self.heads, self.head_dim = cfg.num_heads, cfg.head_dim
        self.qkv = nn.Linear(cfg.hidden_size, 3 * cfg.hidden_size, bias=cfg.attention_bias)
        self.proj = nn.Linear(cfg.hidden_size, cfg.hidden_size, bias=cfg.attention_bias)

    def forward(self, x: torch.Tensor, lengths: list[int]) -> torch.Tensor:
        """x [N, hidden]: full bidirectional attention inside each image (its `lengths` patches), none across."""
        n = x.shape[0]
        q, k, v = self.qkv(x).view(n, 3, self.heads, self.head_dim).permute(1, 2, 0, 3)  # each [H, N, D]
        outs = [F.scaled_dot_product_attention(qi[None], ki[None], vi[None])[0]  # [H, n_i, D]
                for qi, ki, vi in zip(q.split(lengths, 1), k.split(lengths, 1), v.split(lengths, 1))]
        return self.proj(torch.cat(outs, 1).transpose(0, 1).reshape(n, -1))


class VisionMLP(nn.Module):
    def __init__(self, cfg: ImageVisionConfig):
        super().__init__()
        self.fc1 = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.fc2 = nn.Linear(cfg.intermediate_size, cfg.hidden_size)
        self.act = activation(cfg.hidden_act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class VisionBlock(nn.Module):
    def __init__(self, cfg: ImageVisionConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.attn = VisionAttention(cfg)
        self.norm2 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.mlp = VisionMLP(cfg)

    def forward(self, x: torch.Tensor, lengths: list[int]) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), lengths)
        return x + self.mlp(self.norm2(x))


class VisionEncoder(nn.Module):
    def __init__(self, cfg: ImageVisionConfig):
        super().__init__()
        self.cfg = cfg
        self.embeddings = PositionTable(cfg)
        self.patch_embed = PatchEmbed(cfg)
        self.blocks = nn.ModuleList(VisionBlock(cfg) for _ in range(cfg.depth))

    def forward(self, pixel_values: torch.Tensor, grid_thw: torch.Tensor) -> torch.Tensor:
        """pixel_values [sum h*w, C*P*P], grid_thw [images, 3] with t = 1 -> features [sum h*w, hidden]."""
        grids = [tuple(g) for g in grid_thw.tolist()]
        if any(t != 1 for t, _, _ in grids):
            raise InputError(f"GLM-Image source image grids have t = 1 (one frame), got {grids}; build pixel_values "
                             "with temporal_patch_size 1")
        lengths = [h * w for _, h, w in grids]
        want = self.cfg.in_channels * self.cfg.patch_size**2
        if pixel_values.dim() != 2 or pixel_values.shape != (sum(lengths), want):
            raise InputError(f"pixel_values must be [{sum(lengths)}, {want}] (one {self.cfg.patch_size}px patch row "
                             f"per grid cell of {grids}), got {list(pixel_values.shape)}")
        x = self.embeddings(self.patch_embed(pixel_values), grids)
        for block in self.blocks:
            x = block(x, lengths)
        return x
