"""Quantised checkpoints: glmv's dequantisation equals compressed-tensors' bit for bit, what `glmv convert` writes
loads and computes with exactly the weights the library decompresses, hand-built FP8 layouts (compressed-tensors
per tensor / channel, DeepSeek-style block FP8) load, and unsupported schemes fail with a message naming them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from glmv.errors import CheckpointError
from glmv.quant.convert import convert
from glmv.quant.modules import QuantExperts, QuantLinear
from glmv.quant.scheme import WeightQuant
from glmv.quant.tensors import dequantize, quantize
from glmv.testing.tiny_checkpoint import make_tiny_checkpoint
from glmv.weights import load_model

ct = pytest.importorskip("compressed_tensors")
from compressed_tensors.compressors import BaseCompressor  # noqa: E402
from compressed_tensors.quantization import QuantizationScheme  # noqa: E402

SCHEMES = [
    WeightQuant("float", 8, "tensor"), WeightQuant("float", 8, "channel"), WeightQuant("float", 8, "block", block=(16, 32)),
    WeightQuant("int", 8, "channel"), WeightQuant("int", 8, "group", group_size=32, packed=True),
    WeightQuant("int", 4, "group", group_size=32, packed=True), WeightQuant("int", 4, "channel", packed=True),
]


def _library_weight(tensors: dict[str, torch.Tensor], wq: WeightQuant) -> torch.Tensor:
    scheme = QuantizationScheme(targets=["Linear"], weights=wq.to_args())
    return BaseCompressor.get_value_from_registry(wq.format).decompress(dict(tensors), scheme)["weight"]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("wq", SCHEMES, ids=lambda w: f"{w.kind}{w.bits}-{w.strategy}")
def test_dequantize_equals_compressed_tensors(wq, dtype):
    torch.manual_seed(0)
    w = torch.randn(40, 96, dtype=dtype)  # 40 rows: a partial block; 96 columns: a partial packed word for int4
    stored = quantize(w, wq)
    ours = dequantize(stored[wq.data_name], stored["weight_scale"], wq, 96, dtype)
    assert torch.equal(ours, _library_weight(stored, wq).to(dtype))
    assert (ours - w).norm() < 0.2 * w.norm()  # and it is a quantisation of w, not something else


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "moe", "glm4v_moe")


@pytest.fixture(scope="module")
def tiny_dense(tmp_path_factory):
    return make_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "dense", "glm4v")


def _logits(model, seed=0):
    torch.manual_seed(seed)
    with torch.no_grad():
        return model(torch.randint(0, 100, (64, 12))).logits


def _with_library_weights(src: Path, quantised_dir: Path):
    """The float model of `src` with every quantised weight replaced by compressed-tensors' decompression of the
    tensors convert wrote: what a quantised model must compute, exactly."""
    model = load_model(src, progress=False)
    wq_by_name = {}
    config = json.loads((quantised_dir / "config.json").read_text())["quantization_config"]
    args = config["config_groups"]["group_0"]["weights"]
    wq = WeightQuant(args["type"], args["num_bits"], args["strategy"], group_size=args.get("group_size"),
                     packed=config["format"] == "pack-quantized")
    stored = load_file(str(quantised_dir / "model.safetensors"))
    float_tensors = {}
    for name in stored:
        if name.endswith(".weight_scale"):
            base = name.removesuffix(".weight_scale")
            parts = {k.rsplit(".", 1)[1]: v for k, v in stored.items() if k.rsplit(".", 1)[0] == base}
            float_tensors[base + ".weight"] = _library_weight(parts, wq)
            wq_by_name[base] = wq
    assert float_tensors, "nothing was quantised"
    from glmv.weights import checkpoint_tensors

    targets = checkpoint_tensors(model)
    with torch.no_grad():
        for name, t in float_tensors.items():
            targets[name].copy_(t)
    return model


@pytest.mark.parametrize("scheme,only,group", [("fp8", "all", 128), ("int8", "all", 128), ("int4", "experts", 16)])
def test_convert_computes_with_the_library_decompressed_weights(tiny, tmp_path, scheme, only, group):
    out = convert(tiny, tmp_path / scheme, scheme, group_size=group, only=only, progress=False)
    quantised = load_model(out, progress=False)
    kinds = {type(m) for m in quantised.modules()}
    assert QuantExperts in kinds and (QuantLinear in kinds) == (only == "all")
    assert not any(isinstance(m, QuantLinear) for m in quantised.visual.modules())  # the ViT stays float
    expected = _logits(_with_library_weights(tiny, out))
    assert torch.allclose(_logits(quantised), expected, atol=1e-5, rtol=0)


# Measured on these tiny random models (relative logit error / top-1 agreement over 64 prompts):
#   moe   fp8 experts 0.006 / 0.97, fp8 all 0.064 / 0.92, int8 all 0.018 / 1.00, int4 g16 experts 0.023 / 0.95
#   dense int8 all 0.020 / 1.00, fp8 all 0.083 / 0.92
# FP8 e4m3 keeps 3 mantissa bits (2.6% RMS error per weight); random attention weights amplify that in the
# logits, which is why FP8 of every linear misses the 2% that FP8 of the experts meets.
@pytest.mark.parametrize("model,scheme,only,group,max_rel,min_agree", [
    ("moe", "fp8", "experts", 128, 0.02, 0.95), ("moe", "int8", "all", 128, 0.02, 0.95),
    ("moe", "int4", "experts", 16, 0.05, 0.85), ("dense", "int8", "all", 128, 0.03, 0.95),
    ("dense", "fp8", "all", 128, 0.12, 0.85),
])
def test_quantised_logits_stay_close(tiny, tiny_dense, tmp_path, model, scheme, only, group, max_rel, min_agree):
    src = tiny if model == "moe" else tiny_dense
    base = _logits(load_model(src, progress=False))
    got = _logits(load_model(convert(src, tmp_path / "q", scheme, group_size=group, only=only, progress=False),
                             progress=False))
    rel = float((got - base).norm() / base.norm())
    agree = float((got[:, -1].argmax(-1) == base[:, -1].argmax(-1)).float().mean())
    assert rel <= max_rel and agree >= min_agree, (rel, agree)


def _hand_built(src: Path, dst: Path, quant_config: dict, store) -> dict[str, torch.Tensor]:
    """A copy of `src` whose decoder linears are rewritten by `store(name, weight) -> tensors`; returns the
    dequantised weights the checkpoint now means, by checkpoint name."""
    shutil.copytree(src, dst)
    tensors = load_file(str(dst / "model.safetensors"))
    meant, out = {}, {}
    for name, w in tensors.items():
        if name.startswith("model.language_model.layers.") and name.endswith("_proj.weight") and w.dim() == 2:
            written, meant[name] = store(name.removesuffix(".weight"), w)
            out.update(written)
        else:
            out[name] = w
    save_file(out, str(dst / "model.safetensors"), metadata={"format": "pt"})
    config = json.loads((dst / "config.json").read_text())
    (dst / "config.json").write_text(json.dumps({**config, "quantization_config": quant_config}))
    return meant


def _reference_with(src: Path, meant: dict[str, torch.Tensor]):
    from glmv.weights import checkpoint_tensors

    model = load_model(src, progress=False)
    targets = checkpoint_tensors(model)
    with torch.no_grad():
        for name, w in meant.items():
            targets[name].copy_(w)
    return model


def test_compressed_tensors_fp8_per_tensor_with_input_scales_and_vllm_names(tiny, tmp_path):
    """GLM-4.5V-FP8's layout as documented: float-quantized, scalar weight scales, static input scales (read past:
    glmv is weight-only), and an ignore list naming the ViT with vLLM's module names (the ViT here is bf16 on disk
    and must stay so)."""
    def store(base, w):
        scale = (w.abs().max() / 448.0).reshape(())  # a 0-d scale, as some exporters write it
        q = (w / scale).clamp(-448, 448).to(torch.float8_e4m3fn)
        return ({f"{base}.weight": q, f"{base}.weight_scale": scale, f"{base}.input_scale": torch.tensor(0.5)},
                q.float() * scale)

    config = {"quant_method": "compressed-tensors", "format": "float-quantized", "quantization_status": "compressed",
              "ignore": ["lm_head", "visual.blocks.0.attn.qkv_proj", "visual.blocks.1.attn.qkv_proj"],
              "config_groups": {"group_0": {"targets": ["Linear"],
                                            "weights": {"num_bits": 8, "type": "float", "strategy": "tensor",
                                                        "symmetric": True, "dynamic": False},
                                            "input_activations": {"num_bits": 8, "type": "float", "strategy": "tensor",
                                                                  "symmetric": True, "dynamic": False}}}}
    meant = _hand_built(tiny, tmp_path / "fp8", config, store)
    got = _logits(load_model(tmp_path / "fp8", progress=False))
    assert torch.allclose(got, _logits(_reference_with(tiny, meant)), atol=1e-4, rtol=0)


def test_block_fp8_weight_scale_inv(tiny, tmp_path):
    """`quant_method: fp8` with weight_block_size (DeepSeek-V3 / Qwen FP8 layout): `weight_scale_inv` multiplies
    each block; shapes that do not divide into blocks keep a partial last block."""
    block = (16, 32)

    def store(base, w):
        wq = WeightQuant("float", 8, "block", block=block)
        stored = quantize(w, wq)
        meant = dequantize(stored["weight"], stored["weight_scale"], wq, w.shape[1], w.dtype)
        return {f"{base}.weight": stored["weight"], f"{base}.weight_scale_inv": stored["weight_scale"]}, meant

    meant = _hand_built(tiny, tmp_path / "block", {"quant_method": "fp8", "fmt": "e4m3", "weight_block_size": list(block),
                                                   "activation_scheme": "dynamic"}, store)
    got = _logits(load_model(tmp_path / "block", progress=False))
    assert torch.allclose(got, _logits(_reference_with(tiny, meant)), atol=1e-4, rtol=0)


def _with_config(src: Path, dst: Path, quantization_config) -> Path:
    shutil.copytree(src, dst)
    config = json.loads((dst / "config.json").read_text())
    (dst / "config.json").write_text(json.dumps({**config, "quantization_config": quantization_config}))
    return dst


@pytest.mark.parametrize("quantization_config,message", [
    ({"quant_method": "gptq", "bits": 4}, "quant_method 'gptq' is not supported"),
    ({"quant_method": "fp8", "weight_block_size": [128]}, "weight_block_size"),
    ({"quant_method": "compressed-tensors", "format": "pack-quantized", "config_groups": {"g": {
        "targets": ["Linear"], "weights": {"num_bits": 4, "type": "int", "strategy": "group", "group_size": 32,
                                           "symmetric": False}}}}, "asymmetric"),
    ({"quant_method": "compressed-tensors", "format": "float-quantized", "config_groups": {"g": {
        "targets": ["Linear"], "weights": {"num_bits": 4, "type": "float", "strategy": "group", "group_size": 16}}}},
     "which glmv does not read"),
    ({"quant_method": "compressed-tensors", "format": "float-quantized", "kv_cache_scheme": {"num_bits": 8, "type": "float"},
      "config_groups": {"g": {"targets": ["Linear"], "weights": {"num_bits": 8, "type": "float", "strategy": "channel"}}}},
     "kv_cache_scheme"),
])
def test_unsupported_schemes_are_named(tiny, tmp_path, quantization_config, message):
    with pytest.raises(CheckpointError, match=message):
        load_model(_with_config(tiny, tmp_path / "q", quantization_config), progress=False)


def test_quantised_tensors_the_config_ignores_are_an_error(tiny, tmp_path):
    out = convert(tiny, tmp_path / "q", "int8", only="all", progress=False)
    config = json.loads((out / "config.json").read_text())
    config["quantization_config"]["ignore"].append("re:.*self_attn.*")
    (out / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="does not target it"):
        load_model(out, progress=False)


def test_packed_weight_shape_is_checked(tiny, tmp_path):
    out = convert(tiny, tmp_path / "q", "int4", group_size=16, progress=False)
    tensors = load_file(str(out / "model.safetensors"))
    name = next(k for k in tensors if k.endswith(".weight_shape"))
    tensors[name] = tensors[name] + torch.tensor([0, 1])
    save_file(tensors, str(out / "model.safetensors"))
    with pytest.raises(CheckpointError, match="weight_shape"):
        load_model(out, progress=False)


def test_fp8_weight_without_scale_is_a_dtype_mismatch(tiny, tmp_path):
    shutil.copytree(tiny, tmp_path / "f")
    tensors = load_file(str(tmp_path / "f" / "model.safetensors"))
    name = next(k for k in tensors if k.endswith("q_proj.weight"))
    tensors[name] = tensors[name].to(torch.float8_e4m3fn)
    save_file(tensors, str(tmp_path / "f" / "model.safetensors"))
    with pytest.raises(CheckpointError, match="dtype mismatch"):
        load_model(tmp_path / "f", progress=False)


def test_convert_dtype_and_refusals(tiny, tiny_dense, tmp_path):
    bf16 = load_model(convert(tiny, tmp_path / "bf16", dtype="bfloat16", progress=False), progress=False)
    assert bf16.dtype == torch.bfloat16
    assert json.loads((tmp_path / "bf16" / "config.json").read_text())["dtype"] == "bfloat16"
    q = convert(tiny, tmp_path / "q", "int8", progress=False)
    with pytest.raises(CheckpointError, match="already quantised"):
        convert(q, tmp_path / "again", "int8", progress=False)
    with pytest.raises(CheckpointError, match="dense model"):
        convert(tiny_dense, tmp_path / "dense", "int8", only="experts", progress=False)
    with pytest.raises(CheckpointError, match="groups of 128"):
        convert(tiny, tmp_path / "g", "int4", group_size=128, progress=False)


def test_convert_writes_shards_and_an_index(tiny, tmp_path):
    out = convert(tiny, tmp_path / "sharded", "int8", max_shard_bytes=64 * 1024, progress=False)
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1 and not list(out.glob("*.tmp"))
    base = _logits(load_model(convert(tiny, tmp_path / "one", "int8", progress=False), progress=False))
    assert torch.equal(_logits(load_model(out, progress=False)), base)


def test_int8_weight_only_matmul_matches_the_dequantised_weight_in_bf16(tiny, tmp_path):
    """The CPU fast path (torch's int8 weight-only matmul, bf16 activations) scales after the dot product: equal to
    the dequantised weight's matmul up to bf16 rounding, for plain linears and for routed experts."""
    model = load_model(convert(tiny, tmp_path / "q", "int8", only="all", dtype="bfloat16", progress=False),
                       progress=False)
    linear = model.language_model.layers[0].self_attn.q_proj
    experts = next(m for m in model.modules() if isinstance(m, QuantExperts))
    x = torch.randn(5, linear.in_features, dtype=torch.bfloat16)
    for module, expert in ((linear, None), (experts.gate_proj, 3), (experts.down_proj, 0)):
        rows = torch.randn(5, module.in_features, dtype=torch.bfloat16) if expert is not None else x
        fast = module.linear(rows, expert)
        exact = rows.float() @ module.dequantized(torch.float32, expert).T
        assert torch.allclose(fast.float(), exact, rtol=2e-2, atol=2e-2 * float(exact.abs().max()))


@pytest.mark.parametrize("quantised", [False, True])
def test_offloaded_experts_compute_on_the_host_with_the_same_numerics(tiny, tmp_path, quantised):
    """Routed experts placed in host RAM by the loader compute there; on a CPU-only machine the host store and the
    model's device are both the CPU, so this proves the placement and the numerics (the device hop itself, rows to
    the host and back, runs only with an accelerator)."""
    from glmv.errors import ConfigError

    src = convert(tiny, tmp_path / "q", "int8", progress=False) if quantised else tiny
    whole = load_model(src, progress=False)
    offloaded = load_model(src, progress=False, offload_experts=[1])
    experts = offloaded.language_model.layers[1].mlp.experts
    assert all(t.device.type == "cpu" for t in [*experts.parameters(), *experts.buffers()])
    assert torch.equal(_logits(offloaded), _logits(whole))
    with pytest.raises(ConfigError, match="no routed experts"):
        load_model(src, progress=False, offload_experts=[0])


@pytest.mark.parametrize("formats", ["int8", {"routed_experts": "int4", "attention": "fp8", "shared_experts": "int8"}])
def test_quantising_while_loading_equals_loading_what_convert_wrote(tiny, tmp_path, formats):
    """load_model(quantize=...) (what `--memory auto` applies) holds exactly what loading a converted checkpoint
    holds: same arithmetic, same scheme per module."""
    from glmv.quant.on_load import schemes_for

    on_load = load_model(tiny, progress=False, quantize=formats)
    names = schemes_for(load_model(tiny, progress=False), formats, torch.float32)
    assert {n for n, m in on_load.named_modules() if isinstance(m, (QuantLinear, QuantExperts))} == set(names)
    if formats == "int8":
        converted = load_model(convert(tiny, tmp_path / "q", "int8", only="all", progress=False), progress=False)
        assert torch.equal(_logits(on_load), _logits(converted))
    base = _logits(load_model(tiny, progress=False))
    assert float((_logits(on_load) - base).norm() / base.norm()) < 0.1


def test_quantise_on_load_refusals(tiny, tmp_path):
    with pytest.raises(CheckpointError, match="not understood"):
        load_model(tiny, progress=False, quantize={"vision": "int8"})
    with pytest.raises(CheckpointError, match="already quantised"):
        load_model(convert(tiny, tmp_path / "q", "int8", progress=False), progress=False, quantize="int8")


def test_mixed_schemes_int4_experts_with_fp8_rest(tiny, tmp_path):
    """`--quantize int4 --rest fp8`: two config groups (mixed-precision), read back per group; the same model as
    quantising those components while loading."""
    out = convert(tiny, tmp_path / "mixed", "int4", group_size=16, rest="fp8", progress=False)
    config = json.loads((out / "config.json").read_text())["quantization_config"]
    assert config["format"] == "mixed-precision" and len(config["config_groups"]) == 2
    model = load_model(out, progress=False)
    experts = model.language_model.layers[1].mlp.experts
    q_proj = model.language_model.layers[0].self_attn.q_proj
    assert (experts.gate_proj.wq.bits, experts.gate_proj.wq.packed) == (4, True)
    assert (q_proj.wq.kind, q_proj.wq.bits) == ("float", 8)
    formats = {"routed_experts": "int4", "attention": "fp8", "dense_mlp": "fp8", "shared_experts": "fp8"}
    assert torch.equal(_logits(model), _logits(load_model(tiny, progress=False, quantize=formats)))
    with pytest.raises(CheckpointError, match="--rest"):
        convert(tiny, tmp_path / "bad", "int8", only="all", rest="fp8", progress=False)


@pytest.mark.parametrize("strategy", ["channel", "tensor"])
def test_fp8_dynamic_w8a8_matmul(strategy):
    """The CUDA FP8 path (per-token e4m3 activations, torch._scaled_mm), run on the CPU implementation of
    _scaled_mm: equal to the matmul of the quantise-dequantised activations and weights, and close to the float."""
    from glmv.quant.matmul import fp8_dynamic

    torch.manual_seed(0)
    wq = WeightQuant("float", 8, strategy)
    w = torch.randn(48, 64) * 0.05
    stored = quantize(w, wq)
    rows = torch.randn(5, 64, dtype=torch.bfloat16)
    out = fp8_dynamic(rows, stored["weight"], stored["weight_scale"])
    row_scale = rows.float().abs().amax(-1, keepdim=True) / 448.0
    qx = (rows.float() / row_scale).to(torch.float8_e4m3fn).float() * row_scale
    expected = qx @ dequantize(stored["weight"], stored["weight_scale"], wq, 64, torch.float32).T
    assert out.dtype == torch.bfloat16
    assert torch.allclose(out.float(), expected, rtol=1e-2, atol=1e-2 * float(expected.abs().max()))
    exact = rows.float() @ w.T
    assert float((out.float() - exact).norm() / exact.norm()) < 0.06
