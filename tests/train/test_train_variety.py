"""A recipe's `variety` reaches the world samples of every trainer: 0 draws exactly the plain samples (the
behaviour before variety existed), above 0 draws varied looks and wordings; bad values are clear errors."""

from __future__ import annotations

import pytest

from glmv.errors import ConfigError
from glmv.testing.tiny_checkpoint import make_tiny_model_dir
from glmv.train.data import encode_example
from glmv.train.recipe import Recipe
from glmv.train.rl import GRPOTrainer
from glmv.train.trainer import Trainer
from glmv.train.vision import VisionTrainer
from glmv.world import sample

N = 8


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return make_tiny_model_dir(tmp_path_factory.mktemp("varietybase"), "glm4v_moe")


def recipe(stage: str, out, variety: float) -> Recipe:
    return Recipe(stage=stage, out=str(out), tasks={"caption": 1.0}, variety=variety)


def test_supervised_examples_follow_the_variety(base, tmp_path):
    plain, varied = (Trainer(recipe("sft", tmp_path, v), base, progress=False) for v in (0.0, 1.0))
    for i in range(N):
        s = sample("caption", "train", i)
        expected = encode_example(plain.processor, s.messages(), s.target, False, task="caption").input_ids
        assert plain.make_example("caption", i, False).input_ids == expected
    assert sum(varied.make_example("caption", i, False).input_ids != plain.make_example("caption", i, False).input_ids
               for i in range(N)) >= N - 1


def prompt_text(messages: list[dict]) -> str:
    return " ".join(part["text"] for m in messages for part in m["content"] if part["type"] == "text")


def test_grpo_prompts_follow_the_variety(base, tmp_path):
    plain, varied = (GRPOTrainer(recipe("rl", tmp_path, v), base, progress=False) for v in (0.0, 1.0))
    for i in range(N):
        assert prompt_text(plain.make_prompt("caption", i).messages) == sample("caption", "train", i).prompt
        assert prompt_text(varied.make_prompt("caption", i).messages) == sample("caption", "train", i, 1.0).prompt


def test_vision_images_follow_the_variety(base, tmp_path):
    plain, varied = (VisionTrainer(recipe("vision", tmp_path, v), base, progress=False) for v in (0.0, 1.0))
    for i in range(N):
        image = plain.processor.process_image(sample("caption", "train", i).image)
        assert plain.make_item("caption", i)[0].pixel_values.equal(image.pixel_values)
    assert sum(not varied.make_item("caption", i)[0].pixel_values.equal(plain.make_item("caption", i)[0].pixel_values)
               for i in range(N)) >= N - 1


@pytest.mark.parametrize("value", [-0.1, 1.5, "lots"])
def test_variety_must_be_a_probability(tmp_path, value):
    path = tmp_path / "r.yaml"
    path.write_text(f"stage: sft\nout: x\ntasks: {{color: 1}}\nvariety: {value}\n")
    with pytest.raises(ConfigError, match="variety"):
        Recipe.load(path)
