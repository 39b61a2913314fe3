"""GlmImageConfig read from config.json, field by field against transformers' GlmImageConfig."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from glmv.errors import ConfigError
from glmv.image import GlmImageConfig, GlmImagePrior, prior_dir
from glmv.image.tiny_checkpoint import reference_config

# The released model's sizes are transformers' defaults; its rotary is half the head (spec 1.1, C3).
RELEASED_ROPE = {"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5,
                 "mrope_section": [8, 12, 12]}


def saved(config) -> dict:
    """config.json as transformers' save_pretrained writes it."""
    return json.loads(config.to_json_string())


def test_every_field_matches_transformers():
    ref = reference_config()
    cfg = GlmImageConfig.from_dict(saved(ref))
    t, v, q = ref.text_config, ref.vision_config, ref.vq_config
    for name in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                 "num_key_value_heads", "vision_vocab_size", "hidden_act", "rms_norm_eps", "max_position_embeddings",
                 "attention_bias", "pad_token_id"):
        assert getattr(cfg.text, name) == getattr(t, name), name
    assert cfg.text.eos_token_id == [t.eos_token_id]
    assert cfg.text.head_dim == t.hidden_size // t.num_attention_heads
    assert (cfg.text.rope_theta, cfg.text.partial_rotary_factor, cfg.text.mrope_section) == (
        t.rope_parameters["rope_theta"], t.rope_parameters["partial_rotary_factor"], t.rope_parameters["mrope_section"])
    for name in ("depth", "hidden_size", "num_heads", "intermediate_size", "patch_size", "image_size", "in_channels",
                 "spatial_merge_size", "hidden_act", "attention_bias", "layer_norm_eps"):
        assert getattr(cfg.vision, name) == getattr(v, name), name
    for name in ("embed_dim", "num_embeddings", "latent_channels"):
        assert getattr(cfg.vq, name) == getattr(q, name), name
    for name in ("image_token_id", "image_start_token_id", "image_end_token_id"):
        assert getattr(cfg, name) == getattr(ref, name), name


def test_the_released_sizes_build_the_reference_tensors():
    """At the released sizes (built on the meta device: nothing allocated) glmv's prior has exactly the reference's
    tensor names and shapes, and its 10.11 B parameters (spec 1.1)."""
    import transformers as tf

    ref_cfg = tf.GlmImageConfig(text_config={"rope_parameters": RELEASED_ROPE})
    cfg = GlmImageConfig.from_dict(saved(ref_cfg))
    with torch.device("meta"):
        ref = tf.GlmImageForConditionalGeneration(ref_cfg)
        ours = GlmImagePrior(cfg)
    expected = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    got = {(k if k.startswith("lm_head.") else "model." + k): tuple(v.shape) for k, v in ours.state_dict().items()}
    assert got == expected
    assert round(sum(p.numel() for p in ours.parameters()) / 1e9, 2) == 10.11


def test_rope_layouts_fold_as_in_transformers():
    """rope_scaling (older files) replaces rope_parameters whole; top-level rope_theta / partial_rotary_factor fill
    what the dict lacks; absent, partial_rotary_factor is 1.0 (the whole head rotates)."""
    import transformers as tf

    base = saved(reference_config())
    cases = [
        {"rope_parameters": None, "rope_scaling": {"type": "default", "mrope_section": [4, 6, 6]}},
        {"rope_parameters": {"mrope_section": [2, 3, 3]}, "rope_theta": 500.0, "partial_rotary_factor": 0.5},
        {"rope_parameters": {"mrope_section": [4, 6, 6], "rope_theta": 77.0}},
    ]
    for case in cases:
        text = {k: v for k, v in {**base["text_config"], **case}.items() if v is not None}
        ref = tf.GlmImageTextConfig(**{k: v for k, v in text.items() if k != "model_type"})
        d = copy.deepcopy(base)
        d["text_config"] = text
        cfg = GlmImageConfig.from_dict(d).text
        rope = ref.rope_parameters
        assert cfg.rope_theta == rope["rope_theta"], case
        assert cfg.partial_rotary_factor == rope.get("partial_rotary_factor", 1.0), case
        assert cfg.mrope_section == list(rope["mrope_section"]), case


def test_explicit_head_dim_is_read():
    d = saved(reference_config(text={"head_dim": 24, "rope_parameters": {
        "rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5, "mrope_section": [2, 2, 2]}}))
    assert GlmImageConfig.from_dict(d).text.head_dim == 24


def broken(path: list[str], value) -> dict:
    d = saved(reference_config())
    target = d
    for key in path[:-1]:
        target = target[key]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return d


@pytest.mark.parametrize("path,value,message", [
    (["model_type"], "glm4v", "not 'glm_image'"),
    (["text_config"], KeyError, "section text_config is missing"),
    (["vq_config"], [], "vq_config must be a JSON object"),
    (["text_config", "hidden_size"], KeyError, "text_config.hidden_size is missing"),
    (["text_config", "vision_vocab_size"], KeyError, "text_config.vision_vocab_size is missing"),
    (["vision_config", "image_size"], KeyError, "vision_config.image_size is missing"),
    (["vq_config", "num_embeddings"], KeyError, "vq_config.num_embeddings is missing"),
    (["text_config", "num_hidden_layers"], 2.5, "num_hidden_layers must be a positive integer"),
    (["text_config", "num_key_value_heads"], 3, "multiple of num_key_value_heads"),
    (["text_config", "vision_vocab_size"], 10**6, "exceeds vocab_size"),
    (["text_config", "rope_parameters", "mrope_section"], [8, 12, 12], "mrope_section"),
    (["text_config", "rope_parameters", "rope_type"], "yarn", "'yarn' is not supported"),
    (["vision_config", "num_heads"], 5, "multiple of num_heads"),
    (["vision_config", "spatial_merge_size"], 2, "spatial_merge_size must be 1"),
    (["vision_config", "image_size"], 4, "smaller than patch_size"),
    (["vq_config", "latent_channels"], 48, "must equal vision_config.hidden_size"),
    (["image_start_token_id"], 10**6, "must be below text_config.vocab_size"),
    (["dtype"], "int8", "dtype 'int8'"),
])
def test_bad_fields_are_config_errors_that_name_the_field(path, value, message):
    with pytest.raises(ConfigError, match=message):
        GlmImageConfig.from_dict(broken(path, value))


def test_prior_dir_finds_the_subfolder(tmp_path):
    root = tmp_path / "GLM-Image"
    (root / "vision_language_encoder").mkdir(parents=True)
    (root / "model_index.json").write_text("{}")
    (root / "vision_language_encoder" / "config.json").write_text(json.dumps(saved(reference_config())))
    assert prior_dir(root) == root / "vision_language_encoder"
    assert prior_dir(root / "vision_language_encoder") == root / "vision_language_encoder"
    assert GlmImageConfig.from_pretrained(root).vq.num_embeddings == 128
    with pytest.raises(ConfigError, match="no config.json"):
        prior_dir(tmp_path)
    (root / "vision_language_encoder" / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        GlmImageConfig.from_pretrained(root)
