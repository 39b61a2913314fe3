"""The memory planner (glmv/plan.py): its counts against the model built on the meta device, its prices against
the issue's figures, and the strategy it picks for the real GLM-V configs on the devices docs/memory.md names.

The configs in tests/fixtures/configs are the released config.json files as the spec records them
(docs/memory.md says where each value comes from)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from glmv.config import GlmvConfig
from glmv.errors import ConfigError
from glmv.model.glm4v import GlmvForConditionalGeneration
from glmv.plan import GB, Matrices, components, free_memory, kv_bytes_per_token, plan_memory, total_ram

CONFIGS = Path(__file__).parent / "fixtures" / "configs"
NANO = Path(__file__).parents[1] / "glmv" / "assets" / "nano" / "config.json"


def load(name: str, tmp_path: Path, **edits) -> GlmvConfig:
    """A fixture config read from a checkpoint-like directory (config.json in it), with `edits` applied to the
    top level where it holds the key, else to text_config."""
    d = json.loads((CONFIGS / f"{name}.json").read_text())
    for key, value in edits.items():
        (d if key in d else d["text_config"])[key] = value
    (tmp_path / "config.json").write_text(json.dumps(d))
    return GlmvConfig.from_pretrained(tmp_path)


def component_of(name: str) -> str:
    """The planner's component of a state-dict entry of GlmvForConditionalGeneration."""
    if name.startswith(("visual.merger.", "visual.downsample.")):
        return "projector"
    if name.startswith("visual."):
        return "vision"
    if "embed_tokens" in name or name.startswith("lm_head"):
        return "embeddings"
    for part, component in ((".self_attn.", "attention"), (".mlp.gate.", "router"), (".mlp.experts.", "routed_experts"),
                            (".mlp.shared_experts.", "shared_experts"), (".mlp.", "dense_mlp")):
        if part in name:
            return component
    assert name.endswith("norm.weight"), name
    return "norms"


def meta_counts(config: GlmvConfig) -> tuple[dict[str, int], int]:
    """Elements per component of the model built on the meta device (parameters, tied ones once, and persistent
    buffers), and its bytes with parameters in bf16 and buffers in their own dtype."""
    with torch.device("meta"):
        model = GlmvForConditionalGeneration(config)
    counts: dict[str, int] = {}
    tensors = [(n, p, 2) for n, p in model.named_parameters()]
    tensors += [(n, b, b.element_size()) for n, b in model.named_buffers() if n in model.state_dict()]
    for name, tensor, _ in tensors:
        counts[component_of(name)] = counts.get(component_of(name), 0) + tensor.numel()
    return counts, sum(t.numel() * size for _, t, size in tensors)


VARIANTS = [("glm45v", {}), ("glm46v", {}), ("glm41v", {}),
            ("glm45v", {"tie_word_embeddings": True, "n_shared_experts": 2, "first_k_dense_replace": 3}),
            ("glm41v", {"tie_word_embeddings": True})]


@pytest.mark.parametrize("name,edits", VARIANTS)
def test_counts_equal_the_meta_model_per_component(name, edits, tmp_path):
    config = load(name, tmp_path, **edits)
    parts = components(config)
    counts, bf16_bytes = meta_counts(config)
    assert {k: c.params for k, c in parts.items() if c.params} == counts
    assert sum(c.bytes("bf16") for c in parts.values()) == bf16_bytes


def test_counts_of_the_nano_model_with_vision_biases(tmp_path):
    d = json.loads(NANO.read_text())
    d["vision_config"]["attention_bias"] = True
    (tmp_path / "config.json").write_text(json.dumps(d))
    config = GlmvConfig.from_pretrained(tmp_path)
    counts, _ = meta_counts(config)
    assert {k: c.params for k, c in components(config).items() if c.params} == counts


def test_glm45v_matches_the_issue_figures(tmp_path):
    """107.7B parameters; 215 GB bf16; 67.5 GB with int4 routed experts and bf16 elsewhere; 108.6 GB in FP8 with
    every text weight at 1 byte (embeddings and lm_head too) and the vision side in bf16 (108.57 GB; the per-row
    scales add 0.08 GB)."""
    parts = components(load("glm45v", tmp_path))
    assert sum(c.params for c in parts.values()) == 107_710_933_120  # spec 8.1: 107.71 B, recomputed from shapes
    bf16 = sum(c.bytes("bf16") for c in parts.values())
    assert round(bf16 / GB, 1) == 215.4
    int4_experts = bf16 - parts["routed_experts"].bytes("bf16") + parts["routed_experts"].bytes("int4")
    assert round(int4_experts / GB, 1) == 67.5
    vision_side = ("vision", "projector")
    fp8_text = sum(c.bytes("bf16" if k in vision_side else "fp8") for k, c in parts.items())
    assert abs(fp8_text / GB - 108.6) < 0.1


