"""Fine-tuning recipes (glmv/train/finetune.py, `stage: finetune`) on a tiny checkpoint and JSONL data: LoRA learns
while the base stays bit-identical, resume is exact, the adapter written in peft's layout gives the trained
logits, DoRA and full fine-tuning (with frozen groups) write what they should, and recipe mistakes are clear
errors. Needs the wiring in lora_wiring.diff (recipe fields, Trainer hooks, pipeline)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import glmv
from glmv.errors import ConfigError
from glmv.lora import load_adapter
from glmv.testing.tiny_checkpoint import make_tiny_model_dir
from glmv.train.finetune import FinetuneTrainer
from glmv.train.pipeline import run_stage
from glmv.train.recipe import Recipe

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220)}


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return make_tiny_model_dir(tmp_path_factory.mktemp("base"), "glm4v_moe")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """12 colour questions: half in the OpenAI layout, half in ShareGPT's, images beside the file."""
    root = tmp_path_factory.mktemp("data")
    lines = []
    for i in range(12):
        name = sorted(COLOURS)[i % 3]
        rng = np.random.default_rng(i)
        pixels = np.clip(np.array(COLOURS[name]) + rng.integers(-20, 20, (56, 56, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(root / f"{i}.png")
        if i % 2:
            lines.append({"conversations": [{"from": "human", "value": "<image>What colour is this?"},
                                            {"from": "gpt", "value": f"It is {name}."}], "images": [f"{i}.png"]})
        else:
            lines.append({"messages": [
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": f"{i}.png"}},
                                             {"type": "text", "text": "What colour is this?"}]},
                {"role": "assistant", "content": f"It is {name}."}]})
    path = root / "colours.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def recipe(base, jsonl, out, **kw) -> Recipe:
    fields = dict(stage="finetune", init=str(base), out=str(out), method="lora",
                  lora={"r": 8, "alpha": 16, "targets": ["attention", "mlp"]}, data=[{"jsonl": str(jsonl)}],
                  steps=10, batch_size=4, lr=1e-2, warmup=2, weight_decay=0.0, save_every=4, log_every=2,
                  thinking=0.5)
    return Recipe(**{**fields, **kw})


def logits(model, base):
    from glmv.inputs.processor import Processor

    processor = Processor.from_pretrained(base)
    image = Image.new("RGB", (56, 56), COLOURS["green"])
    question = [{"role": "user", "content": [{"type": "image", "image": image},
                                             {"type": "text", "text": "What colour is this?"}]}]
    inputs = processor.apply_chat_template(question, enable_thinking=False)
    with torch.no_grad():
        return model.eval()(inputs["input_ids"], attention_mask=inputs["attention_mask"],
                            pixel_values=inputs["pixel_values"], image_grid_thw=inputs["image_grid_thw"]).logits


def base_state(model) -> dict[str, torch.Tensor]:
    """Every base parameter and buffer (router biases included) under its name."""
    return {n: t.detach().clone() for n, t in [*model.named_parameters(), *model.named_buffers()] if "lora_" not in n}


def test_lora_learns_only_adapters_and_writes_a_peft_adapter_with_the_trained_logits(base, data, tmp_path):
    trainer = FinetuneTrainer(recipe(base, data, tmp_path, steps=12, thinking=0.0), base, progress=False)
    losses = trainer.train()
    assert np.mean(losses[-3:]) < 0.7 * np.mean(losses[:3])
    original = glmv.load_model(base, progress=False)
    trained = trainer.model
    want, got = base_state(original), base_state(trained)
    assert want.keys() == got.keys() and all(torch.equal(want[n], got[n]) for n in want)  # bit-identical base
    final = tmp_path / "final"
    assert sorted(p.name for p in final.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    assert not list(tmp_path.glob("checkpoint-*/model.safetensors"))  # checkpoints hold adapters, not models
    config = json.loads((final / "adapter_config.json").read_text())
    assert config["r"] == 8 and config["lora_alpha"] == 16 and not config["use_dora"]
    reloaded = glmv.load_model(base, progress=False)
    load_adapter(reloaded, final)
    assert torch.equal(logits(reloaded, base), logits(trained, base))
    assert not torch.allclose(logits(original, base), logits(trained, base))


def test_resume_continues_exactly(base, data, tmp_path):
    kw = dict(lora={"r": 4, "alpha": 8, "dropout": 0.1, "targets": ["attention", "mlp", "projector"]}, steps=8)
    full = FinetuneTrainer(recipe(base, data, tmp_path / "a", **kw), base, progress=False).train()
    first = FinetuneTrainer(recipe(base, data, tmp_path / "b", **kw), base, progress=False).train(stop_after=4)
    rest = FinetuneTrainer(recipe(base, data, tmp_path / "b", **kw), base, progress=False).train(resume=True)
    assert len(first) == 4 and first + rest == full
    a, b = (json.loads((tmp_path / d / "final" / "adapter_config.json").read_text()) for d in "ab")
    assert a == b
    assert (tmp_path / "a" / "final" / "adapter_model.safetensors").read_bytes() == \
        (tmp_path / "b" / "final" / "adapter_model.safetensors").read_bytes()


def test_gradient_checkpointing_gives_the_same_run(base, data, tmp_path):
    plain = FinetuneTrainer(recipe(base, data, tmp_path / "a", steps=3), base, progress=False).train()
    recomputed = FinetuneTrainer(recipe(base, data, tmp_path / "b", steps=3, gradient_checkpointing=True), base,
                                 progress=False)
    assert recomputed.train() == plain
    from glmv.train import recompute

    assert recompute.enabled(recomputed.model)


def test_dora_and_routed_experts(base, data, tmp_path):
    dora = FinetuneTrainer(recipe(base, data, tmp_path / "dora", method="dora", steps=3), base, progress=False)
    dora.train()
    config = json.loads((tmp_path / "dora" / "final" / "adapter_config.json").read_text())
    assert config["use_dora"]
    reloaded = glmv.load_model(base, progress=False)
    load_adapter(reloaded, tmp_path / "dora" / "final")
    assert torch.equal(logits(reloaded, base), logits(dora.model, base))
    experts = FinetuneTrainer(recipe(base, data, tmp_path / "experts", steps=3,
                                     lora={"r": 4, "targets": ["experts", "attention"]}), base, progress=False)
    experts.train()
    config = json.loads((tmp_path / "experts" / "final" / "adapter_config.json").read_text())
    assert config["target_parameters"] and config["target_modules"]


def test_full_finetune_keeps_frozen_groups_and_writes_a_checkpoint(base, data, tmp_path):
    trainer = FinetuneTrainer(recipe(base, data, tmp_path, method="full", lora={}, freeze=["vit"], steps=3, lr=1e-3),
                              base, progress=False)
    trainer.train()
    before = dict(glmv.load_model(base, progress=False).named_parameters())
    after = dict(glmv.load_model(tmp_path / "final", progress=False).named_parameters())
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    assert not any(n.startswith("visual.") and not n.startswith("visual.merger") for n in changed)
    assert any(n.startswith("visual.merger") for n in changed) and any(n.startswith("language_model") for n in changed)
    frozen_llm = FinetuneTrainer(recipe(base, data, tmp_path / "b", method="full", lora={}, freeze=["llm", "vit"],
                                        steps=2, lr=1e-3), base, progress=False)
    frozen_llm.train()
    after = dict(glmv.load_model(tmp_path / "b" / "final", progress=False).named_parameters())
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    assert changed and all(n.startswith("visual.merger") for n in changed)
    buffers = dict(glmv.load_model(base, progress=False).named_buffers())
    assert all(torch.equal(t, buffers[n]) for n, t in frozen_llm.model.named_buffers())  # routers not balanced


def test_data_sources_mix_jsonl_and_world_once_per_epoch(base, data, tmp_path):
    sources = [{"jsonl": str(data), "repeat": 2}, {"world": {"tasks": ["color", "shape"], "n": 3}}]
    r = recipe(base, data, tmp_path, data=sources, batch_size=6)
    trainer = FinetuneTrainer(r, base, progress=False)
    assert len(trainer.pool) == 12 * 2 + 6
    epoch = [item for d in range(5) for item in trainer.draw(d, 6)]
    keys = [getattr(i, "where", i) for i in epoch]
    assert sorted(map(str, keys)) == sorted(map(str, [getattr(i, "where", i) for i in trainer.pool]))
    assert [getattr(i, "where", i) for i in trainer.draw(5, 6)] != keys[:6]  # the next epoch in another order
    batch = trainer.batch(0, 0)
    assert batch["input_ids"].shape[0] == 6 and batch["pixel_values"] is not None


def test_a_yaml_recipe_runs_through_the_pipeline(base, data, tmp_path):
    path = tmp_path / "ft.yaml"
    path.write_text(f"""
stage: finetune
init: {base}
out: {tmp_path / 'run'}
method: lora
lora: {{r: 4, alpha: 8, targets: [attention]}}
data:
  - jsonl: {data}
steps: 2
batch_size: 2
save_every: 1
keep_checkpoints: 1
""")
    losses = run_stage(Recipe.load(path))
    assert len(losses) == 2 and (tmp_path / "run" / "final" / "adapter_model.safetensors").is_file()
    assert [p.name for p in (tmp_path / "run").glob("checkpoint-*")] == ["checkpoint-000002"]


def test_the_plain_trainer_keeps_its_behaviour_through_the_hooks(base, tmp_path):
    """The hooks the fine-tuning trainer overrides, at their defaults: exact resume, routers balanced, a full
    checkpoint at the end."""
    from glmv.inputs.processor import Processor
    from glmv.train.data import encode_example
    from glmv.train.trainer import Trainer

    processor = Processor.from_pretrained(base)

    def make(task, index, thinking):
        image = Image.new("RGB", (56, 56), COLOURS[sorted(COLOURS)[index % 3]])
        messages = [{"role": "user", "content": [{"type": "image", "image": image},
                                                 {"type": "text", "text": "Colour?"}]}]
        return encode_example(processor, messages, sorted(COLOURS)[index % 3], thinking, task=task)

    def run(out, **kw):
        r = Recipe(stage="sft", out=str(out), tasks={"c": 1.0}, steps=4, batch_size=2, lr=3e-3, warmup=1, save_every=2)
        return Trainer(r, base, make_example=make, progress=False).train(**kw)

    full = run(tmp_path / "a")
    assert run(tmp_path / "b", stop_after=2) + run(tmp_path / "b", resume=True) == full
    before = dict(glmv.load_model(base, progress=False).named_buffers())
    after = dict(glmv.load_model(tmp_path / "a" / "final", progress=False).named_buffers())
    assert any(not torch.equal(before[n], after[n]) for n in before)  # router biases moved


BAD = [
    ({"method": None}, "set method to one of"),
    ({"method": "qlora"}, "set method to one of"),
    ({"init": "scratch"}, "starts from a checkpoint"),
    ({"freeze": ["vit"]}, "'freeze' is for method: full"),
    ({"lora": {"r": 4, "rank": 8}}, r"lora: unknown keys \['rank'\]"),
    ({"lora": {"targets": "attention"}}, "lora.targets is a list"),
    ({"lora": {"r": 0}}, "r must be a positive integer"),
    ({"method": "full", "lora": {"r": 4}}, "need method: lora or dora"),
    ({"data": []}, "'data' lists the training data"),
    ({"data": [{"jsonl": "nope.jsonl"}]}, "is not a file"),
    ({"data": [{"world": {"tasks": ["colour"], "n": 5}}]}, r"unknown tasks \['colour'\]"),
    ({"data": [{"world": {"tasks": ["color"]}}]}, "n .training samples per task. must be an integer"),
    ({"data": [{"csv": "x.csv"}]}, "must be {jsonl: PATH}"),
    ({"tasks": {"color": 1.0}}, "not 'tasks'"),
    ({"dtype": "float16"}, "dtype must be one of"),
]


@pytest.mark.parametrize("change, message", BAD)
def test_recipe_mistakes_are_config_errors(base, data, tmp_path, change, message):
    with pytest.raises(ConfigError, match=message):
        FinetuneTrainer(recipe(base, data, tmp_path, **change), base, progress=False)


def test_yaml_errors_name_the_recipe(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("stage: finetune\nout: x\ninit: nano\nmethod: lora\n")
    with pytest.raises(ConfigError, match=r"recipe .*r\.yaml: 'data' lists"):
        Recipe.load(path)
    path.write_text("stage: sft\nout: x\ntasks: {color: 1}\nmethod: lora\n")
    with pytest.raises(ConfigError, match=r"\['method'\] are fields of stage: finetune"):
        Recipe.load(path)
