"""Token types and 3D rotary position ids (the reference's `get_rope_index`).

Text tokens advance all three axes together. A run of image-placeholder tokens (an image, or one 2-frame slice
of a video) gets (pos + t, pos + row, pos + col) over its merged grid in row-major order, then pos advances by
max(rows, cols). Video slices are told apart from images by lying between the video begin/end tokens.
"""

from __future__ import annotations

import torch

from glmv.errors import InputError

TEXT, IMAGE, VIDEO = 0, 1, 2


def token_types(input_ids: torch.Tensor, image_token_id: int, video_start_id: int, video_end_id: int) -> torch.Tensor:
    """input_ids [B, L] -> [B, L] with TEXT / IMAGE / VIDEO per token."""
    inside_video = (input_ids == video_start_id).cumsum(-1) - (input_ids == video_end_id).cumsum(-1) > 0
    is_image = input_ids == image_token_id
    return torch.where(is_image, torch.where(inside_video, VIDEO, IMAGE), TEXT)


def _runs(types: list[int]) -> list[tuple[int, int, int]]:
    """[0,0,1,1,0] -> [(0, 0, 2), (1, 2, 4), (0, 4, 5)] as (type, start, end)."""
    runs, start = [], 0
    for i in range(1, len(types) + 1):
        if i == len(types) or types[i] != types[start]:
            runs.append((types[start], start, i))
            start = i
    return runs


def rope_index(
    types: torch.Tensor,
    image_grid_thw: torch.Tensor | None,
    video_grid_thw: torch.Tensor | None,
    attention_mask: torch.Tensor | None,
    merge: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """types [B, L] -> (position_ids [3, B, L] (0 at padding), rope_deltas [B]).

    Grids are consumed in order across the batch: images from image_grid_thw, and each video's t slices as t
    separate (1, h, w) grids. rope_delta = max position + 1 - number of real tokens; a token decoded at real index
    n gets position n + delta on all three axes.
    """
    b, n = types.shape
    device = types.device
    if image_grid_thw is None and video_grid_thw is None and not bool(types.any()):  # text only: 1D positions
        pos = attention_mask.long().cumsum(-1) - 1 if attention_mask is not None else torch.arange(n, device=device).expand(b, n)
        pos = pos.clamp(min=0)
        return pos[None].expand(3, -1, -1).contiguous(), torch.zeros(b, dtype=torch.long, device=device)
    grids = {IMAGE: [], VIDEO: []}
    if image_grid_thw is not None:
        grids[IMAGE] = [tuple(g) for g in image_grid_thw.tolist()]
    if video_grid_thw is not None:
        grids[VIDEO] = [(1, h, w) for t, h, w in video_grid_thw.tolist() for _ in range(t)]
    used = {IMAGE: 0, VIDEO: 0}
    position_ids = torch.zeros(3, b, n, dtype=torch.long, device=device)
    deltas = torch.zeros(b, dtype=torch.long, device=device)
    for row in range(b):
        keep = attention_mask[row].bool() if attention_mask is not None else torch.ones(n, dtype=torch.bool, device=device)
        pieces, pos = [], 0
        for kind, start, end in _runs(types[row][keep].tolist()):
            length = end - start
            if kind == TEXT:
                pieces.append(torch.arange(pos, pos + length, device=device).expand(3, -1))
                pos += length
                continue
            name = "image" if kind == IMAGE else "video frame"
            if used[kind] >= len(grids[kind]):
                raise InputError(f"the prompt has more {name} placeholder runs than {name} grids were given")
            t, h, w = grids[kind][used[kind]]
            used[kind] += 1
            gh, gw = h // merge, w // merge
            if length != t * gh * gw:
                raise InputError(f"{name} placeholder run of {length} tokens does not match its grid {t}x{h}x{w}")
            tt, hh, ww = torch.meshgrid(
                torch.arange(t, device=device), torch.arange(gh, device=device), torch.arange(gw, device=device), indexing="ij"
            )
            pieces.append(torch.stack([tt.flatten(), hh.flatten(), ww.flatten()]) + pos)
            pos += max(gh, gw)
        positions = torch.cat(pieces, dim=1) if pieces else torch.zeros(3, 0, dtype=torch.long, device=device)
        position_ids[:, row, keep] = positions
        deltas[row] = (positions.max() + 1 - positions.shape[1]) if positions.numel() else 0
    for kind, name in ((IMAGE, "image"), (VIDEO, "video frame")):
        if used[kind] != len(grids[kind]):
            raise InputError(f"{len(grids[kind])} {name} grids were given but the prompt has {used[kind]} {name} runs")
    return position_ids, deltas


def continuation_positions(deltas: torch.Tensor, start: torch.Tensor, length: int) -> torch.Tensor:
    """Positions [3, B, length] for tokens appended after `start` [B] real tokens (rope_deltas from the prompt)."""
    pos = torch.arange(length, device=deltas.device)[None, :] + (start + deltas)[:, None]
    return pos[None].expand(3, -1, -1)
