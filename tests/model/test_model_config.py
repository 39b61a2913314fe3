"""config.json parsing: the three model types, both rope layouts, and clear errors."""

from __future__ import annotations

import copy
import json

import pytest

from glmv.config import GlmvConfig
from glmv.errors import ConfigError
from glmv.testing.tiny_checkpoint import reference_config


def config_dict(model_type: str) -> dict:
    return json.loads(reference_config(model_type).to_json_string())


@pytest.mark.parametrize("model_type,moe", [("glm4v", False), ("glm4v_moe", True), ("glm46v", False), ("glm46v_moe", True)])
def test_decoder_kind_and_special_ids_come_from_config(model_type, moe):
    cfg = GlmvConfig.from_dict(config_dict(model_type))
    assert cfg.text.moe is moe
    assert cfg.image_token_id == 250 and cfg.video_start_token_id == 242 and cfg.video_end_token_id == 243
    assert cfg.text.rotary_dim == 8 and cfg.text.mrope_section == [1, 1, 2]


def test_old_rope_layout_equals_new():
    new = config_dict("glm4v_moe")
    old = copy.deepcopy(new)
    rope = old["text_config"].pop("rope_parameters")
    old["text_config"].update(rope_theta=rope["rope_theta"], partial_rotary_factor=rope["partial_rotary_factor"],
                              rope_scaling={"type": "default", "mrope_section": rope["mrope_section"]})
    a, b = GlmvConfig.from_dict(new).text, GlmvConfig.from_dict(old).text
    assert (a.rope_theta, a.partial_rotary_factor, a.mrope_section) == (b.rope_theta, b.partial_rotary_factor, b.mrope_section)


def test_unknown_model_type_names_it():
    d = config_dict("glm4v_moe")
    d["model_type"] = "qwen2_vl"
    with pytest.raises(ConfigError, match="'qwen2_vl' is not a GLM-V model"):
        GlmvConfig.from_dict(d)


@pytest.mark.parametrize("section,field", [("text_config", "hidden_size"), ("vision_config", "depth"), (None, "image_token_id"),
                                            ("text_config", "moe_intermediate_size")])
def test_missing_field_names_it(section, field):
    d = config_dict("glm4v_moe")
    (d[section] if section else d).pop(field)
    with pytest.raises(ConfigError, match=f"missing the required field '{field}'"):
        GlmvConfig.from_dict(d)


def test_inconsistent_rope_and_groups_are_rejected():
    d = config_dict("glm4v_moe")
    d["text_config"]["rope_parameters"]["mrope_section"] = [8, 12, 12]
    with pytest.raises(ConfigError, match="mrope_section"):
        GlmvConfig.from_dict(d)
    d = config_dict("glm4v_moe")
    d["text_config"].update(n_group=3)
    with pytest.raises(ConfigError, match="n_group"):
        GlmvConfig.from_dict(d)


def test_unreadable_config(tmp_path):
    with pytest.raises(ConfigError, match="no config.json"):
        GlmvConfig.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text("{broken")
    with pytest.raises(ConfigError, match="not valid JSON"):
        GlmvConfig.from_pretrained(tmp_path)
