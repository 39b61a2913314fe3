"""Fixtures for the multi-process tests: tiny checkpoints written once per session (transformers' save_pretrained)."""

from __future__ import annotations

import pytest

from glmv.testing.tiny_checkpoint import make_tiny_checkpoint


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """tiny_checkpoint(model_type) -> the directory of a tiny random checkpoint of that type."""
    made = {}

    def make(model_type: str):
        if model_type not in made:
            made[model_type] = make_tiny_checkpoint(tmp_path_factory.mktemp(f"dist-{model_type}"), model_type)
        return made[model_type]

    return make
