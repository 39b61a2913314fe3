"""Merging adapters into the weights: merge_lora keeps the adapted model's outputs, `glmv convert --merge-lora`
writes a plain checkpoint transformers loads with those outputs, and LLM(path, lora=) decodes as the merged model."""

from __future__ import annotations

import pytest
import torch

import glmv
from glmv.cli import main
from glmv.lora import LoraConfig, adapted_modules, apply_lora, merge_lora, remove_lora, save_adapter
from glmv.lora.experts import LoraExperts
from glmv.lora.linear import LoraLinear

TOL = 1e-5
CASES = {"moe-lora": ("glm4v_moe", ["attention", "mlp", "experts", "vit", "projector"], False),
         "dense-dora": ("glm4v", ["attention", "mlp", "vit", "projector"], True)}


def adapted(path, targets, dora, random_adapter):
    model = glmv.load_model(path, progress=False)
    apply_lora(model, LoraConfig(r=4, lora_alpha=8, targets=targets, use_dora=dora))
    random_adapter(model)
    return model


@pytest.mark.parametrize("case", CASES)
def test_merge_lora_keeps_the_outputs_and_leaves_a_plain_model(case, tiny, batch, logits, random_adapter):
    model_type, targets, dora = CASES[case]
    _, path = tiny(model_type)
    model = adapted(path, targets, dora, random_adapter)
    glmv_logits, _ = logits
    with torch.no_grad():
        before = glmv_logits(model, batch)
        merge_lora(model)
        diff = (glmv_logits(model, batch) - before).abs().max().item()
    print(f"{case}: merged vs adapted {diff:.2e}")
    assert diff <= TOL
    assert not any(isinstance(m, (LoraLinear, LoraExperts)) for m in model.modules())
    assert not any("lora_" in n for n, _ in model.named_parameters())
    assert all(p.requires_grad for p in model.parameters())  # trainable again, as load_model returned it


def test_remove_lora_restores_the_base_model(tiny, batch, logits, random_adapter):
    _, path = tiny("glm4v_moe")
    model = adapted(path, ["attention", "experts"], False, random_adapter)
    remove_lora(model)
    glmv_logits, _ = logits
    with torch.no_grad():
        assert torch.equal(glmv_logits(model, batch), glmv_logits(glmv.load_model(path, progress=False), batch))
    assert not adapted_modules(model)


@pytest.mark.parametrize("case", CASES)
def test_convert_merge_lora_loads_in_transformers(case, tiny, batch, logits, random_adapter, tmp_path, capsys):
    import transformers

    model_type, targets, dora = CASES[case]
    _, path = tiny(model_type)
    model = adapted(path, targets, dora, random_adapter)
    save_adapter(model, tmp_path / "adapter")
    out = tmp_path / "merged"
    assert main(["convert", str(path), str(out), "--merge-lora", str(tmp_path / "adapter")]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    ref = transformers.AutoModelForImageTextToText.from_pretrained(out).eval()
    glmv_logits, peft_logits = logits
    with torch.no_grad():
        diff = (peft_logits(ref, batch) - glmv_logits(model, batch)).abs().max().item()
    print(f"{case}: transformers on the merged checkpoint vs glmv + adapter {diff:.2e}")
    assert diff <= TOL


def test_convert_merge_lora_refuses_a_missing_adapter_in_one_line(tiny, tmp_path, capsys):
    _, path = tiny("glm4v")
    assert main(["convert", str(path), str(tmp_path / "x"), "--merge-lora", str(tmp_path / "nothing")]) == 1
    assert "is not a directory; pass the adapter directory" in capsys.readouterr().err


def test_llm_with_lora_decodes_as_the_merged_model(tmp_path, random_adapter):
    from glmv import LLM, SamplingParams
    from glmv.testing.tiny_checkpoint import make_tiny_model_dir

    path = make_tiny_model_dir(tmp_path / "base", "glm4v_moe")
    model = glmv.load_model(path, progress=False)
    apply_lora(model, LoraConfig(r=4, lora_alpha=8, targets=["attention", "mlp", "experts"]))
    random_adapter(model)
    save_adapter(model, tmp_path / "adapter")
    assert main(["convert", str(path), str(tmp_path / "merged"), "--merge-lora", str(tmp_path / "adapter")]) == 0

    messages = [{"role": "user", "content": "Describe the weather in four words."}]
    params = SamplingParams(temperature=0, max_tokens=24, ignore_eos=True)

    def ids(llm):
        return llm.chat(messages, params, enable_thinking=False)[0].outputs[0].token_ids

    with_lora = ids(LLM(path, lora=tmp_path / "adapter", progress=False))
    assert with_lora == ids(LLM(tmp_path / "merged", progress=False))
    assert with_lora != ids(LLM(path, progress=False))  # the adapter changes what the model says


def test_convert_merge_lora_then_quantize(tiny, batch, logits, random_adapter, tmp_path):
    pytest.importorskip("compressed_tensors")
    import json

    _, path = tiny("glm4v_moe")
    model = adapted(path, ["attention", "experts"], False, random_adapter)
    save_adapter(model, tmp_path / "adapter")
    out = tmp_path / "merged-int8"
    assert main(["convert", str(path), str(out), "--merge-lora", str(tmp_path / "adapter"), "--quantize", "int8",
                 "--only", "all"]) == 0
    assert json.loads((out / "config.json").read_text())["quantization_config"]["format"] == "int-quantized"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".glmv-merge-")] == []  # temporary dir removed
    glmv_logits, _ = logits
    with torch.no_grad():
        adapted_out = glmv_logits(model, batch)
        quantised = glmv_logits(glmv.load_model(out, progress=False), batch)
        base = glmv_logits(glmv.load_model(path, progress=False), batch)
    # int8 rounding moves the logits a little; the merged adapter moves them much more
    assert (quantised - adapted_out).abs().max() < 0.2 * (base - adapted_out).abs().max()
