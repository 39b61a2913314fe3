"""The linear probe reads what is linearly there and nothing else; features come pooled per image, as a mean or
on a coarse grid; the table has a row per label and a column per model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import glmv
from glmv.inputs.processor import Processor
from glmv.testing.tiny_checkpoint import make_tiny_model_dir
from glmv.train.probe import labelled_images, linear_probe, pooled_features, probe_table


def clusters(n: int, classes: int, dim: int, separation: float, seed: int = 0) -> tuple[torch.Tensor, list[str]]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dim)) * separation
    y = rng.integers(classes, size=n)
    return torch.from_numpy(centres[y] + rng.normal(size=(n, dim))), [f"c{k}" for k in y]


def test_the_probe_separates_separable_classes():
    x, y = clusters(300, 4, 32, separation=1.0)
    result = linear_probe(x, y)
    assert result["accuracy"] > 0.9 and result["chance"] < 0.4


def test_the_probe_finds_nothing_in_noise():
    x, _ = clusters(300, 4, 32, separation=1.0)
    y = [f"c{k}" for k in np.random.default_rng(1).integers(4, size=300)]
    assert linear_probe(x, y)["accuracy"] < 0.45


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return make_tiny_model_dir(tmp_path_factory.mktemp("probebase"), "glm4v_moe")


def test_pooled_features_per_image(base):
    images, labels = labelled_images("position", 3)
    assert len(images) == len(labels) == 3 and all(len(label) == 2 for label in labels)
    model, processor = glmv.load_model(base, progress=False), Processor.from_pretrained(base)
    dim = model.config.vision.out_hidden_size
    assert pooled_features(model, processor, images).shape == (3, dim)
    grid = pooled_features(model, processor, images, pool="3x3", batch_size=2)
    assert grid.shape == (3, 9 * dim)


def test_the_table_has_a_row_per_label():
    result = {"accuracy": 0.5, "chance": 0.25, "lambda": 1.0}
    table = probe_table({"colour": {"a": result, "b": result}, "shape": {"a": result, "b": result}})
    lines = table.splitlines()
    assert lines[0] == "| label | a | b | most common class |"
    assert lines[2] == "| colour | 0.50 | 0.50 | 0.25 |" and len(lines) == 4
