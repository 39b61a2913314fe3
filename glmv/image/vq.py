"""The VQ quantiser: ViT features -> visual token ids (the checkpoint's `model.vqmodel.*`).

GLM-Image's "VQ model" has no encoder or decoder of its own (the ViT is the encoder): a 1x1 `quant_conv` maps each
feature to the codebook's width, and each position takes the id of the nearest codebook vector after both are
L2-normalised (cosine nearest). `post_quant_conv` is in the checkpoint but only a decoder would use it; it is
loaded so that the weights match, and never run. The ids are the source image's tokens at 32 px per token.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from glmv.image.config import VQConfig


class Codebook(nn.Module):
    def __init__(self, cfg: VQConfig):
        super().__init__()
        self.embedding = nn.Embedding(cfg.num_embeddings, cfg.embed_dim)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """z [N, embed_dim] -> ids [N] of the nearest codebook vectors by cosine distance."""
        z = F.normalize(z, p=2, dim=-1)
        e = F.normalize(self.embedding.weight, p=2, dim=-1)  # [K, embed_dim]
        # |z - e|^2 = |z|^2 + |e|^2 - 2 z.e, summed in the reference's order: ids must match it exactly, and a
        # near tie could flip under another summation order.
        distances = z.pow(2).sum(1, keepdim=True) + e.pow(2).sum(1) - 2 * torch.einsum("bd,dn->bn", z, e.t())
        return distances.argmin(1)


class VQModel(nn.Module):
    def __init__(self, cfg: VQConfig):
        super().__init__()
        self.quantize = Codebook(cfg)
        self.quant_conv = nn.Conv2d(cfg.latent_channels, cfg.embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(cfg.embed_dim, cfg.latent_channels, 1)

    def encode(self, features: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """features [h*w, latent_channels] of one image, row-major -> token ids [h*w], row-major."""
        x = features.view(1, h, w, -1).permute(0, 3, 1, 2)  # [1, C, h, w]
        z = self.quant_conv(x).permute(0, 2, 3, 1).reshape(h * w, -1)  # [h*w, embed_dim]
        return self.quantize(z)
