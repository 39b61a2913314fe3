"""glmv's GLM-Image prior against transformers' GlmImageForConditionalGeneration on tiny random checkpoints, fp32,
max abs logit difference <= 1e-4: text-only prompts, text-to-image prompts and every generation step of the
preview-then-large grid schedule, image-to-image prompts (the source image's VQ ids equal), batches with left
padding, and the KV-cached decode against the full forward."""

from __future__ import annotations

import pytest
import torch

from glmv.errors import InputError
from glmv.image import step_positions, target_grids
from glmv.image.tiny_checkpoint import IMAGE_END, IMAGE_START, random_patches, random_text, source_image

TOL = 1e-4
# head_dim from hidden/heads (as the released config), and an explicit head_dim that differs from it
CONFIGS = {"default": {}, "head_dim": {"text": {"head_dim": 24, "rope_parameters": {
    "rope_type": "default", "rope_theta": 500.0, "partial_rotary_factor": 0.5, "mrope_section": [2, 2, 2]}}}}


def assert_close(expected: torch.Tensor, got: torch.Tensor) -> float:
    diff = (expected - got).abs().max().item()
    assert diff <= TOL, f"max abs diff {diff}"
    assert expected.abs().max() > 0.1  # a meaningful signal, not two zero tensors
    return diff


def t2i_prompt(n_text: int, seed: int) -> list[int]:
    """A text-to-image prompt: text (its `<sop>h w<eop>` grid text is ordinary tokens here), then the BOS."""
    return random_text(n_text, seed) + [IMAGE_START]


def generate(ref, ids, mask=None, **kw) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference's greedy generation through the whole schedule: (new tokens [B, N+1], raw logits [B, N+1, V])."""
    grids = kw["image_grid_thw"]
    per_sample = grids if kw.get("images_per_sample") is None else grids[: int(kw["images_per_sample"][0])]
    n_sources = int((ids[0][mask[0].bool()] if mask is not None else ids[0]).eq(IMAGE_END).sum())
    steps = sum(h * w for _, h, w in per_sample[n_sources:].tolist()) + 1
    # Always an explicit mask, as the processor gives one: without it generate() takes every token equal to the
    # pad id (= the image-end id, spec 1.2) for padding, the source images' end tokens included.
    mask = torch.ones_like(ids) if mask is None else mask
    with torch.no_grad():
        out = ref.generate(input_ids=ids, attention_mask=mask, max_new_tokens=steps, min_new_tokens=steps,
                           do_sample=False, output_logits=True, return_dict_in_generate=True, **kw)
    return out.sequences[:, ids.shape[1] :], torch.stack(out.logits, 1)


def cached_decode(ours, ids, tokens, mask=None, chunk=1, **kw) -> torch.Tensor:
    """glmv's logits [B, N+1, V] for the prompt's last token and each fed-back token, through its KV cache: prefill
    the prompt, then feed `tokens` [B, N] `chunk` at a time at their scheduled positions."""
    b, n = tokens.shape
    cache = ours.new_cache(b, ids.shape[1] + n)
    with torch.no_grad():
        out = ours(ids, attention_mask=mask, cache=cache, **kw)
        logits, decode = [out.logits[:, -1:]], out.decode_positions
        for k in range(0, n, chunk):
            step = tokens[:, k : k + chunk]
            if mask is not None:
                mask = torch.cat([mask, torch.ones_like(step)], 1)
            logits.append(ours(step, attention_mask=mask, position_ids=step_positions(decode, k, step.shape[1]),
                               cache=cache).logits)
    return torch.cat(logits, 1)


@pytest.mark.parametrize("variant", CONFIGS)
def test_text_only(prior_pair, variant):
    ref, ours, _ = prior_pair(**CONFIGS[variant])
    ids = torch.tensor([random_text(37, 1)])
    with torch.no_grad():
        assert_close(ref(input_ids=ids).logits, ours(ids).logits)


@pytest.mark.parametrize("variant", CONFIGS)
def test_text_to_image_prompt(prior_pair, variant):
    ref, ours, _ = prior_pair(**CONFIGS[variant])
    ids, grids = torch.tensor([t2i_prompt(21, 2)]), torch.tensor(target_grids(96, 64))
    with torch.no_grad():
        expected = ref(input_ids=ids, image_grid_thw=grids).logits
        out = ours(ids, image_grid_thw=grids)
    assert_close(expected, out.logits)
    assert torch.equal(out.decode_positions, ref.model._cached_decode_position_ids)


