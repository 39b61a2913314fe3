"""The vision stage on a tiny model with world images: the loss goes down, a resumed run has exactly the losses
of an uninterrupted one, and the final checkpoint loads (glmv and transformers) with the decoder bit-identical
and no trace of the heads; the dense targets say what the world drew."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open

import glmv
from glmv.errors import ConfigError
from glmv.testing.tiny_checkpoint import logits_gap_to_reference, make_tiny_model_dir
from glmv.train.recipe import Recipe
from glmv.train.vision import VisionTrainer
from glmv.train.vision_targets import COLOUR_CLASSES, LETTERS, SHAPE_CLASSES, TEXTURE_CLASSES, image_targets

TASKS = {"caption": 1.0, "count_hard": 1.0, "ocr": 1.0}


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return make_tiny_model_dir(tmp_path_factory.mktemp("visionbase"), "glm4v_moe")


def make(base, out, steps=6, **kw) -> VisionTrainer:
    recipe = Recipe(stage="vision", out=str(out), tasks=TASKS, steps=steps, batch_size=4, lr=3e-3, warmup=2,
                    save_every=3, log_every=1, variety=0.5, **kw)
    return VisionTrainer(recipe, base, progress=False)


def test_the_vision_stage_lowers_its_loss(base, tmp_path):
    losses = make(base, tmp_path, steps=16).train()
    assert np.mean(losses[-4:]) < 0.8 * np.mean(losses[:4]), losses


def test_resume_continues_exactly(base, tmp_path):
    full = make(base, tmp_path / "a").train()
    first = make(base, tmp_path / "b").train(stop_after=3)
    rest = make(base, tmp_path / "b").train(resume=True)
    assert first + rest == full
    # the heads travelled in the trainer state: without them the resumed losses would differ
    assert torch.load(tmp_path / "b" / "checkpoint-000003" / "trainer_state.pt", weights_only=False)["heads"]


def test_the_checkpoint_keeps_the_decoder_and_drops_the_heads(base, tmp_path):
    make(base, tmp_path, steps=2).train()
    before = dict(glmv.load_model(base, progress=False).state_dict())
    after = dict(glmv.load_model(tmp_path / "final", progress=False).state_dict())
    assert before.keys() == after.keys()
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    assert changed and all(n.startswith("visual.") for n in changed)
    assert any(n.startswith("visual.blocks") for n in changed) and any(n.startswith("visual.merger") for n in changed)
    names = set()
    for f in (tmp_path / "final").glob("*.safetensors"):
        with safe_open(f, "pt") as st:
            names |= set(st.keys())
    assert not any("heads" in n for n in names)
    assert logits_gap_to_reference(tmp_path / "final") < 1e-4


def test_the_log_shows_every_head_and_the_token_spread(base, tmp_path):
    make(base, tmp_path, steps=1).train()
    entry = json.loads((tmp_path / "log.jsonl").read_text())
    for key in ("loss_colour", "loss_shape", "loss_texture", "loss_centres", "loss_letters", "loss_spread",
                "count_acc", "img_cos", "img_cos_within"):
        assert key in entry


def test_tasks_without_full_truth_are_refused(base, tmp_path):
    with pytest.raises(ConfigError, match="truth lists everything drawn"):
        VisionTrainer(Recipe(stage="vision", out=str(tmp_path), tasks={"color": 1.0}), base)


def test_targets_follow_what_was_drawn():
    # 4 x 4 tokens (8 x 8 patches); a red square filling token (1, 2) exactly, a blue circle over token (3, 0)
    truth = {"objects": [{"colour": "red", "shape": "square", "box": [500, 250, 750, 500]},
                         {"colour": "blue", "shape": "circle", "box": [0, 750, 250, 999]}]}
    t = image_targets(truth, (1, 8, 8))
    red, blue = COLOUR_CLASSES.index("red"), COLOUR_CLASSES.index("blue")
    assert t.colour[1 * 4 + 2, red] > 0.95 and t.shape[1 * 4 + 2, SHAPE_CLASSES.index("square")] > 0.95
    circle = t.colour[3 * 4 + 0, blue]
    assert 0.7 < circle < 0.85  # a circle covers pi/4 of its box
    assert t.shape[3 * 4 + 0, SHAPE_CLASSES.index("circle")] == circle
    assert t.texture[1 * 4 + 2, TEXTURE_CLASSES.index("plain")] > 0.95  # plain scenes are solid fills
    assert t.colour[0, 0] == 1.0 and torch.allclose(t.colour.sum(1), torch.ones(16))
    assert not t.shape[0].any() and torch.allclose(t.shape.sum(1), 1 - t.colour[:, 0])  # objects only
    assert t.centres.tolist() == [0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0] and t.count == 2
    assert not t.letters.any()
    word = image_targets({"text": "Jazz"}, (1, 4, 8))
    assert {LETTERS[i] for i in word.letters.nonzero().flatten().tolist()} == {"J", "a", "z"}
    assert word.colour[:, 0].eq(1).all() and word.count == 0


def test_later_objects_cover_earlier_ones():
    truth = {"objects": [{"colour": "red", "shape": "square", "box": [0, 0, 500, 500], "texture": "striped"},
                         {"colour": "green", "shape": "square", "box": [0, 0, 250, 250], "texture": "dotted"}]}
    t = image_targets(truth, (1, 8, 8))
    assert t.colour[0, COLOUR_CLASSES.index("green")] > 0.95 and t.colour[0, COLOUR_CLASSES.index("red")] < 0.05
    assert t.texture[1, TEXTURE_CLASSES.index("striped")] > 0.85
