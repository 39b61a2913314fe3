"""Hand-built token sequences for the tiny checkpoints (placeholders expanded as the processor would)."""

from __future__ import annotations

import torch

from glmv.model.positions import token_types
from glmv.testing.tiny_checkpoint import SPECIAL_IDS

IMG, VID = SPECIAL_IDS["image_token_id"], SPECIAL_IDS["video_token_id"]
IMG_START, IMG_END = SPECIAL_IDS["image_start_token_id"], SPECIAL_IDS["image_end_token_id"]
VID_START, VID_END = SPECIAL_IDS["video_start_token_id"], SPECIAL_IDS["video_end_token_id"]


def image_tokens(h: int, w: int) -> list[int]:
    """An image of an h x w patch grid: begin, h*w/4 placeholders, end."""
    return [IMG_START] + [IMG] * (h * w // 4) + [IMG_END]


def video_tokens(t: int, h: int, w: int) -> list[int]:
    """A video of t 2-frame slices: per slice an image run followed by a (single-token) timestamp."""
    out = [VID_START]
    for i in range(t):
        out += image_tokens(h, w) + [30 + i]
    return out + [VID_END]


def mm_token_types(ids: torch.Tensor) -> torch.Tensor:
    """The reference's mm_token_type_ids (0 text, 1 image, 2 video) for these ids."""
    return token_types(ids, IMG, VID_START, VID_END)


def random_text(n: int, seed: int) -> list[int]:
    """n ordinary token ids (none of them special) from a seeded generator."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(6, 200, (n,), generator=g).tolist()


def random_pixels(grids: list[tuple[int, int, int]], seed: int = 0) -> torch.Tensor:
    """Patch rows [sum t*h*w, 1176] for these grids."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(sum(t * h * w for t, h, w in grids), 1176, generator=g)
