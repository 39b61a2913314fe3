"""Adapters cross between glmv and peft + transformers in peft's own files: what glmv saves, PeftModel.from_pretrained
loads with the same logits, and what peft saves, glmv loads with the same logits (fp32, <= 1e-5)."""

from __future__ import annotations

import json
import logging

import pytest
import torch

import glmv
from glmv.errors import CheckpointError
from glmv.lora import LoraConfig, adapted_modules, apply_lora, load_adapter, save_adapter

pytest.importorskip("peft")

TOL = 1e-5


def close(a: torch.Tensor, b: torch.Tensor, what: str) -> None:
    diff = (a - b).abs().max().item()
    print(f"{what}: max |logit diff| {diff:.2e}")
    assert diff <= TOL


def peft_random(model, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
            elif "lora_magnitude_vector" in name:
                p.mul_(1 + 0.1 * torch.randn(p.shape, generator=g))


# --- glmv writes, peft reads -----------------------------------------------------------------------------------
GLMV_TO_PEFT = {
    # model type, targets, DoRA
    "moe-attention-experts-vit-attn-projector-proj": (
        "glm4v_moe", ["attention", "experts", r"re:visual\.blocks\.\d+\.attn\.(qkv|proj)", "visual.merger.proj"], False),
    "dense-everything": ("glm4v", ["attention", "mlp", "vit", "projector"], False),
    "dense-dora": ("glm4v", ["attention", "mlp", "vit", "projector"], True),
}


@pytest.mark.parametrize("case", GLMV_TO_PEFT)
def test_glmv_adapter_loads_in_peft(case, tiny, batch, logits, random_adapter, tmp_path):
    from peft import PeftModel

    model_type, targets, dora = GLMV_TO_PEFT[case]
    ref, path = tiny(model_type)
    ours = glmv.load_model(path, progress=False)
    apply_lora(ours, LoraConfig(r=4, lora_alpha=8, targets=targets, use_dora=dora))
    random_adapter(ours)
    save_adapter(ours, tmp_path / "adapter", base_model_name_or_path=str(path))
    theirs = PeftModel.from_pretrained(ref, tmp_path / "adapter")  # stock peft, nothing patched
    glmv_logits, peft_logits = logits
    with torch.no_grad():
        close(glmv_logits(ours, batch), peft_logits(theirs, batch), case)
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["base_model_name_or_path"] == str(path)
    assert "model.language_model.layers.0.self_attn.q_proj" in config["target_modules"]


def test_moe_mlp_adapter_is_peft_layout_but_stock_peft_retargets_it(tiny, batch, logits, random_adapter, tmp_path,
                                                                    caplog, without_peft_moe_retargeting):
    """Dense and shared-expert MLP adapters of GLM-4.5V: glmv writes peft's names (peft with its glm4v_moe retargeting
    switched off loads them exactly) and warns that stock peft 0.21 moves them onto the routed experts."""
    from peft import PeftModel

    ref, path = tiny("glm4v_moe")
    ours = glmv.load_model(path, progress=False)
    apply_lora(ours, LoraConfig(r=4, lora_alpha=8, targets=["mlp", "attention"]))
    random_adapter(ours)
    with caplog.at_level(logging.WARNING, logger="glmv.lora.peft_format"):
        save_adapter(ours, tmp_path / "adapter")
    assert "huggingface/peft#3711" in caplog.text
    theirs = PeftModel.from_pretrained(ref, tmp_path / "adapter")
    glmv_logits, peft_logits = logits
    with torch.no_grad():
        close(glmv_logits(ours, batch), peft_logits(theirs, batch), "moe mlp (peft retargeting off)")


# --- peft writes, glmv reads -----------------------------------------------------------------------------------
PEFT_TO_GLMV = {
    "moe-attention-experts": ("glm4v_moe", dict(target_modules=["q_proj", "v_proj", "o_proj"],
                                                target_parameters=["experts.gate_up_proj", "experts.down_proj"])),
    "moe-down-experts-only-rslora": ("glm4v_moe", dict(target_modules=["k_proj"], target_parameters=["down_proj"],
                                                       use_rslora=True)),
    # peft's own v4 -> v5 MoE conversion: gate/up/down targets become the fused experts with rank and alpha doubled
    # through rank_pattern / alpha_pattern
    "moe-peft-converted-mlp-names": ("glm4v_moe", dict(target_modules=["q_proj", "gate_proj", "up_proj", "down_proj"])),
    "dense-regex-dora": ("glm4v", dict(target_modules=r".*\.(qkv|gate_up_proj|o_proj|merger\.proj)", use_dora=True)),
    "dense-rank-alpha-patterns": ("glm4v", dict(target_modules=["q_proj", "o_proj", "down_proj"],
                                                rank_pattern={"q_proj": 8}, alpha_pattern={"o_proj": 3})),
}


@pytest.mark.parametrize("case", PEFT_TO_GLMV)
def test_peft_adapter_loads_in_glmv(case, tiny, batch, logits, tmp_path):
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    model_type, fields = PEFT_TO_GLMV[case]
    ref, path = tiny(model_type)
    theirs = get_peft_model(ref, PeftLoraConfig(r=4, lora_alpha=8, **fields))
    peft_random(theirs)
    theirs.save_pretrained(tmp_path / "adapter")
    ours = glmv.load_model(path, progress=False)
    names = load_adapter(ours, tmp_path / "adapter")
    glmv_logits, peft_logits = logits
    with torch.no_grad():
        close(glmv_logits(ours, batch), peft_logits(theirs.eval(), batch), case)
    peft_layers = {n.split(".lora_")[0] for n, _ in theirs.named_parameters() if "lora_" in n}
    assert len(names) == len(peft_layers)
    assert all(not p.requires_grad for p in ours.parameters())  # loaded for inference


def test_glmv_round_trip_keeps_per_weight_ranks_and_dora(tiny, batch, logits, random_adapter, tmp_path):
    _, path = tiny("glm4v_moe")
    ours = glmv.load_model(path, progress=False)
    apply_lora(ours, LoraConfig(r=4, lora_alpha=8, targets=["attention", "experts"]))
    apply_lora(ours, LoraConfig(r=8, lora_alpha=4, targets=["mlp"]))  # a second call: other weights, other rank
    random_adapter(ours)
    save_adapter(ours, tmp_path / "a")
    config = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
    assert config["r"] == 4 and set(config["rank_pattern"].values()) == {8}
    again = glmv.load_model(path, progress=False)
    load_adapter(again, tmp_path / "a", trainable=True)
    assert all(p.requires_grad == ("lora_" in n) for n, p in again.named_parameters())
    glmv_logits, _ = logits
    with torch.no_grad():
        assert torch.equal(glmv_logits(ours, batch), glmv_logits(again, batch))


# --- refusals ------------------------------------------------------------------------------------------------
def _saved(tiny, tmp_path, model_type="glm4v_moe", targets=("attention",)):
    _, path = tiny(model_type)
    model = glmv.load_model(path, progress=False)
    apply_lora(model, LoraConfig(r=4, targets=list(targets)))
    return save_adapter(model, tmp_path / "adapter"), path


def _edit_config(adapter, **changes):
    file = adapter / "adapter_config.json"
    file.write_text(json.dumps({**json.loads(file.read_text()), **changes}))


@pytest.mark.parametrize("changes, message", [
    (dict(peft_type="IA3"), "peft_type LORA"),
    (dict(r=3), r"lora_A is \[4, 64\], the model needs \[3, 64\] \(r=3\)"),
    (dict(modules_to_save=["lm_head"]), "modules_to_save"),
    (dict(bias="all"), "bias='none'"),
])
def test_bad_adapter_configs_are_refused_before_the_model_changes(tiny, tmp_path, changes, message):
    adapter, path = _saved(tiny, tmp_path)
    _edit_config(adapter, **changes)
    model = glmv.load_model(path, progress=False)
    with pytest.raises(CheckpointError, match=message):
        load_adapter(model, adapter)
    assert not adapted_modules(model)


def test_adapter_of_another_architecture_is_refused(tiny, tmp_path):
    adapter, _ = _saved(tiny, tmp_path, "glm4v", ["mlp"])  # GLM-4.1V's fused mlp.gate_up_proj
    _, moe_path = tiny("glm4v_moe")
    with pytest.raises(CheckpointError, match="not a linear layer or routed-expert weight of this model"):
        load_adapter(glmv.load_model(moe_path, progress=False), adapter)


def test_transformers_4_per_expert_adapters_are_refused_with_a_way_out(tiny, tmp_path):
    from safetensors.torch import save_file

    adapter, path = _saved(tiny, tmp_path)
    key = "base_model.model.model.language_model.layers.1.mlp.experts.3.gate_proj"
    save_file({f"{key}.lora_A.weight": torch.zeros(4, 64), f"{key}.lora_B.weight": torch.zeros(16, 4)},
              str(adapter / "adapter_model.safetensors"))
    with pytest.raises(CheckpointError, match="per-expert adapter .*transformers 4"):
        load_adapter(glmv.load_model(path, progress=False), adapter)


def test_missing_and_corrupt_files_are_named(tiny, tmp_path):
    adapter, path = _saved(tiny, tmp_path)
    model = glmv.load_model(path, progress=False)
    (adapter / "adapter_model.safetensors").write_bytes(b"\x00" * 10)
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_adapter(model, adapter)
    (adapter / "adapter_config.json").unlink()
    with pytest.raises(CheckpointError, match="no adapter_config.json"):
        load_adapter(model, adapter)


@pytest.mark.parametrize("case", ["dense-regex-dora", "moe-attention-experts"])
def test_float64_differences_are_rounding_only(case, tiny, batch, logits, tmp_path):
    """In float64 glmv and peft agree to ~1e-15: the fp32 differences above are rounding, not a formula gap (the
    routed experts too, although glmv adds a low-rank term where peft materialises W + s B A)."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    model_type, fields = PEFT_TO_GLMV[case]
    ref, path = tiny(model_type)
    if model_type == "glm4v_moe":
        ref.set_experts_implementation("eager")  # transformers' default grouped_mm has no float64
    theirs = get_peft_model(ref, PeftLoraConfig(r=4, lora_alpha=8, **fields))
    peft_random(theirs)
    theirs.save_pretrained(tmp_path / "adapter")
    theirs.double()
    ours = glmv.load_model(path, dtype=torch.float64, progress=False)
    load_adapter(ours, tmp_path / "adapter")
    glmv_logits, peft_logits = logits
    b = {**batch, "pixel_values": batch["pixel_values"].double()}
    with torch.no_grad():
        diff = (glmv_logits(ours, b) - peft_logits(theirs, b)).abs().max().item()
    print(f"{case} float64: {diff:.2e}")
    assert diff <= 1e-12
