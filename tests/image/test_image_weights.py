"""load_prior: the checkpoint layouts it reads, and one CheckpointError listing every mismatch."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from glmv.errors import CheckpointError, ConfigError
from glmv.image import load_prior
from glmv.image.tiny_checkpoint import make_tiny_prior, random_text


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_prior(tmp_path_factory.mktemp("prior") / "vision_language_encoder")


def logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([random_text(9, 0)])).logits


def test_the_glm_image_root_and_its_subfolder_load_the_same(tiny, prior_pair):
    """A GLM-Image root (model_index.json + vision_language_encoder/) and the subfolder itself; the weights are the
    reference's (equal logits)."""
    (tiny.parent / "model_index.json").write_text(json.dumps({"_class_name": "GlmImagePipeline"}))
    from_root, from_sub = load_prior(tiny.parent), load_prior(tiny)
    assert torch.equal(logits(from_root), logits(from_sub))
    ref, ours, _ = prior_pair()  # the same seed and config: the same weights as `tiny`
    with torch.no_grad():
        assert (ref(input_ids=torch.tensor([random_text(9, 0)])).logits - logits(from_root)).abs().max() <= 1e-4
    assert not from_root.training


def test_sharded_checkpoint_with_index(tmp_path, prior_pair):
    ref, ours, _ = prior_pair()
    ref.save_pretrained(tmp_path, max_shard_size="100KB")
    assert (tmp_path / "model.safetensors.index.json").is_file() and len(list(tmp_path.glob("*.safetensors"))) > 1
    assert torch.equal(logits(load_prior(tmp_path)), logits(ours))


def test_dtype_on_load(tiny):
    model = load_prior(tiny, dtype="bfloat16")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert logits(model).dtype == torch.bfloat16
    with pytest.raises(ConfigError, match="floating-point"):
        load_prior(tiny, dtype="int8")


def copy_with(tiny: Path, tmp_path: Path, edit) -> Path:
    """A copy of the tiny checkpoint whose tensors went through `edit(dict)`."""
    out = tmp_path / "edited"
    shutil.copytree(tiny, out)
    tensors = load_file(out / "model.safetensors")
    edit(tensors)
    save_file(tensors, out / "model.safetensors", metadata={"format": "pt"})
    return out


def test_all_mismatches_in_one_error(tiny, tmp_path):
    def edit(t):
        del t["model.vqmodel.quantize.embedding.weight"]
        t["model.visual.extra.weight"] = torch.zeros(2)
        t["lm_head.weight"] = t["lm_head.weight"][:-1].contiguous()
        t["model.language_model.norm.weight"] = torch.ones(64, dtype=torch.int32)

    with pytest.raises(CheckpointError) as e:
        load_prior(copy_with(tiny, tmp_path, edit))
    text = str(e.value)
    assert "missing (1): model.vqmodel.quantize.embedding.weight" in text
    assert "unexpected (1): model.visual.extra.weight" in text
    assert "shape mismatch (1): lm_head.weight: checkpoint [143, 64], model [144, 64]" in text
    assert "dtype mismatch (1): model.language_model.norm.weight" in text


def test_broken_directories(tiny, tmp_path):
    with pytest.raises(CheckpointError, match="not a directory"):
        load_prior(tmp_path / "nothing")
    empty = tmp_path / "empty"
    empty.mkdir()
    shutil.copy(tiny / "config.json", empty / "config.json")
    with pytest.raises(CheckpointError, match="no \\*.safetensors"):
        load_prior(empty)
    (empty / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": "gone.safetensors"}}))
    with pytest.raises(CheckpointError, match="shards that are not there"):
        load_prior(empty)
    (empty / "model.safetensors.index.json").write_text("[]")
    with pytest.raises(CheckpointError, match="not a valid safetensors index"):
        load_prior(empty)
    truncated = tmp_path / "truncated"
    shutil.copytree(tiny, truncated)
    data = (truncated / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_prior(truncated)


def test_a_config_far_larger_than_the_weights_is_refused_before_allocation(tiny, tmp_path):
    big = tmp_path / "big"
    shutil.copytree(tiny, big)
    d = json.loads((big / "config.json").read_text())
    d["text_config"]["vocab_size"] = 10**12
    (big / "config.json").write_text(json.dumps(d))
    with pytest.raises(ConfigError, match="does not belong to these weights"):
        load_prior(big)
