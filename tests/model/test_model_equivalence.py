"""glmv's model against transformers (the reference) on tiny random checkpoints, fp32, max abs diff <= 1e-4."""

from __future__ import annotations

import pytest
import torch

from glmv.testing.prompts import image_tokens, mm_token_types, video_tokens
from glmv.testing.prompts import random_pixels as pixels
from glmv.testing.prompts import random_text as text

TOL = 1e-4
MODEL_TYPES = ["glm4v", "glm4v_moe", "glm46v", "glm46v_moe"]


def reference_logits(ref, ids, mask=None, pv=None, igrid=None, pvv=None, vgrid=None):
    """The reference's logits, built through its own pieces so mixed image+video prompts work (spec §11: its
    placeholder check rejects them): its vision features, its get_rope_index, its decoder."""
    types = mm_token_types(ids)
    with torch.no_grad():
        embeds = ref.get_input_embeddings()(ids)
        if pv is not None:
            feats = torch.cat(ref.model.get_image_features(pv, igrid).pooler_output)
            embeds = embeds.masked_scatter((types == 1)[..., None], feats)
        if pvv is not None:
            feats = torch.cat(ref.model.get_video_features(pvv, vgrid).pooler_output)
            embeds = embeds.masked_scatter((types == 2)[..., None], feats)
        pos, _ = ref.model.get_rope_index(ids, types, igrid, vgrid, attention_mask=mask)
        return ref(inputs_embeds=embeds, position_ids=pos, attention_mask=mask).logits


def assert_close(ref_logits, our_logits, mask=None):
    if mask is not None:  # padding positions are garbage in both; compare real tokens only
        keep = mask.bool()
        ref_logits, our_logits = ref_logits[keep], our_logits[keep]
    diff = (ref_logits - our_logits).abs().max().item()
    assert diff <= TOL, f"max abs diff {diff}"
    assert ref_logits.abs().max() > 0.1  # a meaningful signal, not two zero tensors


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_text_only(make_pair, model_type):
    ref, ours, _ = make_pair(model_type)
    ids = torch.tensor([text(37, 1)])
    with torch.no_grad():
        assert_close(ref(input_ids=ids).logits, ours(ids).logits)


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_one_image_of_odd_size(make_pair, model_type):
    ref, ours, _ = make_pair(model_type)
    grid = [(1, 10, 6)]  # e.g. a 137x81 image resized to 140x84: a non-square grid
    ids = torch.tensor([text(5, 2) + image_tokens(10, 6) + text(7, 3)])
    pv, igrid = pixels(grid), torch.tensor(grid)
    with torch.no_grad():
        expected = ref(input_ids=ids, pixel_values=pv, image_grid_thw=igrid, mm_token_type_ids=mm_token_types(ids)).logits
        assert_close(expected, ours(ids, pixel_values=pv, image_grid_thw=igrid).logits)


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_video_only(make_pair, model_type):
    ref, ours, _ = make_pair(model_type)
    grid = [(3, 4, 6)]
    ids = torch.tensor([text(4, 4) + video_tokens(3, 4, 6) + text(6, 5)])
    pvv, vgrid = pixels(grid, 1), torch.tensor(grid)
    with torch.no_grad():
        expected = ref(input_ids=ids, pixel_values_videos=pvv, video_grid_thw=vgrid, mm_token_type_ids=mm_token_types(ids)).logits
        assert_close(expected, ours(ids, pixel_values_videos=pvv, video_grid_thw=vgrid).logits)


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_two_images_and_a_video(make_pair, model_type):
    ref, ours, _ = make_pair(model_type)
    igrids, vgrids = [(1, 4, 4), (1, 6, 8)], [(2, 4, 6)]
    ids = torch.tensor([
        text(3, 6) + image_tokens(4, 4) + text(2, 7) + video_tokens(2, 4, 6) + text(3, 8) + image_tokens(6, 8) + text(4, 9)
    ])
    pv, pvv = pixels(igrids, 2), pixels(vgrids, 3)
    igrid, vgrid = torch.tensor(igrids), torch.tensor(vgrids)
    expected = reference_logits(ref, ids, pv=pv, igrid=igrid, pvv=pvv, vgrid=vgrid)
    with torch.no_grad():
        got = ours(ids, pixel_values=pv, image_grid_thw=igrid, pixel_values_videos=pvv, video_grid_thw=vgrid).logits
    assert_close(expected, got)


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_padded_batch_of_two(make_pair, model_type):
    ref, ours, _ = make_pair(model_type)
    a = text(4, 10) + image_tokens(4, 6) + text(9, 11)
    b = text(6, 12) + image_tokens(6, 4) + text(2, 13) + image_tokens(4, 4) + text(3, 14)
    n = max(len(a), len(b))
    ids = torch.tensor([[0] * (n - len(a)) + a, [0] * (n - len(b)) + b])  # left padding, pad id 0
    mask = torch.tensor([[0] * (n - len(a)) + [1] * len(a), [0] * (n - len(b)) + [1] * len(b)])
    igrids = [(1, 4, 6), (1, 6, 4), (1, 4, 4)]
    pv, igrid = pixels(igrids, 4), torch.tensor(igrids)
    expected = reference_logits(ref, ids, mask=mask, pv=pv, igrid=igrid)
    with torch.no_grad():
        got = ours(ids, attention_mask=mask, pixel_values=pv, image_grid_thw=igrid).logits
    assert_close(expected, got, mask)


