"""split_rows: a rank's share of a collated batch carries exactly its rows' images and videos, in order."""

from __future__ import annotations

import torch

from glmv.distributed.trainer import split_rows
from glmv.model.positions import IMAGE, TEXT, VIDEO


def test_split_rows_keeps_each_rows_media():
    # rows: [image 2x4 (2 tokens)], [text only], [video 2x(2x2) (2 tokens)], [image 2x2 + image 2x4 (1 + 2 tokens)]
    types = torch.full((4, 6), TEXT)
    types[0, 1:3] = IMAGE
    types[2, 1:3] = VIDEO
    types[3, 0:3] = IMAGE
    grids = torch.tensor([(1, 2, 4), (1, 2, 2), (1, 2, 4)])
    videos = torch.tensor([(2, 2, 2)])
    batch = dict(input_ids=torch.arange(24).view(4, 6), labels=torch.arange(24).view(4, 6),
                 attention_mask=torch.ones(4, 6, dtype=torch.long),
                 pixel_values=torch.arange(8 + 4 + 8)[:, None].float(), image_grid_thw=grids,
                 pixel_values_videos=100 + torch.arange(8)[:, None].float(), video_grid_thw=videos)
    first = split_rows(batch, types, 0, 2, merge=4)
    assert torch.equal(first["input_ids"], batch["input_ids"][:2])
    assert torch.equal(first["image_grid_thw"], grids[:1])
    assert torch.equal(first["pixel_values"], batch["pixel_values"][:8])
    assert first["pixel_values_videos"] is None and first["video_grid_thw"] is None
    second = split_rows(batch, types, 1, 2, merge=4)
    assert torch.equal(second["labels"], batch["labels"][2:])
    assert torch.equal(second["image_grid_thw"], grids[1:])
    assert torch.equal(second["pixel_values"], batch["pixel_values"][8:])
    assert torch.equal(second["video_grid_thw"], videos)
    assert torch.equal(second["pixel_values_videos"], batch["pixel_values_videos"])
    # four ranks: row 1 has no media at all
    third = split_rows(batch, types, 1, 4, merge=4)
    assert third["pixel_values"] is None and third["pixel_values_videos"] is None
    assert third["input_ids"].shape == (1, 6)
