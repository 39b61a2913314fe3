"""Inconsistent checkpoints fail at load time with one clear error (ConfigError / CheckpointError) that names what
is wrong: never a silently wrong model, never a raw exception from torch or json, never an error per request."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import glmv
import glmv.weights
from glmv.config import GlmvConfig
from glmv.errors import CheckpointError, ConfigError
from glmv.model.glm4v import GlmvForConditionalGeneration

NANO = Path(glmv.__file__).parent / "assets" / "nano"


def write_checkpoint(src: Path, dst: Path, text: dict | None = None, top: dict | None = None,
                     tensors: dict[str, torch.Tensor] | None = None) -> Path:
    """A copy of checkpoint `src` at `dst` with config.json fields replaced (`text` in text_config, `top` at the
    top level; a None value removes the field) and, if given, other tensors."""
    config = json.loads((src / "config.json").read_text())
    for section, values in ((config["text_config"], text or {}), (config, top or {})):
        for key, value in values.items():
            if value is None:
                section.pop(key, None)
            else:
                section[key] = value
    (dst / "config.json").write_text(json.dumps(config))
    if tensors is None:
        shutil.copy(src / "model.safetensors", dst / "model.safetensors")
    else:
        save_file(tensors, dst / "model.safetensors")
    return dst


def load_error(path: Path, kind: type[Exception] = CheckpointError) -> str:
    with pytest.raises(kind) as e:
        glmv.load_model(path, progress=False)
    return str(e.value)


# --- 8: layers past num_hidden_layers --------------------------------------------------------------------------


def test_layers_a_config_leaves_out_are_unexpected(make_pair, tmp_path):
    """A config with fewer layers than the checkpoint does not drop the extra ones as if they were MTP layers."""
    _, _, path = make_pair("glm4v_moe")
    layer_2 = [k for k in load_file(path / "model.safetensors") if k.startswith("model.language_model.layers.2.")]
    msg = load_error(write_checkpoint(path, tmp_path, text={"num_hidden_layers": 2}))
    assert f"unexpected ({len(layer_2)}): model.language_model.layers.2." in msg
    assert "missing" not in msg and "model.language_model.layers.1." not in msg


@pytest.mark.parametrize("mtp_layers,unexpected", [(None, [3, 4]), (1, [4]), (2, [])])
def test_only_the_declared_mtp_layers_are_skipped(make_pair, tmp_path, mtp_layers, unexpected):
    """GLM-4.5 stores num_nextn_predict_layers MTP layers right after the decoder's layers: those, and only
    those, are skipped."""
    _, ours, path = make_pair("glm4v_moe")
    tensors = load_file(path / "model.safetensors")
    for layer in (3, 4):  # num_hidden_layers is 3
        tensors[f"model.language_model.layers.{layer}.eh_proj.weight"] = torch.zeros(4, 4)
    write_checkpoint(path, tmp_path, text={"num_nextn_predict_layers": mtp_layers}, tensors=tensors)
    if unexpected:
        names = ", ".join(f"model.language_model.layers.{i}.eh_proj.weight" for i in unexpected)
        assert f"unexpected ({len(unexpected)}): {names}" in load_error(tmp_path)
    else:
        assert torch.equal(glmv.load_model(tmp_path, progress=False).lm_head.weight, ours.lm_head.weight)


# --- 9: integer or bool data for float weights -----------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.int8, torch.uint8, torch.bool])
def test_integer_or_bool_data_for_a_float_weight_is_refused_before_reading(make_pair, tmp_path, monkeypatch, dtype):
    _, _, path = make_pair("glm4v_moe")
    tensors = load_file(path / "model.safetensors")
    name = "model.language_model.norm.weight"
    tensors[name] = tensors[name].to(dtype)
    write_checkpoint(path, tmp_path, tensors=tensors)
    monkeypatch.setattr(glmv.weights, "read_into", lambda *a: pytest.fail("read a tensor before checking the dtypes"))
    msg = load_error(tmp_path)
    assert f"dtype mismatch (1): {name}: checkpoint {str(dtype).removeprefix('torch.')}, model float32" in msg
    assert "floating-point" in msg


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_float_data_of_any_width_loads_into_float_weights(make_pair, tmp_path, dtype):
    _, _, path = make_pair("glm4v_moe")
    tensors = load_file(path / "model.safetensors")
    name = "model.language_model.norm.weight"
    tensors[name] = tensors[name].to(dtype)
    model = glmv.load_model(write_checkpoint(path, tmp_path, tensors=tensors), progress=False)
    assert torch.equal(model.language_model.norm.weight, tensors[name].float())


def test_a_dtype_glmv_cannot_read_is_named(make_pair, tmp_path):
    _, _, path = make_pair("glm4v_moe")
    write_checkpoint(path, tmp_path)
    data = (tmp_path / "model.safetensors").read_bytes()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + n])
    header["model.language_model.norm.weight"]["dtype"] = "C64"  # complex64: 8 bytes per value, not a weight
    header["model.language_model.norm.weight"]["shape"] = [32]  # same bytes as 64 float32 values
    raw = json.dumps(header, separators=(",", ":")).encode().ljust(n)
    assert len(raw) == n
    (tmp_path / "model.safetensors").write_bytes(data[:8] + raw + data[8 + n :])
    msg = load_error(tmp_path)
    assert "tensor 'model.language_model.norm.weight' is stored as C64, which glmv does not read" in msg


# --- 10: config values of the wrong type or range --------------------------------------------------------------

BAD_VALUES = [
    ("text_config", "hidden_size", "abc", "text_config.hidden_size must be a positive integer, got 'abc'"),
    ("text_config", "hidden_size", -64, "text_config.hidden_size must be a positive integer, got -64"),
    ("text_config", "vocab_size", 1000.0, "text_config.vocab_size must be a positive integer, got 1000.0"),
    ("text_config", "num_key_value_heads", 0, "text_config.num_key_value_heads must be a positive integer, got 0"),
    ("text_config", "n_routed_experts", True, "text_config.n_routed_experts must be a positive integer, got True"),
    ("text_config", "num_experts_per_tok", 9, "num_experts_per_tok (9) is more than n_routed_experts (8)"),
    ("text_config", "rope_parameters", "x", "text_config.rope_parameters must be a JSON object, got 'x'"),
    ("text_config", "rms_norm_eps", "1e-5", "text_config.rms_norm_eps must be a positive number, got '1e-5'"),
    ("text_config", "attention_bias", "false", "text_config.attention_bias must be true or false, got 'false'"),
    ("text_config", "eos_token_id", "</s>", "text_config.eos_token_id must be a token id or a list of token ids"),
    ("vision_config", "depth", 2.5, "vision_config.depth must be a positive integer, got 2.5"),
    ("vision_config", "hidden_size", 36, "vision_config hidden_size (36) must be num_heads (2) times a multiple of 4"),
    ("vision_config", "image_size", 7, "vision_config image_size (7) is smaller than patch_size (14)"),
    ("vision_config", "rope_parameters", [10000.0], "vision_config.rope_parameters must be a JSON object"),
    (None, "text_config", [1, 2], "text_config must be a JSON object, got [1, 2]"),
    (None, "image_token_id", "250", "image_token_id must be an integer >= 0, got '250'"),
    (None, "tie_word_embeddings", "no", "tie_word_embeddings must be true or false, got 'no'"),
]


@pytest.mark.parametrize("section,field,value,message", BAD_VALUES,
                         ids=[f"{s}.{f}={v!r}" for s, f, v, _ in BAD_VALUES])
def test_a_bad_config_value_names_field_value_and_fix(make_pair, tmp_path, section, field, value, message):
    _, _, path = make_pair("glm4v_moe")
    config = json.loads((path / "config.json").read_text())
    (config[section] if section else config)[field] = value
    (tmp_path / "config.json").write_text(json.dumps(config))
    shutil.copy(path / "model.safetensors", tmp_path / "model.safetensors")
    msg = load_error(tmp_path, ConfigError)
    assert message in msg and "config.json" in msg and "correct" in msg


@pytest.mark.parametrize("field,value", [("vocab_size", 10**12), ("n_routed_experts", 10**9)])
def test_a_config_far_larger_than_the_files_is_refused_before_allocating(make_pair, tmp_path, monkeypatch, field,
                                                                         value):
    _, _, path = make_pair("glm4v_moe")
    write_checkpoint(path, tmp_path, text={field: value})
    monkeypatch.setattr(glmv.weights, "_materialize", lambda *a: pytest.fail("built the model before the size check"))
    msg = load_error(tmp_path, ConfigError)
    assert "safetensors files hold only" in msg and f"(text_config {field} x" in msg


@pytest.mark.parametrize("model_type", ["glm4v", "glm4v_moe"])
def test_weight_counts_are_a_close_lower_bound(make_pair, model_type):
    """The size check counts the model's big matrices from the config alone: never more than the model holds
    (a valid checkpoint is never refused), and most of it (so a wrong config is caught)."""
    _, ours, _ = make_pair(model_type)
    actual = sum(t.numel() for t in ours.state_dict().values())
    assert 0.9 * actual < sum(ours.config.weight_counts().values()) <= actual


def test_weight_counts_bound_the_bundled_model():
    config = GlmvConfig.from_pretrained(NANO)
    with torch.device("meta"):
        model = GlmvForConditionalGeneration(config)
    actual = sum(t.numel() for t in model.state_dict().values())
    assert 0.9 * actual < sum(config.weight_counts().values()) <= actual


@pytest.mark.parametrize("weight_map,got", [(["model.safetensors"], "got a JSON list"),
                                            ({"lm_head.weight": 5}, "got 5 for 'lm_head.weight'")])
def test_a_malformed_index_is_a_checkpoint_error(make_pair, tmp_path, weight_map, got):
    _, _, path = make_pair("glm4v_moe")
    write_checkpoint(path, tmp_path)
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    msg = load_error(tmp_path)
    assert "model.safetensors.index.json: weight_map must map each tensor name to the file that holds it" in msg
    assert got in msg


# --- 11: config.json dtype -------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["dtype", "torch_dtype"])
def test_an_unknown_dtype_in_config_is_refused(make_pair, tmp_path, key):
    _, _, path = make_pair("glm4v_moe")
    write_checkpoint(path, tmp_path, top={"dtype": None, key: "float99"})
    msg = load_error(tmp_path, ConfigError)
    assert "dtype 'float99'" in msg and "float32, bfloat16, float16, float64" in msg


@pytest.mark.parametrize("name", ["bfloat16", "torch.bfloat16"])
def test_the_config_dtype_decides_the_model_dtype(make_pair, tmp_path, name):
    _, _, path = make_pair("glm4v_moe")
    write_checkpoint(path, tmp_path, top={"dtype": None, "torch_dtype": name})
    assert glmv.load_model(tmp_path, progress=False).lm_head.weight.dtype == torch.bfloat16


# --- 11: generation_config.json ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    from glmv.testing.tiny_checkpoint import make_tiny_model_dir

    return make_tiny_model_dir(tmp_path_factory.mktemp("tiny_model"))


def with_generation_config(model_dir: Path, dst: Path, text: str) -> Path:
    shutil.copytree(model_dir, dst, dirs_exist_ok=True)
    (dst / "generation_config.json").write_text(text)
    return dst


@pytest.mark.parametrize("values,message", [({"temperature": "hot"}, "temperature must be >= 0, got 'hot'"),
                                            ({"top_p": 0}, "top_p must be in (0, 1], got 0"),
                                            ({"top_k": 2.5}, "top_k must be -1, 0 or")])
def test_a_bad_generation_config_fails_at_load_not_per_request(model_dir, tmp_path, values, message):
    with_generation_config(model_dir, tmp_path, json.dumps({"eos_token_id": [4], **values}))
    with pytest.raises(ConfigError) as e:
        glmv.LLM(tmp_path, progress=False)
    assert str(e.value).startswith("generation_config.json: ") and message in str(e.value)


def test_null_generation_values_keep_the_defaults(model_dir, tmp_path):
    with_generation_config(model_dir, tmp_path, json.dumps({"temperature": None, "top_p": 0.5}))
    params = glmv.LLM(tmp_path, progress=False).default_sampling_params()
    assert (params.temperature, params.top_p) == (1.0, 0.5)


def test_a_packed_int4_checkpoint_is_not_taken_for_a_wrong_config(tmp_path):
    """Packed int4 weights take half a byte each: a checkpoint mostly of them holds fewer bytes than weights and
    is still accepted (GLM-4.5V with int4 experts: ~107B weights in ~64 GB)."""
    from glmv.quant.convert import convert
    from glmv.testing.tiny_checkpoint import make_tiny_model_dir

    src = make_tiny_model_dir(tmp_path / "src", text={"n_routed_experts": 64, "moe_intermediate_size": 64})
    dst = convert(src, tmp_path / "int4", "int4", group_size=32, only="experts", dtype="bfloat16", progress=False)
    weights = sum(GlmvConfig.from_pretrained(dst).weight_counts().values())
    assert sum(f.stat().st_size for f in dst.glob("*.safetensors")) < weights  # under a byte a weight
    glmv.load_model(dst)
