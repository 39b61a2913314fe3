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