MOE_VARIANTS = {
    "grouped_topk": dict(n_routed_experts=8, n_group=4, topk_group=2, num_experts_per_tok=3),
    "unnormalised_scaled": dict(norm_topk_prob=False, routed_scaling_factor=2.5),
    "several_dense_layers": dict(first_k_dense_replace=2, num_hidden_layers=4, n_shared_experts=2),
}


@pytest.mark.parametrize("variant", sorted(MOE_VARIANTS))
def test_moe_router_variants(make_pair, variant):
    ref, ours, _ = make_pair("glm4v_moe", text=MOE_VARIANTS[variant])
    ids = torch.tensor([text(3, 15) + image_tokens(4, 4) + text(40, 16)])
    pv, igrid = pixels([(1, 4, 4)], 5), torch.tensor([(1, 4, 4)])
    with torch.no_grad():
        expected = ref(input_ids=ids, pixel_values=pv, image_grid_thw=igrid, mm_token_type_ids=mm_token_types(ids)).logits
        assert_close(expected, ours(ids, pixel_values=pv, image_grid_thw=igrid).logits)


@pytest.mark.parametrize("model_type", ["glm4v", "glm4v_moe"])
def test_vision_tower_outputs(make_pair, model_type):
    ref, ours, _ = make_pair(model_type)
    grids = [(1, 6, 10), (1, 2, 2), (1, 8, 4)]
    pv, grid = pixels(grids, 6), torch.tensor(grids)
    with torch.no_grad():
        expected = ref.model.visual(pv, grid_thw=grid).pooler_output
        got = ours.visual(pv, grid)
    assert_close(expected, got)


def test_rope_index_matches_reference(make_pair):
    ref, ours, _ = make_pair("glm4v_moe")
    from glmv.model.positions import rope_index

    ids = torch.tensor([text(2, 17) + video_tokens(2, 4, 6) + text(2, 18) + image_tokens(6, 8) + text(3, 19)])
    igrid, vgrid = torch.tensor([(1, 6, 8)]), torch.tensor([(2, 4, 6)])
    types = mm_token_types(ids)
    expected, expected_delta = ref.model.get_rope_index(ids, types, igrid, vgrid)
    got, delta = rope_index(types, igrid, vgrid, None, 2)
    assert torch.equal(expected, got)
    assert delta.tolist() == expected_delta.flatten().tolist()
