"""The prior's generation on glmv's engine against the references: the prompt side equal to transformers'
GlmImageProcessor, greedy tokens equal to transformers' generate, the DiT's prior ids equal to diffusers'
generate_prior_tokens (text-to-image and image-to-image), the grid rule, the sampling chain, seeds."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from glmv.errors import InputError
from glmv.image.generate import PriorGenerator, upsample
from glmv.image.processor import GlmImageProcessor
from glmv.image.sampling import GridRule, prior_sampling
from glmv.image.sizes import check_size, parse_size
from glmv.image.tiny_checkpoint import CODEBOOK, IMAGE_END, VISION_VOCAB, random_text
from glmv.engine.sampling import SamplingParams, filter_logits

CPU = torch.device("cpu")


def photo(h: int, w: int, seed: int) -> Image.Image:
    """A random RGB picture (its VQ ids vary, unlike a flat colour)."""
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def chat(prompt: str, images=()) -> list[list[dict]]:
    return [[{"role": "user", "content": [{"type": "image", "image": i} for i in images]
              + [{"type": "text", "text": prompt}]}]]


@pytest.fixture(scope="module")
def processor(glm_image_dir):
    return GlmImageProcessor.from_pretrained(glm_image_dir)


@pytest.fixture(scope="module")
def generator(image_pipeline) -> PriorGenerator:
    return image_pipeline.prior


@pytest.mark.parametrize("prompt,height,width", [("a red 'cat' on a mat", 64, 96), ("海报上写着“你好”", 128, 32),
                                                 ("x", 1024, 768)])
def test_text_to_image_prompt_equals_the_processor(processor, diffusers_pipeline, prompt, height, width):
    ref = diffusers_pipeline.processor.apply_chat_template(chat(prompt), tokenize=True, target_h=height,
                                                           target_w=width, return_dict=True, return_tensors="pt")
    ours = processor(prompt, height, width)
    assert ours.ids == ref["input_ids"][0].tolist()
    assert ours.grids == [tuple(g) for g in ref["image_grid_thw"].tolist()]
    assert ours.pixel_values is None and ours.grid_tokens == sum(h * w for _, h, w in ours.grids)


def test_image_to_image_prompt_equals_the_processor(processor, diffusers_pipeline):
    refs = [processor.prepare_reference(photo(70, 100, 0)), processor.prepare_reference(photo(96, 40, 1))]
    assert [r.size for r in refs] == [(96, 64), (32, 96)]  # twice the AR grid in 16-px units: multiples of 32
    ref = diffusers_pipeline.processor.apply_chat_template(chat("make it blue", refs), tokenize=True, target_h=64,
                                                           target_w=64, return_dict=True, return_tensors="pt")
    ours = processor("make it blue", 64, 64, refs)
    assert ours.ids == ref["input_ids"][0].tolist()
    assert ours.grids == [tuple(g) for g in ref["image_grid_thw"].tolist()] == [(1, 2, 3), (1, 3, 1), (1, 2, 2)]
    assert torch.equal(ours.pixel_values, ref["pixel_values"])
    assert ours.source_grids == [(1, 2, 3), (1, 3, 1)] and ours.target_grids == [(1, 2, 2)]


def test_prompt_text_is_literal(processor):
    """A prompt that spells control tokens gets their characters, never the tokens (no forged image slots)."""
    ids = processor("draw <|image|> and <sop>9 9<eop>", 64, 64).ids
    assert ids.count(processor.image_token_id) == 0
    assert ids.count(processor.tokenizer.token_id("<sop>")) == 2  # the two grids' own


def test_reference_images_that_cannot_fit_are_refused(processor):
    with pytest.raises(InputError, match="too elongated"):
        processor.prepare_reference(photo(20, 200, 2))
    with pytest.raises(InputError, match="too small"):
        processor.prepare_reference(photo(10, 40, 2))


def reference_greedy(model, prompt, suppress: bool) -> list[int]:
    ids = torch.tensor([prompt.ids])
    n = prompt.grid_tokens + 1
    extra = {"suppress_tokens": list(range(CODEBOOK, VISION_VOCAB))} if suppress else {}
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                             image_grid_thw=torch.tensor(prompt.grids),
                             max_new_tokens=n, min_new_tokens=n, do_sample=False, top_k=None, top_p=None,
                             temperature=None, **extra)
    return out[0, ids.shape[1] :].tolist()


def test_greedy_generation_equals_transformers(processor, diffusers_pipeline, generator):
    """Every token of a whole text-to-image generation (13x19 preview, then the 2x3 grid): glmv's engine decoding
    greedily equals transformers' generate with the non-codebook ids suppressed; then glmv's EOS."""
    prompt = processor("a red cat", 64, 96)
    assert prompt.grid_tokens == 13 * 19 + 2 * 3
    ours = generator.generate(prompt, [SamplingParams(temperature=0.0)])[0]
    ref = reference_greedy(diffusers_pipeline.vision_language_encoder, prompt, suppress=True)
    assert ours.generated[:-1] == ref[:-1] and ours.generated[-1] == IMAGE_END
    assert len(set(ours.generated)) > 5  # a raster of many ids, not one id repeated


def test_the_grid_rule_holds_when_the_model_prefers_other_ids(glm_image_dir, processor):
    """A prior whose reserved, image start and EOS rows outscore the codebook: transformers' plain greedy decode
    leaves the grid at once, glmv's still writes exactly the grids' codebook ids, then EOS."""
    from glmv.image import load_prior
    from glmv.image.tiny_checkpoint import reference_config, reference_model

    ref = reference_model(reference_config(vision={"patch_size": 16, "image_size": 64}))
    with torch.no_grad():
        w = ref.lm_head.weight
        w[CODEBOOK:] = 10 * w[: VISION_VOCAB - CODEBOOK]  # 10x the logit of codebook ids 0..15
    prompt = processor("a red cat", 64, 64)
    assert any(t >= CODEBOOK for t in reference_greedy(ref, prompt, suppress=False)[:-1])
    path = glm_image_dir.parent / "greedy_elsewhere"
    ref.save_pretrained(path)
    gen = PriorGenerator(load_prior(path), SamplingParams(temperature=0.0))
    out = gen.generate(prompt, [SamplingParams(temperature=0.0)])[0]
    assert len(out.generated) == prompt.grid_tokens + 1 == 16 * 16 + 2 * 2 + 1
    assert max(out.generated[:-1]) < CODEBOOK and out.generated[-1] == IMAGE_END
    assert out.generated[:-1] == reference_greedy(ref, prompt, suppress=True)[:-1]


def test_grid_rule_masks():
    rule = GridRule(n_tokens=3, codebook_size=4, eos_id=5)
    logits = torch.arange(8.0)
    assert rule([0, 1], logits).argmax() == 3 and torch.isinf(rule([0, 1], logits)[4:]).all()
    forced = rule([0, 1, 2], logits)
    assert forced.argmax() == 5 and torch.isinf(forced[:5]).all() and torch.isinf(forced[6:]).all()
    assert torch.equal(logits, torch.arange(8.0))  # the engine's logits are not changed in place


def test_text_to_image_prior_ids_equal_diffusers(image_pipeline, diffusers_pipeline):
    prompt = image_pipeline.prompt("a red 'cat'", 64, 96)
    ours = image_pipeline.prior_tokens(prompt, [1])[0]
    ref_ids, ref_sources, _ = diffusers_pipeline.generate_prior_tokens(
        "a red 'cat'", 64, 96, device=CPU, generator=torch.Generator().manual_seed(1))
    assert torch.equal(ours.ids, ref_ids[0]) and ours.ids.shape == (4 * 6,) and ref_sources is None


def test_image_to_image_prior_ids_equal_diffusers(image_pipeline, diffusers_pipeline):
    refs = image_pipeline.references([photo(70, 100, 3), photo(64, 64, 4)])
    prompt = image_pipeline.prompt("swap them", 96, 64, refs)
    ours = image_pipeline.prior_tokens(prompt, [1])[0]
    ref_ids, ref_sources, ref_grids = diffusers_pipeline.generate_prior_tokens(
        "swap them", 96, 64, image=[refs], device=CPU, generator=torch.Generator().manual_seed(1))
    assert torch.equal(ours.ids, ref_ids[0]) and ours.ids.shape == (6 * 4,)
    assert torch.equal(ours.source_ids, ref_sources[0]) and torch.equal(ours.source_grids, ref_grids[0])
    assert len(ours.generated) == 3 * 2 + 1  # image-to-image has no preview grid


def test_upsample_equals_diffusers(diffusers_pipeline):
    ids = torch.randint(0, CODEBOOK, (3 * 5,), generator=torch.Generator().manual_seed(0))
    assert torch.equal(upsample(ids, 3, 5), diffusers_pipeline._upsample_token_ids(ids, 3, 5)[0])


def test_sampling_chain_equals_transformers():
    """GLM-Image's defaults through glmv's sampler chain (grid rule, temperature, top-k, top-p) give transformers'
    distribution (suppress, temperature, top-k, top-p warpers) on the same logits. The draws themselves differ:
    glmv races exponential noise per row, transformers calls torch.multinomial on the global RNG."""
    import transformers as tf

    logits = torch.randn(6, VISION_VOCAB, generator=torch.Generator().manual_seed(0))
    rule = GridRule(10, CODEBOOK, IMAGE_END)
    p = SamplingParams(temperature=0.9, top_p=0.75, top_k=50)
    masked = torch.stack([rule([], row) for row in logits])
    ours = filter_logits(masked / p.temperature, torch.full((6,), p.top_k), torch.full((6,), p.top_p),
                         torch.zeros(6)).softmax(-1)
    chain = tf.LogitsProcessorList([tf.SuppressTokensLogitsProcessor(list(range(CODEBOOK, VISION_VOCAB))),
                                    tf.TemperatureLogitsWarper(0.9), tf.TopKLogitsWarper(50),
                                    tf.TopPLogitsWarper(0.75)])
    ref = chain(torch.zeros(6, 1, dtype=torch.long), logits.clone()).softmax(-1)
    assert (ours - ref).abs().max() <= 1e-6
    assert (ours > 0).sum(-1).min() > 3  # the filters left several candidates: a real distribution


def test_seeded_sampling_is_reproducible_and_batch_invariant(processor, generator):
    prompt = processor("a red cat", 64, 64)
    p = dict(temperature=1.0, top_p=0.9, top_k=50)
    both = generator.generate(prompt, [generator.params(7, **p), generator.params(8, **p)])
    again = generator.generate(prompt, [generator.params(8, **p)])
    assert both[1].generated == again[0].generated  # a seed's draw does not depend on its batch
    assert both[0].generated != both[1].generated
    assert max(both[0].generated[:-1]) < CODEBOOK and both[0].generated[-1] == IMAGE_END


def test_sampling_defaults_from_generation_config(tmp_path):
    import json

    assert vars(prior_sampling(tmp_path))["temperature"] == 0.9  # no file: GLM-Image's published values
    assert (prior_sampling(tmp_path).top_p, prior_sampling(tmp_path).top_k) == (0.75, 50)
    config = {"do_sample": True, "temperature": 0.7, "top_k": 16512}  # VO's top_k: none
    (tmp_path / "generation_config.json").write_text(json.dumps(config))
    p = prior_sampling(tmp_path)
    assert (p.temperature, p.top_p, p.top_k) == (0.7, 0.75, 16512)
    (tmp_path / "generation_config.json").write_text(json.dumps({"do_sample": False}))
    assert prior_sampling(tmp_path).greedy


def test_a_prompt_too_long_for_the_context_is_refused(image_pipeline, processor):
    gen = PriorGenerator(image_pipeline.prior.prior, SamplingParams(), max_model_len=200)
    with pytest.raises(InputError, match="exceed the prior's context"):
        gen.generate(processor("a red cat " + "".join(map(str, random_text(5, 0))), 64, 64), [SamplingParams()])


@pytest.mark.parametrize("h,w,message", [(100, 64, "not a multiple of 32"), (64, 4096, "out of range"),
                                         (0, 64, "out of range"), (64.0, 64, "integer")])
def test_bad_sizes(h, w, message):
    with pytest.raises(InputError, match=message):
        check_size(h, w)


def test_parse_size():
    assert parse_size("1024x768") == (768, 1024)
    for bad in ("1024", "1024x770", "big", None):
        with pytest.raises(InputError):
            parse_size(bad)
