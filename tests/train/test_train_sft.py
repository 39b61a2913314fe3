"""Supervised training on a tiny model: the loss goes down, checkpoints load in glmv and transformers with
equal logits, and a resumed run continues with exactly the losses of an uninterrupted one."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import glmv
from glmv.errors import ConfigError
from glmv.testing.tiny_checkpoint import logits_gap_to_reference, make_tiny_model_dir
from glmv.train.data import IGNORE, encode_example
from glmv.train.recipe import Recipe
from glmv.train.trainer import Trainer

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220)}


def colour_example(processor):
    def make(task: str, index: int, thinking: bool):
        name = sorted(COLOURS)[index % 3]
        rng = np.random.default_rng(index)
        pixels = np.clip(np.array(COLOURS[name]) + rng.integers(-20, 20, (56, 56, 3)), 0, 255).astype(np.uint8)
        messages = [{"role": "user", "content": [{"type": "image", "image": Image.fromarray(pixels)},
                                                 {"type": "text", "text": "What colour is this?"}]}]
        return encode_example(processor, messages, f"It is {name}.", thinking, task=task)
    return make


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return make_tiny_model_dir(tmp_path_factory.mktemp("base"), "glm4v_moe")


def make_trainer(base, out, steps=8, **kw) -> Trainer:
    recipe = Recipe(stage="sft", out=str(out), tasks={"colour": 1.0}, steps=steps, batch_size=4, lr=3e-3, warmup=2,
                    save_every=4, log_every=2, thinking=0.5, **kw)
    trainer = Trainer(recipe, base, progress=False)
    trainer.make_example = colour_example(trainer.processor)
    return trainer


def test_loss_masks_everything_but_the_answer(base, tmp_path):
    trainer = make_trainer(base, tmp_path)
    e = trainer.make_example("colour", 0, False)
    target = [t for t, l in zip(e.input_ids, e.labels) if l != IGNORE]
    tok = trainer.processor.tokenizer
    assert tok.decode(target, skip_special_tokens=False) == "It is blue.<|user|>"
    thinking = trainer.make_example("colour", 0, True)
    text = tok.decode([t for t in thinking.labels if t != IGNORE], skip_special_tokens=False)
    assert text.startswith("<think>") and text.endswith("</think>\nIt is blue.<|user|>")


def test_loss_decreases_and_checkpoint_loads_in_both(base, tmp_path):
    losses = make_trainer(base, tmp_path, steps=12).train()
    assert np.mean(losses[-3:]) < 0.7 * np.mean(losses[:3])
    assert logits_gap_to_reference(tmp_path / "final") < 1e-4
    assert (tmp_path / "log.jsonl").read_text().count("\n") == 6


def test_resume_continues_exactly(base, tmp_path):
    full = make_trainer(base, tmp_path / "a").train()
    first = make_trainer(base, tmp_path / "b").train(stop_after=4)
    rest = make_trainer(base, tmp_path / "b").train(resume=True)
    assert first + rest == full


def test_frozen_parameters_stay_put(base, tmp_path):
    make_trainer(base, tmp_path, steps=2, freeze=["visual.blocks"]).train()
    before, after = glmv.load_model(base, progress=False), glmv.load_model(tmp_path / "final", progress=False)
    old, new = dict(before.named_parameters()), dict(after.named_parameters())
    changed = {n for n in old if not torch.equal(old[n], new[n])}
    assert changed and not any(n.startswith("visual.blocks") for n in changed)
    assert any(n.startswith("visual.merger") for n in changed)


def test_bad_freeze_lists_are_clear_errors(base, tmp_path):
    with pytest.raises(ConfigError, match="match no parameter"):
        make_trainer(base, tmp_path, steps=1, freeze=["visual.blokcs"]).train()
    recipe = tmp_path / "r.yaml"
    recipe.write_text("stage: sft\nout: x\ntasks: {colour: 1}\nfreeze: visual.blocks\n")
    with pytest.raises(ConfigError, match="must be a list"):
        Recipe.load(recipe)


def test_router_load_counts_real_tokens_only(base):
    """The experts' load that balances the routers after a step counts what the attention mask keeps: a padded
    batch loads them exactly as its rows do alone, unpadded (pads were counted before, so how a batch was padded
    and split over ranks moved the router biases)."""
    from glmv.model.moe import Router

    model = glmv.load_model(base, progress=False).train()
    routers = [m for m in model.modules() if isinstance(m, Router)]
    rows = [torch.arange(5, 17), torch.arange(40, 47)]  # 12 and 7 tokens

    def loads(ids: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
        for r in routers:
            r.last_load = None
        with torch.no_grad():
            model(ids, attention_mask=mask)
        return [r.last_load for r in routers]

    padded = torch.stack([rows[0], torch.cat([rows[1], torch.zeros(5, dtype=torch.long)])])
    mask = (torch.arange(12) < torch.tensor([[12], [7]])).long()
    together = loads(padded, mask)
    alone = [loads(r[None], torch.ones(1, len(r), dtype=torch.long)) for r in rows]
    k = model.config.text.num_experts_per_tok
    assert routers and all(int(t.sum()) == 19 * k for t in together)
    assert all(torch.equal(t, a + b) for t, a, b in zip(together, *alone))
