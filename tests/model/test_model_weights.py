"""Checkpoint loading and saving: round trips, sharding, dtypes, and clear errors for broken checkpoints."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

import glmv
from glmv.errors import CheckpointError
from glmv.testing.prompts import (
    image_tokens,
    mm_token_types,
    random_pixels,
    random_text,
)


def prompt():
    ids = torch.tensor([random_text(4, 1) + image_tokens(4, 6) + random_text(5, 2)])
    grid = torch.tensor([(1, 4, 6)])
    return ids, random_pixels(grid.tolist(), 3), grid


@pytest.mark.parametrize("model_type", ["glm4v", "glm4v_moe"])
def test_round_trip_through_transformers(make_pair, model_type, tmp_path):
    import transformers

    ref, ours, _ = make_pair(model_type)
    glmv.save_model(ours, tmp_path, progress=False)
    back = transformers.AutoModelForImageTextToText.from_pretrained(tmp_path).eval()
    ids, pv, grid = prompt()
    with torch.no_grad():
        kw = dict(input_ids=ids, pixel_values=pv, image_grid_thw=grid, mm_token_type_ids=mm_token_types(ids))
        assert torch.equal(back(**kw).logits, ref(**kw).logits)
        assert torch.equal(glmv.load_model(tmp_path, progress=False)(ids, pixel_values=pv, image_grid_thw=grid).logits,
                           ours(ids, pixel_values=pv, image_grid_thw=grid).logits)


def test_sharded_checkpoint_and_index(make_pair, tmp_path):
    _, ours, _ = make_pair("glm4v_moe")
    glmv.save_model(ours, tmp_path, max_shard_bytes=200_000, progress=False)
    shards = sorted(tmp_path.glob("model-*.safetensors"))
    assert len(shards) > 2
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == {s.name for s in shards}
    assert "model.language_model.layers.1.mlp.experts.7.down_proj.weight" in index["weight_map"]
    again = glmv.load_model(tmp_path, progress=False)
    for (n1, a), (n2, b) in zip(ours.state_dict().items(), again.state_dict().items()):
        assert n1 == n2 and torch.equal(a, b), n1


def test_bf16_load_keeps_router_bias_fp32(make_pair):
    _, ours, path = make_pair("glm4v_moe")
    model = glmv.load_model(path, dtype="bfloat16", progress=False)
    assert model.lm_head.weight.dtype == torch.bfloat16
    bias = model.language_model.layers[1].mlp.gate.e_score_correction_bias
    assert bias.dtype == torch.float32
    assert torch.equal(bias, ours.language_model.layers[1].mlp.gate.e_score_correction_bias)
    ids, pv, grid = prompt()
    with torch.no_grad():
        lo = model(ids, pixel_values=pv, image_grid_thw=grid).logits.float()
        hi = ours(ids, pixel_values=pv, image_grid_thw=grid).logits
    assert (lo - hi).abs().max() < 0.15  # bf16 rounding only


def test_stacked_expert_tensors_are_accepted(make_pair, tmp_path):
    _, ours, path = make_pair("glm4v_moe")
    shutil.copy(path / "config.json", tmp_path / "config.json")
    tensors = load_file(path / "model.safetensors")
    prefix = "model.language_model.layers.1.mlp.experts"
    gate = torch.stack([tensors.pop(f"{prefix}.{e}.gate_proj.weight") for e in range(8)])
    up = torch.stack([tensors.pop(f"{prefix}.{e}.up_proj.weight") for e in range(8)])
    tensors[f"{prefix}.gate_up_proj"] = torch.cat([gate, up], dim=1)
    tensors[f"{prefix}.down_proj"] = torch.stack([tensors.pop(f"{prefix}.{e}.down_proj.weight") for e in range(8)])
    save_file(tensors, tmp_path / "model.safetensors")
    again = glmv.load_model(tmp_path, progress=False)
    assert torch.equal(again.language_model.layers[1].mlp.experts.gate_up_proj, ours.language_model.layers[1].mlp.experts.gate_up_proj)


def test_missing_unexpected_and_mismatched_reported_together(make_pair, tmp_path):
    _, _, path = make_pair("glm4v_moe")
    shutil.copy(path / "config.json", tmp_path / "config.json")
    tensors = load_file(path / "model.safetensors")
    del tensors["model.language_model.layers.1.mlp.experts.3.up_proj.weight"]
    del tensors["model.visual.post_layernorm.weight"]
    tensors["model.language_model.layers.0.extra.weight"] = torch.zeros(2)
    tensors["model.language_model.norm.weight"] = torch.zeros(7)
    save_file(tensors, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError) as e:
        glmv.load_model(tmp_path, progress=False)
    msg = str(e.value)
    assert "missing (2)" in msg and "experts.3.up_proj.weight" in msg and "model.visual.post_layernorm.weight" in msg
    assert "unexpected (1): model.language_model.layers.0.extra.weight" in msg
    assert "model.language_model.norm.weight: checkpoint [7], model [64]" in msg


def test_mtp_layers_are_skipped(make_pair, tmp_path):
    _, ours, path = make_pair("glm4v_moe")
    config = json.loads((path / "config.json").read_text())
    config["text_config"]["num_nextn_predict_layers"] = 1  # GLM-4.5 declares its MTP layer this way
    (tmp_path / "config.json").write_text(json.dumps(config))
    tensors = load_file(path / "model.safetensors")
    tensors["model.language_model.layers.3.eh_proj.weight"] = torch.zeros(4, 4)  # layer index == num_hidden_layers
    save_file(tensors, tmp_path / "model.safetensors")
    again = glmv.load_model(tmp_path, progress=False)
    assert torch.equal(again.lm_head.weight, ours.lm_head.weight)


def test_truncated_and_corrupt_files_name_the_file(make_pair, tmp_path):
    _, _, path = make_pair("glm4v_moe")
    shutil.copy(path / "config.json", tmp_path / "config.json")
    data = (path / "model.safetensors").read_bytes()
    target = tmp_path / "model.safetensors"
    target.write_bytes(data[: len(data) - 1000])
    with pytest.raises(CheckpointError, match=r"model\.safetensors: file is truncated"):
        glmv.load_model(tmp_path, progress=False)
    target.write_bytes(struct.pack("<Q", 40) + b"{not json" + b" " * 31 + data[:100])
    with pytest.raises(CheckpointError, match=r"model\.safetensors: corrupt safetensors header"):
        glmv.load_model(tmp_path, progress=False)
    target.write_bytes(b"abc")
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        glmv.load_model(tmp_path, progress=False)
    target.unlink()
    with pytest.raises(CheckpointError, match="no \\*.safetensors"):
        glmv.load_model(tmp_path, progress=False)


def test_index_naming_a_missing_shard(make_pair, tmp_path):
    _, _, path = make_pair("glm4v_moe")
    shutil.copy(path / "config.json", tmp_path / "config.json")
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": "model-00001-of-00002.safetensors"}}))
    with pytest.raises(CheckpointError, match="model-00001-of-00002.safetensors"):
        glmv.load_model(tmp_path, progress=False)


PEAK_RSS_SCRIPT = r"""
import sys, glmv, glmv.weights
from glmv.testing.memory import peak, reset_peak, warm_up_model_code
warm_up_model_code(sys.argv[1])
base = reset_peak()
model = glmv.load_model(sys.argv[1], progress=False)
size = sum(t.numel() * t.element_size() for t in model.state_dict().values())
print(size, peak() - base)
"""


def test_peak_memory_of_load_is_close_to_model_size(tmp_path):
    """Loading streams tensors into place: peak RSS growth stays under 1.3x the model's bytes."""
    from glmv.testing.tiny_checkpoint import make_tiny_checkpoint

    # A vocabulary-heavy tiny model: ~130 MB of fp32 weights, so the measurement dwarfs allocator noise.
    make_tiny_checkpoint(tmp_path, "glm4v_moe", text=dict(vocab_size=256_000))
    out = subprocess.run([sys.executable, "-c", PEAK_RSS_SCRIPT, str(tmp_path)], capture_output=True, text=True, check=True)
    size, growth = map(int, out.stdout.split())
    assert size > 100e6
    assert growth <= 1.3 * size, f"peak RSS grew by {growth / size:.2f}x the model size"


