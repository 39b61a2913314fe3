"""Unfreezing schedule: a recipe's `lr_scale` gives parameter-name prefixes their own learning rate (the longest
prefix wins), and the image-token cosine spread that shows a collapsing vision tower is measured and logged."""

from __future__ import annotations

import json

import pytest
import torch

import glmv
from glmv.errors import ConfigError
from glmv.inputs.processor import Processor
from glmv.testing.tiny_checkpoint import make_tiny_model_dir
from glmv.train.data import encode_example
from glmv.train.optim import build_optimizer, trainable_parameters
from glmv.train.recipe import Recipe
from glmv.train.spread import SpreadProbe, token_cosine
from glmv.train.trainer import Trainer


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return make_tiny_model_dir(tmp_path_factory.mktemp("schedbase"), "glm4v_moe")


def test_lr_scale_gives_prefixes_their_own_rate(base, tmp_path):
    model = glmv.load_model(base, progress=False)
    recipe = Recipe(stage="pretrain", out=str(tmp_path), tasks={"color": 1.0}, lr=1e-3,
                    lr_scale={"visual": 0.1, "visual.merger": 1.0}, freeze=["visual.patch_embed"])
    named = trainable_parameters(model, recipe.freeze)
    opt, sched = build_optimizer(named, recipe, weight_decay=0.05)
    lr = {id(p): g["initial_lr"] for g in opt.param_groups for p in g["params"]}  # the peak, before warmup
    for n, p in named:
        want = 1e-3 if n.startswith("visual.merger") or not n.startswith("visual") else 1e-4
        assert lr[id(p)] == pytest.approx(want), n
    assert not any(n.startswith("visual.patch_embed") for n, _ in named)  # frozen stays frozen
    opt.step()
    sched.step()  # the schedule scales every group alike
    factor = {round(g["lr"] / g["initial_lr"], 12) for g in opt.param_groups}
    assert len(factor) == 1


def test_lr_scale_errors_are_clear(base, tmp_path):
    model = glmv.load_model(base, progress=False)
    recipe = Recipe(stage="pretrain", out=str(tmp_path), tasks={"color": 1.0}, lr_scale={"visual.blokcs": 0.1})
    with pytest.raises(ConfigError, match="match no trainable parameter"):
        build_optimizer(trainable_parameters(model, []), recipe, 0.0)
    path = tmp_path / "r.yaml"
    path.write_text("stage: sft\nout: x\ntasks: {color: 1}\nlr_scale: {visual: 0}\n")
    with pytest.raises(ConfigError, match="lr_scale"):
        Recipe.load(path)


def test_token_cosine_tells_collapse_from_spread():
    same = torch.ones(6, 4)
    assert token_cosine(same, [3, 3]) == pytest.approx({"across": 1.0, "within": 1.0})
    # one constant vector per image (the projector drift the warm-up stage exists for): apart across images only
    per_image = torch.tensor([[1.0, 0, 0, 0]] * 3 + [[0, 1.0, 0, 0]] * 3)
    assert token_cosine(per_image, [3, 3]) == pytest.approx({"across": 0.0, "within": 1.0})
    spread = torch.eye(4)
    assert token_cosine(spread, [2, 2]) == pytest.approx({"across": 0.0, "within": 0.0})


def test_the_spread_is_logged_during_training(base, tmp_path):
    recipe = Recipe(stage="pretrain", out=str(tmp_path), tasks={"colour": 1.0}, steps=2, batch_size=2, log_every=1,
                    lr_scale={"visual": 0.1})
    trainer = Trainer(recipe, base, progress=False)
    trainer.make_example = lambda task, index, thinking: encode_example(
        trainer.processor, [{"role": "user", "content": "Hi"}], "Hello", thinking, task=task)
    trainer.train()
    entries = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert all(-1 <= e["img_cos"] <= 1 and -1 <= e["img_cos_within"] <= 1 for e in entries)
    model = glmv.load_model(tmp_path / "final", progress=False)
    assert SpreadProbe(Processor.from_pretrained(base))(model)["img_cos"] == entries[-1]["img_cos"]
