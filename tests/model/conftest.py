"""Fixtures for model tests: tiny reference models and the same weights loaded by glmv."""

from __future__ import annotations

import pytest

from glmv.testing.tiny_checkpoint import reference_config, reference_model


@pytest.fixture(scope="module")
def make_pair(tmp_path_factory):
    """(reference model, glmv model) with identical weights, via save_pretrained -> glmv.load_model."""
    import glmv

    cache = {}

    def make(model_type: str, **config_kw):
        key = (model_type, repr(sorted(config_kw.items())))
        if key not in cache:
            ref = reference_model(reference_config(model_type, **config_kw))
            path = tmp_path_factory.mktemp(model_type)
            ref.save_pretrained(path)
            cache[key] = (ref, glmv.load_model(path, progress=False), path)
        return cache[key]

    return make
