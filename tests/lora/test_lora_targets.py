"""What the target patterns select, what cannot be adapted, and what training sees after apply_lora."""

from __future__ import annotations

import pytest

import glmv
from glmv.errors import ConfigError
from glmv.lora import LoraConfig, adapter_parameters, apply_lora, resolve_targets


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from glmv.testing.tiny_checkpoint import make_tiny_checkpoint

    return {t: glmv.load_model(make_tiny_checkpoint(tmp_path_factory.mktemp(t), t), progress=False)
            for t in ("glm4v", "glm4v_moe")}


def test_presets_on_glm45v(models):
    m = models["glm4v_moe"]  # 3 layers: layer 0 dense, layers 1-2 MoE with one shared expert; 2 ViT blocks
    assert resolve_targets(m, ("attention",)) == [f"language_model.layers.{i}.self_attn.{p}_proj"
                                                  for i in range(3) for p in "qkvo"]
    assert resolve_targets(m, ("mlp",)) == (
        [f"language_model.layers.0.mlp.{p}_proj" for p in ("gate", "up", "down")]
        + [f"language_model.layers.{i}.mlp.shared_experts.{p}_proj" for i in (1, 2) for p in ("gate", "up", "down")])
    assert resolve_targets(m, ("experts",)) == [f"language_model.layers.{i}.mlp.experts.{p}"
                                                for i in (1, 2) for p in ("gate_up_proj", "down_proj")]
    assert resolve_targets(m, ("projector",)) == [f"visual.merger.{p}" for p in ("proj", "gate_proj", "up_proj",
                                                                                  "down_proj")]
    assert len(resolve_targets(m, ("vit",))) == 2 * 5


def test_presets_on_glm41v(models):
    m = models["glm4v"]
    assert resolve_targets(m, ("mlp",)) == [f"language_model.layers.{i}.mlp.{p}_proj"
                                            for i in range(3) for p in ("gate_up", "down")]
    with pytest.raises(ConfigError, match="'experts' selects nothing to adapt"):
        resolve_targets(m, ("experts",))


def test_globs_regexes_and_exclude(models):
    m = models["glm4v_moe"]
    assert resolve_targets(m, ("q_proj",)) == [f"language_model.layers.{i}.self_attn.q_proj" for i in range(3)]
    assert resolve_targets(m, ("language_model.layers.1.*",), ("*.shared_experts.*",)) == [
        *(f"language_model.layers.1.self_attn.{p}_proj" for p in "qkvo"),
        "language_model.layers.1.mlp.experts.gate_up_proj", "language_model.layers.1.mlp.experts.down_proj"]
    # naming the Experts module selects both of its weights
    assert resolve_targets(m, ("language_model.layers.2.mlp.experts",)) == [
        "language_model.layers.2.mlp.experts.gate_up_proj", "language_model.layers.2.mlp.experts.down_proj"]
    assert resolve_targets(m, (r"re:language_model\.layers\.[12]\.mlp\.experts\.down_proj",)) == [
        "language_model.layers.1.mlp.experts.down_proj", "language_model.layers.2.mlp.experts.down_proj"]


@pytest.mark.parametrize("targets, message", [
    (["visual.patch_embed.proj"], "matches only visual.patch_embed.proj, which are not linear layers"),
    (["no_such_module"], "no module of this model has such a name"),
    (["re:("], "not a valid regular expression"),
])
def test_patterns_that_select_nothing_say_why(models, targets, message):
    with pytest.raises(ConfigError, match=message):
        resolve_targets(models["glm4v_moe"], tuple(targets))


@pytest.mark.parametrize("kwargs, message", [
    (dict(r=0), "r must be a positive integer"),
    (dict(lora_alpha=-1), "lora_alpha must be a positive number"),
    (dict(lora_dropout=1.0), r"lora_dropout must be in \[0, 1\)"),
    (dict(targets="attention"), "targets and exclude are lists"),
    (dict(targets=[]), "targets is empty"),
])
def test_bad_configs(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        LoraConfig(**kwargs)


def test_only_adapters_train_and_a_second_adapter_on_one_weight_is_refused(tmp_path):
    from glmv.testing.tiny_checkpoint import make_tiny_checkpoint

    model = glmv.load_model(make_tiny_checkpoint(tmp_path, "glm4v_moe"), progress=False)
    names = apply_lora(model, LoraConfig(targets=["attention", "experts"]))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == set(adapter_parameters(model)) and len(trainable) == 2 * len(names)
    with pytest.raises(ConfigError, match="already carries an adapter"):
        apply_lora(model, LoraConfig(targets=["q_proj"]))


def test_tied_lm_head_is_refused(tmp_path):
    from glmv.testing.tiny_checkpoint import make_tiny_checkpoint

    path = make_tiny_checkpoint(tmp_path, "glm4v", text={"tie_word_embeddings": True}, tie_word_embeddings=True)
    model = glmv.load_model(path, progress=False)
    if not model.config.tie_word_embeddings:
        pytest.skip("this transformers version does not write tied tiny checkpoints")
    with pytest.raises(ConfigError, match="tie_word_embeddings"):
        apply_lora(model, LoraConfig(targets=["lm_head"]))


def test_quantised_weights_are_refused_with_a_way_out(tmp_path):
    pytest.importorskip("compressed_tensors")
    from glmv.testing.tiny_checkpoint import make_tiny_checkpoint

    model = glmv.load_model(make_tiny_checkpoint(tmp_path, "glm4v_moe"), progress=False, quantize="int8")
    with pytest.raises(ConfigError, match="is quantised .*load the checkpoint unquantised"):
        apply_lora(model, LoraConfig(targets=["attention"]))


def test_bf16_model_trains_fp32_adapters(tmp_path):
    import torch

    from glmv.testing.tiny_checkpoint import make_tiny_checkpoint

    model = glmv.load_model(make_tiny_checkpoint(tmp_path, "glm4v_moe"), dtype="bfloat16", progress=False)
    apply_lora(model, LoraConfig(targets=["attention", "mlp", "experts"]))
    apply_lora(model, LoraConfig(targets=["vit"], use_dora=True))
    params = adapter_parameters(model)
    assert {p.dtype for p in params.values()} == {torch.float32}
    for name, p in params.items():
        if "lora_B" in name:
            torch.nn.init.normal_(p, 0, 0.1)
    with torch.no_grad():
        inference = model(torch.tensor([[5, 6, 7, 8, 9, 10]])).logits
    out = model.train()(torch.tensor([[5, 6, 7, 8, 9, 10]])).logits
    assert out.dtype == torch.bfloat16 and (out.float() - inference.float()).abs().max() < 0.1
    out.float().square().mean().backward()
    grads = [p.grad for n, p in params.items() if "visual" not in n]
    assert all(g is not None and g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads)