def test_quantised_prices():
    m = Matrices(rows=4096, cols=10944, count=3)  # 10944 = 85.5 groups of 128: the last group is partial
    assert m.bytes("bf16") == 3 * 2 * 4096 * 10944
    assert m.bytes("fp8") == m.bytes("int8") == 3 * (4096 * 10944 + 2 * 4096)  # a bf16 scale per output row
    assert m.bytes("int4") == 3 * (4096 * 10944 // 2 + 2 * 4096 * 86)  # a bf16 scale per started group


def test_kv_bytes_per_token(tmp_path):
    assert kv_bytes_per_token(load("glm45v", tmp_path).text) == 2 * 46 * 8 * 128 * 2
    assert kv_bytes_per_token(load("glm41v", tmp_path).text) == 2 * 40 * 2 * 128 * 2


# (config, device, memory, strategy, quantize, quantized parts, offloaded layers)
REAL = [
    ("glm45v", "cuda:0", 80 * GB, "int4 routed experts + fp8 decoder", "int4", "all", []),
    ("glm45v", "cuda:0", 141 * GB, "fp8 routed experts", "fp8", "experts", []),
    ("glm46v", "cuda:0", 80 * GB, "int4 routed experts + fp8 decoder, last 9 MoE layers' experts in CPU RAM", "int4",
     "all", list(range(37, 46))),
    ("glm46v", "cuda:0", 141 * GB, "int4 routed experts + fp8 decoder", "int4", "all", []),
    ("glm41v", "cuda:0", 24 * GB, "fp8 decoder", "fp8", "all", []),
    ("glm41v", "cpu", 32 * GB, "bf16", None, None, []),
]


@pytest.mark.parametrize("name,device,memory,strategy,quantize,parts,offloaded", REAL)
def test_real_configs_fit_with_the_expected_strategy(name, device, memory, strategy, quantize, parts, offloaded,
                                                     tmp_path):
    plan = plan_memory(load(name, tmp_path), device, memory, cpu_memory_bytes=128 * GB)
    assert plan.fits and not plan.advice
    assert (plan.strategy, plan.quantize, plan.quantized_parts, plan.offload_layers) == (
        strategy, quantize, parts, offloaded)
    assert plan.device_bytes <= plan.usable_bytes == memory - max(2**30, memory // 20)
    assert plan.formats["vision"] == plan.formats["projector"] == plan.formats["embeddings"] == "bf16"
    assert all(not ok for _, ok in plan.tried[:-1])  # the first rung that fits is the plan
    assert plan.strategy in plan.describe()


def test_offload_takes_the_fewest_layers_that_fit(tmp_path):
    config = load("glm46v", tmp_path)
    plan = plan_memory(config, "cuda", 80 * GB, cpu_memory_bytes=128 * GB)
    per_layer = plan.weights_cpu_bytes // len(plan.offload_layers)
    assert per_layer == components(config)["routed_experts"].bytes("int4") // 45
    assert plan.device_bytes + per_layer > plan.usable_bytes  # one layer fewer would not fit


def test_offload_needs_the_cpu_ram(tmp_path):
    plan = plan_memory(load("glm46v", tmp_path), "cuda", 80 * GB, cpu_memory_bytes=8 * GB)
    assert not plan.fits and plan.offload_layers
    assert "more CPU RAM" in plan.advice and "--cpu-memory" in plan.advice


def test_offloading_every_moe_layer_may_not_be_enough(tmp_path):
    plan = plan_memory(load("glm45v", tmp_path), "cuda", 16 * GB, cpu_memory_bytes=256 * GB)
    assert not plan.fits and plan.offload_layers == list(range(1, 46))
    assert "CPU RAM" not in plan.advice and "--max-model-len" in plan.advice


def test_cpu_falls_back_to_memory_mapping(tmp_path):
    plan = plan_memory(load("glm41v", tmp_path), "cpu", 8 * GB)
    assert plan.fits and plan.mmap and plan.weights_device_bytes == 0 and plan.quantize is None
    assert plan.load_kwargs() == {"dtype": "bfloat16", "quantize": None, "offload_experts": [], "mmap": True}
    # an MoE's stacked routed experts are read, not mapped: GLM-4.5V's do not fit 32 GB of RAM even so
    plan = plan_memory(load("glm45v", tmp_path), "cpu", 32 * GB)
    assert not plan.fits and plan.mmap and plan.weights_device_bytes == plan.components["routed_experts"].bytes("bf16")
    assert [r.name for r, _ in plan.tried][1:4] == ["int8 routed experts", "int8 decoder",
                                                    "int4 routed experts + int8 decoder"]


def test_dense_model_skips_the_expert_rungs(tmp_path):
    plan = plan_memory(load("glm41v", tmp_path), "cuda", 10 * GB)
    assert [r.name for r, _ in plan.tried] == ["bf16", "fp8 decoder"]
    assert not plan.fits and "a device with more memory" in plan.advice


def test_too_long_a_context_advises_a_shorter_one(tmp_path):
    plan = plan_memory(load("glm41v", tmp_path), "cuda", 16 * GB, max_num_seqs=8)
    assert not plan.fits
    tokens = (plan.usable_bytes - plan.tried[-1][0].device_bytes) // plan.kv_bytes_per_token
    assert f"--max-model-len {tokens // 8} with --max-num-seqs 8" in plan.advice
    assert plan_memory(load("glm41v", tmp_path), "cuda", 16 * GB, tokens // 8, 8).fits


@pytest.mark.parametrize("kwargs", [{"memory_bytes": 0}, {"max_model_len": 0}, {"max_num_seqs": 0},
                                    {"cpu_memory_bytes": 0}, {"device": "mps"}])
def test_bad_arguments_are_config_errors(kwargs, tmp_path):
    args = {"device": "cuda", "memory_bytes": 80 * GB, **kwargs}
    with pytest.raises(ConfigError):
        plan_memory(load("glm41v", tmp_path), **args)


def test_auto_memory_on_cpu_is_the_available_ram():
    assert 0 < free_memory("cpu") <= total_ram()

