"""The vision stage's heads: linear read-outs of the image tokens the decoder will see, trained against the
dense targets of glmv.train.vision_targets and dropped after the stage.

Linear on purpose: whatever a linear head can read from a token, the decoder's first layer can read too, so the
stage leaves colour, shape, texture, object positions and letters where the LM stages find them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from glmv.train.vision_targets import COLOUR_CLASSES, LETTERS, SHAPE_CLASSES, TEXTURE_CLASSES

SPREAD_LIMIT = 0.5  # mean cosine of an image's tokens above which they are pushed apart (random init: ~0.78)


def share_divergence(logits: torch.Tensor, share: torch.Tensor) -> torch.Tensor:
    """KL divergence from the classes' area shares in each token to the head's distribution (the cross-entropy
    less the shares' own entropy: same gradient, and a perfect head logs 0), averaged over tokens weighted by
    how much of them the classes cover. Shape and texture shares cover only a token's objects: a token gets a
    say in proportion to its object, and background tokens, most of every image, none (the colour head's
    background class already says where objects are)."""
    mass = share.sum(-1)
    p = share / mass.clamp(min=1e-6)[:, None]
    kl = (torch.xlogy(p, p) - p * F.log_softmax(logits.float(), dim=-1)).sum(-1)
    return (mass * kl).sum() / mass.sum().clamp(min=1e-6)


class VisionHeads(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.colour = nn.Linear(dim, len(COLOUR_CLASSES))
        self.shape = nn.Linear(dim, len(SHAPE_CLASSES))
        self.texture = nn.Linear(dim, len(TEXTURE_CLASSES))
        self.centres = nn.Linear(dim, 1)
        self.letters = nn.Linear(dim, len(LETTERS))

    def forward(self, tokens: torch.Tensor, targets: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """tokens [T, D]: the vision tower's output for a batch of images; targets: collate_targets() of them.
        Returns the loss, and its parts with the share of images whose predicted centres add up to their count."""
        tokens = tokens.float()
        per_image = targets["tokens"].tolist()
        parts = {name: share_divergence(getattr(self, name)(tokens), targets[name])
                 for name in ("colour", "shape", "texture")}
        centres = self.centres(tokens)[:, 0]
        parts["centres"] = F.mse_loss(centres, targets["centres"])
        # An image holds a letter if some token does (multiple-instance learning): each token learns to
        # detect the letters in its own patch of the image, without knowing where the letters were drawn.
        letters = torch.stack([t.max(0).values for t in self.letters(tokens).split(per_image)])
        parts["letters"] = F.binary_cross_entropy_with_logits(letters, targets["letters"])
        # Most tokens are background, and the heads alone are served most cheaply by one shared vector with
        # small deviations where objects are: the tokens drift together (mean cosine 0.76 -> 0.99 in 20 steps,
        # measured), which is what a collapsed tower looks like to the decoder. Penalised over the whole batch,
        # each image got a vector of its own instead (across images 0.36, within one 0.92 after 50 steps), so
        # the penalty is per image (the squared norm of an image's mean unit token is the mean cosine of its
        # token pairs), and only above SPREAD_LIMIT: pushed all the way down, the cosine fell to 0.01, the
        # background tokens spread into every direction, and shape stayed at chance (docs/training.md).
        unit = F.normalize(tokens, dim=-1)
        cosine = torch.stack([u.mean(0).pow(2).sum() for u in unit.split(per_image)])
        parts["spread"] = F.relu(cosine - SPREAD_LIMIT).mean()
        loss = sum(parts.values())
        with torch.no_grad():
            counted = torch.stack([c.sum() for c in centres.split(per_image)]).round()
            wanted = torch.stack([c.sum() for c in targets["centres"].split(per_image)])
        metrics = {f"loss_{k}": round(v.item(), 4) for k, v in parts.items()}
        metrics["count_acc"] = float((counted == wanted).float().mean())
        return loss, metrics
