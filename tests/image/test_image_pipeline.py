"""glmv.ImagePipeline end to end against diffusers' GlmImagePipeline on the same tiny checkpoint (its prior
deterministic, so both pipelines' prior tokens agree): the images are equal pixel for pixel, text-to-image and
image-to-image with two references; seeds, progress, cancellation, dtype and offload rules."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from glmv.errors import ConfigError, InputError
from glmv.image.generate import GenerationCancelled

STEPS, GUIDANCE = 3, 2.0


def photo(h: int, w: int, seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def diffusers_image(pipe, prompt: str, height: int, width: int, seed: int, **kw) -> np.ndarray:
    out = pipe(prompt, height=height, width=width, num_inference_steps=STEPS, guidance_scale=GUIDANCE,
               generator=torch.Generator().manual_seed(seed), **kw)
    return np.asarray(out.images[0])


def test_text_to_image_equals_diffusers(image_pipeline, diffusers_pipeline):
    ours = image_pipeline.generate("a poster that says 'glmv'", 64, 96, steps=STEPS, guidance=GUIDANCE, seed=5)
    assert len(ours) == 1 and ours[0].size == (96, 64)
    expected = diffusers_image(diffusers_pipeline, "a poster that says 'glmv'", 64, 96, 5)
    assert np.array_equal(np.asarray(ours[0]), expected)
    assert expected.std() > 5  # a picture, not a flat field


def test_image_to_image_with_two_references_equals_diffusers(image_pipeline, diffusers_pipeline):
    """References of sizes the DiT would mis-count (70x100, 90x60 px) are resized by glmv to sizes both stages
    agree on; diffusers gets those resized references."""
    sources = [photo(70, 100, 1), photo(90, 60, 2)]
    ours = image_pipeline.generate("put 'A' on it", 64, 64, steps=STEPS, guidance=GUIDANCE, seed=9, images=sources)[0]
    refs = image_pipeline.references(sources)
    expected = diffusers_image(diffusers_pipeline, "put 'A' on it", 64, 64, 9, image=refs)
    assert np.array_equal(np.asarray(ours), expected)
    one_ref = image_pipeline.generate("put 'A' on it", 64, 64, steps=STEPS, guidance=GUIDANCE, seed=9,
                                      images=sources[:1])[0]
    assert not np.array_equal(np.asarray(one_ref), expected)  # the second reference counts


def test_seeds_make_images_reproducible(image_pipeline):
    """Sampled prior (top_k 50 instead of the checkpoint's 1): a seed gives the same image again; image k of a call
    with seed s is the image of seed s + k; other seeds give other images."""
    kw = dict(steps=2, guidance=GUIDANCE, top_k=50, temperature=1.0)
    two = image_pipeline.generate("a cat", 32, 64, seed=3, n=2, **kw)
    again = image_pipeline.generate("a cat", 32, 64, seed=4, **kw)[0]
    assert np.array_equal(np.asarray(two[1]), np.asarray(again)) and again.info["seed"] == "4"
    assert not np.array_equal(np.asarray(two[0]), np.asarray(two[1]))
    drawn = image_pipeline.generate("a cat", 32, 64, steps=1)[0]
    assert int(drawn.info["seed"]) >= 0  # a random seed, reported with the image


def test_progress_reports_both_stages(image_pipeline):
    seen = []
    image_pipeline.generate("a cat", 32, 32, steps=2, seed=1, progress=lambda *event: seen.append(event))
    prior = [e for e in seen if e[0] == "prior"]
    assert prior[-1] == ("prior", 16 * 16 + 1 + 1, 16 * 16 + 1 + 1)  # preview 16x16, large 1x1, EOS
    assert [e for e in seen if e[0] == "diffusion"] == [("diffusion", 1, 2), ("diffusion", 2, 2)]


@pytest.mark.parametrize("stage,after", [("prior", 10), ("diffusion", 1)])
def test_cancellation_stops_either_stage(image_pipeline, stage, after):
    counts = {"prior": 0, "diffusion": 0}

    def progress(name, done, total):
        counts[name] = done

    with pytest.raises(GenerationCancelled):
        image_pipeline.generate("a cat", 32, 32, steps=3, seed=1, progress=progress,
                                cancelled=lambda: counts[stage] >= after)
    assert counts[stage] == after and (stage == "prior") == (counts["diffusion"] == 0)
    assert not image_pipeline.prior.engine.has_work()  # the cancelled sequences left the engine
    image_pipeline.generate("a cat", 32, 32, steps=1, seed=1)  # and the pipeline still works


@pytest.mark.parametrize("kw,message", [(dict(steps=0), "steps"), (dict(guidance=float("nan")), "guidance"),
                                        (dict(n=0), "n must be"), (dict(height=48), "multiple of 32"),
                                        (dict(seed="1"), "seed")])
def test_bad_arguments_are_input_errors(image_pipeline, kw, message):
    args = dict(prompt="a cat", height=32, width=32, steps=1) | kw
    with pytest.raises(InputError, match=message):
        image_pipeline.generate(**args)


def test_dtype_and_offload_rules(glm_image_dir):
    from glmv.image.pipeline import ImagePipeline

    with pytest.raises(ConfigError, match="float16"):
        ImagePipeline(glm_image_dir, device="cpu", vae_dtype="float16")
    with pytest.raises(ConfigError, match="offload"):
        ImagePipeline(glm_image_dir, device="cpu", offload="model")
    mixed = ImagePipeline(glm_image_dir, device="cpu", dtype="bfloat16", vae_dtype="float32", vae_tiling=True)
    assert mixed.dit.pipe.transformer.dtype == torch.bfloat16 and mixed.dit.pipe.vae.dtype == torch.float32
    assert mixed.prior.prior.dtype == torch.bfloat16 and mixed.dit.pipe.vae.use_tiling
    image = mixed.generate("a cat", 32, 32, steps=1, seed=1)[0]
    assert np.asarray(image).std() > 1  # finite pixels: no NaN turned black


def test_without_diffusers_the_error_names_the_extra(glm_image_dir, monkeypatch):
    import sys

    from glmv.image.pipeline import ImagePipeline

    monkeypatch.setitem(sys.modules, "diffusers", None)  # as if not installed
    with pytest.raises(ConfigError, match=r"pip install 'glmv\[image\]'"):
        ImagePipeline(glm_image_dir, device="cpu")