def _mapped_files(ptr: int) -> set[str]:
    """Files whose mapping in this process contains address `ptr` (Linux /proc/self/maps)."""
    out = set()
    for line in open("/proc/self/maps"):
        fields = line.split()
        lo, hi = (int(x, 16) for x in fields[0].split("-"))
        if lo <= ptr < hi and len(fields) > 5:
            out.add(fields[5])
    return out


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="reads Linux's /proc/self/maps")
def test_mmap_loading_maps_the_files_and_computes_the_same(tmp_path):
    """load_model(mmap=True): tensors stored in the model's dtype are pages of the checkpoint file, not copies
    (what lets weights larger than RAM run on CPU); stacked experts are read. Same logits."""
    from glmv.testing.tiny_checkpoint import make_tiny_checkpoint

    path = make_tiny_checkpoint(tmp_path / "m", "glm4v_moe")
    read, mapped = glmv.load_model(path, progress=False), glmv.load_model(path, progress=False, mmap=True)
    file = str((path / "model.safetensors").resolve())
    assert file in _mapped_files(mapped.language_model.embed_tokens.weight.data_ptr())
    assert file not in _mapped_files(read.language_model.embed_tokens.weight.data_ptr())
    experts = mapped.language_model.layers[1].mlp.experts.gate_up_proj
    assert file not in _mapped_files(experts.data_ptr())
    ids = torch.randint(0, 100, (2, 9))
    with torch.no_grad():
        assert torch.equal(mapped(ids).logits, read(ids).logits)


def test_tied_embeddings_load_as_one_tensor_with_the_references_logits(tmp_path):
    from glmv.testing.tiny_checkpoint import logits_gap_to_reference, make_tiny_checkpoint

    path = make_tiny_checkpoint(tmp_path / "tied", "glm4v_moe", tie_word_embeddings=True)
    model = glmv.load_model(path, progress=False)
    assert model.lm_head.weight is model.language_model.embed_tokens.weight
    assert logits_gap_to_reference(path) <= 1e-4


def test_a_first_load_imports_neither_dynamo_nor_sympy(tmp_path):
    """Building the model skips torch.nn.init and allocates with torch.empty: on the meta device both would import
    torch._dynamo / sympy (3.5 s of a first load)."""
    from glmv.testing.tiny_checkpoint import make_tiny_checkpoint

    path = make_tiny_checkpoint(tmp_path / "m", "glm4v_moe")
    script = ("import sys, glmv.weights; glmv.weights.load_model(sys.argv[1], progress=False); "
              "print(sorted(m for m in ('torch._dynamo', 'sympy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