@pytest.mark.parametrize("variant", CONFIGS)
def test_text_to_image_generation_follows_the_grid_schedule(prior_pair, variant):
    """Every step of a whole text-to-image generation (19x13 preview, then the 3x2 large grid, then EOS): the
    reference's logits equal glmv's full forward over prompt + generated tokens at the scheduled positions, and
    glmv's KV-cached decode, one token and several tokens at a time."""
    ref, ours, _ = prior_pair(**CONFIGS[variant])
    grids = torch.tensor(target_grids(96, 64))
    assert grids.tolist() == [[1, 3, 2], [1, 19, 13]]
    ids = torch.tensor([t2i_prompt(15, 3)])
    tokens, expected = generate(ref, ids, image_grid_thw=grids)
    assert tokens.shape[1] == 19 * 13 + 3 * 2 + 1
    fed = tokens[:, :-1]  # the last token (EOS's slot) is never fed back
    with torch.no_grad():
        prompt = ours(ids, image_grid_thw=grids)
        positions = torch.cat([prompt.position_ids, step_positions(prompt.decode_positions, 0, fed.shape[1])], 2)
        full = ours(torch.cat([ids, fed], 1), position_ids=positions).logits
    assert_close(expected, full[:, ids.shape[1] - 1 :])
    assert_close(expected, cached_decode(ours, ids, fed, image_grid_thw=grids))
    assert_close(expected, cached_decode(ours, ids, fed, chunk=7, image_grid_thw=grids))


def test_image_to_image_prompt_and_vq_ids(prior_pair):
    """A source image of 4x6 patches (its own size, not the position table's 8x8) in the prompt: glmv's VQ ids equal
    the reference's, and so do the logits over the prompt with those ids in place of the placeholders."""
    ref, ours, _ = prior_pair()
    source = (1, 4, 6)
    ids = torch.tensor([random_text(5, 4) + source_image(4, 6) + random_text(9, 5) + [IMAGE_START]])
    grids, pv = torch.tensor([source, *target_grids(64, 96, text_to_image=False)]), random_patches([source], 1)
    with torch.no_grad():
        feats = torch.cat(ref.model.get_image_features(pv, grids[:1]).pooler_output)
        expected_ids = ref.model.get_image_tokens(feats, grids[:1])
        expected = ref(input_ids=ids, pixel_values=pv, image_grid_thw=grids).logits
        out = ours(ids, pixel_values=pv, image_grid_thw=grids)
        our_feats = ours.visual(pv, grids[:1])
    assert_close(feats, our_feats)  # the ViT's features themselves, before the (discrete) quantiser
    assert torch.equal(out.image_ids[0], expected_ids)
    assert len(set(expected_ids.tolist())) > 4  # the ids carry the image, not one code everywhere
    assert_close(expected, out.logits)
    assert torch.equal(out.decode_positions, ref.model._cached_decode_position_ids)
    with torch.no_grad():  # the ids alone (e.g. cached from an earlier request) give the same logits
        assert torch.equal(ours(ids, image_grid_thw=grids, image_ids=out.image_ids).logits, out.logits)


def test_image_to_image_generation(prior_pair):
    ref, ours, _ = prior_pair()
    source = (1, 5, 3)
    ids = torch.tensor([random_text(6, 6) + source_image(5, 3) + random_text(4, 7) + [IMAGE_START]])
    grids, pv = torch.tensor([source, (1, 2, 4)]), random_patches([source], 2)
    tokens, expected = generate(ref, ids, pixel_values=pv, image_grid_thw=grids)
    assert tokens.shape[1] == 2 * 4 + 1
    assert_close(expected, cached_decode(ours, ids, tokens[:, :-1], pixel_values=pv, image_grid_thw=grids))


