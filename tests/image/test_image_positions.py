"""GLM-Image's position ids and decode schedule against transformers' get_rope_index and its processor's grids."""

from __future__ import annotations

import pytest
import torch

from glmv.errors import InputError
from glmv.image import decode_schedule, rope_index, target_grids
from glmv.image.tiny_checkpoint import IMAGE_END, IMAGE_START, random_text, source_image


@pytest.mark.parametrize("height,width", [(1024, 1024), (1152, 768), (768, 1152), (2048, 1024), (64, 64), (96, 64),
                                          (1000, 700), (32, 128)])
def test_target_grids_match_the_processor(height, width):
    from transformers.models.glm_image.processing_glm_image import GlmImageProcessor

    h, w, ph, pw = GlmImageProcessor._get_target_shape(None, height, width)
    for t2i in (True, False):
        expected = GlmImageProcessor._build_target_image_grid_thw(h, w, ph, pw, is_text_to_image=t2i).tolist()
        assert [list(g) for g in target_grids(height, width, t2i)] == expected


def test_target_grid_sizes_of_the_spec():
    """1024^2: 256 preview + 1024 large + 1 EOS = 1281 generated tokens; 2048^2: 4353 (spec section 0)."""
    for side, total in ((1024, 1281), (2048, 4353)):
        assert sum(h * w for _, h, w in target_grids(side, side)) + 1 == total
    with pytest.raises(InputError):
        target_grids(16, 1024)


def test_the_spec_example_schedule():
    """A 12-token prompt and a 64x64 target: preview t=12, h=12..27, w=12..27; large grid at 28; end marker 30."""
    schedule = decode_schedule(12, target_grids(64, 64))
    preview, large, end = schedule[:, :256], schedule[:, 256:260], schedule[:, 260]
    assert preview[0].unique().tolist() == [12]
    assert preview[1].unique().tolist() == list(range(12, 28)) and preview[2].unique().tolist() == list(range(12, 28))
    assert preview[:, :3].tolist() == [[12, 12, 12], [12, 12, 12], [12, 13, 14]]  # row-major
    assert large.tolist() == [[28] * 4, [28, 28, 29, 29], [28, 29, 28, 29]]
    assert end.tolist() == [30, 30, 30]


PROMPTS = {
    "text_to_image": ([random_text(12, 1) + [IMAGE_START]], [[(1, 2, 2), (1, 16, 16)]], None),
    "two_source_images": ([random_text(4, 2) + source_image(3, 5) + random_text(2, 3) + source_image(6, 2)
                           + random_text(5, 4) + [IMAGE_START]], [[(1, 3, 5), (1, 6, 2), (1, 4, 3)]], None),
    "padded_batch": ([[IMAGE_END] * 8 + random_text(3, 5) + source_image(2, 4) + random_text(2, 6) + [IMAGE_START],
                      random_text(5, 7) + source_image(4, 3) + random_text(4, 8) + [IMAGE_START]],
                     [[(1, 2, 4), (1, 3, 3)], [(1, 4, 3), (1, 2, 5)]], 8),
}


@pytest.mark.parametrize("name", PROMPTS)
def test_rope_index_matches_the_reference(prior_pair, name):
    ref, _, _ = prior_pair()
    prompts, grids, n_pad = PROMPTS[name]
    ids = torch.tensor(prompts)
    mask = None
    if n_pad:
        mask = torch.ones_like(ids)
        mask[0, :n_pad] = 0
    packed = torch.tensor([g for sample in grids for g in sample])
    per_sample = torch.tensor([len(g) for g in grids])
    expected, _ = ref.model.get_rope_index(ids, packed, per_sample, attention_mask=mask)
    got, decode = rope_index(ids, grids, mask, IMAGE_START, IMAGE_END)
    keep = mask.bool() if mask is not None else torch.ones_like(ids, dtype=torch.bool)
    assert torch.equal(got[:, keep], expected[:, keep])
    assert torch.equal(decode, ref.model._cached_decode_position_ids)


def test_rope_index_rejects_what_the_reference_would_mangle():
    ids = torch.tensor([random_text(3, 9) + source_image(2, 2) + [IMAGE_START]])
    with pytest.raises(InputError, match="needs 6"):
        rope_index(ids, [[(1, 2, 3), (1, 2, 2)]], None, IMAGE_START, IMAGE_END)
    with pytest.raises(InputError, match="only 0 grids"):
        rope_index(ids, [[]], None, IMAGE_START, IMAGE_END)
    with pytest.raises(InputError, match="batch of 1"):
        rope_index(ids, [[(1, 2, 2)], [(1, 2, 2)]], None, IMAGE_START, IMAGE_END)
