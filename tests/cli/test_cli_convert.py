"""`glmv convert` from the command line: the bundled nano model quantised, loaded back, and answering as before."""

from __future__ import annotations

import json

import pytest

from glmv.cli import main

pytest.importorskip("compressed_tensors")


def test_convert_int8_of_the_bundled_model_answers_like_it(tmp_path, capsys):
    from glmv import LLM, SamplingParams
    from glmv.quant.modules import QuantLinear
    from glmv.world import sample

    out = tmp_path / "nano-int8"
    assert main(["convert", "glmv/assets/nano", str(out), "--quantize", "int8", "--only", "all"]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    config = json.loads((out / "config.json").read_text())
    assert config["quantization_config"]["format"] == "int-quantized"
    assert (out / "tokenizer.json").is_file() and (out / "preprocessor_config.json").is_file()
    quantised, original = LLM(out, progress=False), LLM(progress=False)
    assert any(isinstance(m, QuantLinear) for m in quantised.model.modules())
    s = sample("color", "test", 0)
    messages = [{"role": "user", "content": [{"type": "image", "image": s.image}, {"type": "text", "text": s.prompt}]}]
    params = SamplingParams(temperature=0, max_tokens=12)
    answer = quantised.chat(messages, params, enable_thinking=False)[0].outputs[0].text
    assert answer == original.chat(messages, params, enable_thinking=False)[0].outputs[0].text


def test_convert_refuses_a_bad_group_size_in_one_line(tmp_path, capsys):
    assert main(["convert", "glmv/assets/nano", str(tmp_path / "x"), "--quantize", "int4", "--group-size", "0"]) == 1
    assert "--group-size must be a positive integer" in capsys.readouterr().err