def left_pad(prompts: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Left padding with the image-end id, the GLM-Image tokenizer's pad (spec 1.2)."""
    n = max(map(len, prompts))
    ids = torch.tensor([[IMAGE_END] * (n - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (n - len(p)) + [1] * len(p) for p in prompts])
    return ids, mask


def test_text_to_image_batch_with_left_padding(prior_pair):
    ref, ours, _ = prior_pair()
    ids, mask = left_pad([t2i_prompt(8, 8), t2i_prompt(17, 9)])
    grids = torch.tensor(target_grids(64, 64) * 2)  # 16x16 preview and 2x2 large grid per prompt
    per_sample = torch.tensor([2, 2])
    tokens, expected = generate(ref, ids, mask, image_grid_thw=grids, images_per_sample=per_sample)
    got = cached_decode(ours, ids, tokens[:, :-1], mask.clone(), chunk=5, image_grid_thw=grids,
                        images_per_sample=per_sample)
    assert_close(expected, got)


def test_image_to_image_batch_with_left_padding(prior_pair):
    """Two prompts with source images of different sizes (so one is padded, with the image-end id): each prompt's
    source grid is taken from its own grid list, the padding is not counted as an image end."""
    ref, ours, _ = prior_pair()
    sources = [(1, 4, 6), (1, 2, 3)]
    ids, mask = left_pad([random_text(3, 10) + source_image(4, 6) + random_text(4, 11) + [IMAGE_START],
                          random_text(2, 12) + source_image(2, 3) + random_text(3, 13) + [IMAGE_START]])
    grids = torch.tensor([sources[0], (1, 2, 2), sources[1], (1, 3, 1)])
    per_sample, pv = torch.tensor([2, 2]), random_patches(sources, 3)
    with torch.no_grad():
        expected = ref(input_ids=ids, attention_mask=mask, pixel_values=pv, image_grid_thw=grids,
                       images_per_sample=per_sample).logits
        out = ours(ids, attention_mask=mask, pixel_values=pv, image_grid_thw=grids, images_per_sample=per_sample)
    keep = mask.bool()  # padding positions are garbage in both
    assert_close(expected[keep], out.logits[keep])
    assert torch.equal(out.decode_positions, ref.model._cached_decode_position_ids)


def test_cached_decode_equals_full_forward(prior_pair):
    """glmv alone: a chunked prefill plus decode through the KV cache gives the full forward's logits."""
    _, ours, _ = prior_pair()
    grids = torch.tensor(target_grids(128, 64))  # preview 22x11, large 4x2
    ids = torch.tensor([t2i_prompt(30, 14)])
    g = torch.Generator().manual_seed(0)
    fed = torch.randint(0, 128, (1, 22 * 11 + 8), generator=g)
    with torch.no_grad():
        prompt = ours(ids, image_grid_thw=grids)
        prompt_positions = prompt.position_ids
        all_positions = torch.cat([prompt_positions, step_positions(prompt.decode_positions, 0, fed.shape[1])], 2)
        full = ours(torch.cat([ids, fed], 1), position_ids=all_positions).logits
        cache = ours.new_cache(1, ids.shape[1] + fed.shape[1])
        ours(ids[:, :12], position_ids=prompt_positions[:, :, :12], cache=cache)  # chunked prefill
        first = ours(ids[:, 12:], position_ids=prompt_positions[:, :, 12:], cache=cache).logits
        rest = [ours(fed[:, k : k + 1], position_ids=step_positions(prompt.decode_positions, k), cache=cache).logits
                for k in range(fed.shape[1])]
    cached = torch.cat([first, *rest], 1)
    diff = (full[:, 12:] - cached).abs().max().item()
    assert diff <= 1e-5, diff


def test_bad_inputs_are_input_errors(prior_pair):
    _, ours, _ = prior_pair()
    grids = torch.tensor([(1, 2, 2), (1, 3, 2)])
    ids = torch.tensor([random_text(3, 15) + source_image(2, 2) + [IMAGE_START]])
    with pytest.raises(InputError, match="placeholders"):  # 4 placeholders, 6 ids
        ours(ids, image_grid_thw=grids, image_ids=[torch.zeros(6, dtype=torch.long)])
    with pytest.raises(InputError, match="needs 6"):  # the source grid does not fit its placeholders
        ours(ids, image_grid_thw=torch.tensor([(1, 3, 2), (1, 3, 2)]), image_ids=[torch.zeros(4, dtype=torch.long)])
    with pytest.raises(InputError, match="pixel_values must be"):
        ours(ids, pixel_values=torch.zeros(4, 5), image_grid_thw=grids)
    decode = ours(ids, image_grid_thw=grids, image_ids=[torch.zeros(4, dtype=torch.long)]).decode_positions
    assert decode.shape == (1, 3, 7)
    with pytest.raises(InputError, match="past the decode schedule"):
        step_positions(decode, 6, 2)
    cache = ours.new_cache(1, 20)
    ours(ids[:, :3], cache=cache)
    with pytest.raises(InputError, match="position_ids"):
        ours(ids[:, 3:], cache=cache)
