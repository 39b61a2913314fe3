"""Fixtures for the GLM-Image prior tests: a tiny reference prior and the same weights loaded by glmv."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def prior_pair(tmp_path_factory):
    """(reference model, glmv prior, checkpoint dir) with identical weights, via save_pretrained -> load_prior."""
    from glmv.image import load_prior
    from glmv.image.tiny_checkpoint import reference_config, reference_model

    cache = {}

    def make(**config_kw):
        key = repr(sorted(config_kw.items()))
        if key not in cache:
            ref = reference_model(reference_config(**config_kw))
            path = tmp_path_factory.mktemp("glm_image")
            ref.save_pretrained(path)
            cache[key] = (ref, load_prior(path), path)
        return cache[key]

    return make


@pytest.fixture(scope="session")
def glm_image_dir(tmp_path_factory):
    """A tiny GLM-Image checkpoint (all seven components) whose prior samples deterministically (top_k 1, and
    transformers suppresses the non-codebook ids as glmv's grid rule does): whole pipelines compare exactly."""
    pytest.importorskip("diffusers", reason="GLM-Image's DiT side needs diffusers (pip install 'glmv[image]')")
    from glmv.image.tiny_pipeline import make_tiny_glm_image

    return make_tiny_glm_image(tmp_path_factory.mktemp("glm_image_full") / "GLM-Image-tiny", deterministic=True)


@pytest.fixture(scope="session")
def image_pipeline(glm_image_dir):
    """glmv's ImagePipeline over the tiny checkpoint, on the CPU in float32."""
    from glmv.image.pipeline import ImagePipeline

    return ImagePipeline(glm_image_dir, device="cpu")


@pytest.fixture(scope="session")
def diffusers_pipeline(glm_image_dir):
    """diffusers' own GlmImagePipeline over the same checkpoint (its prior is transformers')."""
    from diffusers import GlmImagePipeline

    pipe = GlmImagePipeline.from_pretrained(glm_image_dir)
    pipe.set_progress_bar_config(disable=True)
    return pipe
