"""preprocessor_config.json / video_preprocessor_config.json: bad values fail once, at load, with a ConfigError
that names the file, the field and the value (not a ZeroDivisionError on every image later)."""

from __future__ import annotations

import json
import shutil

import pytest

import glmv
from glmv.errors import ConfigError
from glmv.inputs.image import VisionConfig
from glmv.inputs.processor import IMAGE_DEFAULTS
from glmv.inputs.video import VIDEO_DEFAULTS, VideoConfig

BAD_IMAGE_VALUES = [
    ({"patch_size": 0}, "patch_size must be a positive integer, got 0"),
    ({"temporal_patch_size": -2}, "temporal_patch_size must be a positive integer, got -2"),
    ({"merge_size": 3}, "merge_size must be 2"),
    ({"size": {"shortest_edge": 0, "longest_edge": 100}}, "min_pixels (size.shortest_edge) must be a positive integer"),
    ({"size": {"shortest_edge": 5000, "longest_edge": 4000}},
     "max_pixels (size.longest_edge) must be at least min_pixels (5000), got 4000"),
    ({"image_std": [0.2, 0.0, 0.3]}, "image_std must be 3 positive numbers"),
    ({"image_mean": [0.5, 0.5]}, "image_mean must be 3 finite numbers"),
    ({"rescale_factor": 0}, "rescale_factor must be a positive number"),
    ({"resample": 9}, "resample must be a PIL resampling filter"),
    ({"patch_size": "abc"}, "bad value"),
    ({"size": [1, 2]}, "bad value"),
]


@pytest.mark.parametrize("values,message", BAD_IMAGE_VALUES, ids=[repr(v) for v, _ in BAD_IMAGE_VALUES])
def test_bad_image_processor_values_name_file_field_and_value(values, message):
    with pytest.raises(ConfigError) as e:
        VisionConfig.from_dict(values, IMAGE_DEFAULTS)
    assert str(e.value).startswith("preprocessor_config.json: ") and message in str(e.value)


@pytest.mark.parametrize("values,message", [({"fps": "fast"}, "fps must be a positive number, got 'fast'"),
                                            ({"fps": -1}, "fps must be a positive number, got -1"),
                                            ({"max_duration": float("inf")}, "max_duration must be a positive number"),
                                            ({"patch_size": 0}, "patch_size must be a positive integer, got 0")])
def test_bad_video_processor_values_name_file_field_and_value(values, message):
    with pytest.raises(ConfigError) as e:
        VideoConfig.from_dict(values, "glm4v")
    assert str(e.value).startswith("video_preprocessor_config.json: ") and message in str(e.value)


def test_valid_configs_read_as_before(ckpt):
    image = json.loads((ckpt / "preprocessor_config.json").read_text())
    video = json.loads((ckpt / "video_preprocessor_config.json").read_text())
    budget = 2 * 28 * 28
    assert VisionConfig.from_dict(image, IMAGE_DEFAULTS) == VisionConfig(min_pixels=budget, max_pixels=budget * 16)
    assert VideoConfig.from_dict(video, "glm4v") == VideoConfig(
        VisionConfig(min_pixels=budget, max_pixels=4 * budget * 16), "glm4v", 2.0, 300.0)
    assert VisionConfig.from_dict({}, IMAGE_DEFAULTS) == IMAGE_DEFAULTS
    assert VideoConfig.from_dict({"fps": None}, "glm4v") == VideoConfig(VIDEO_DEFAULTS, "glm4v", 2.0, 300.0)


@pytest.mark.parametrize("file", ["preprocessor_config.json", "video_preprocessor_config.json"])
def test_processor_of_a_checkpoint_with_patch_size_0_fails_at_load(ckpt, tmp_path, file):
    shutil.copytree(ckpt, tmp_path, dirs_exist_ok=True)
    config = json.loads((tmp_path / file).read_text())
    (tmp_path / file).write_text(json.dumps({**config, "patch_size": 0}))
    with pytest.raises(ConfigError, match=f"^{file}: patch_size must be a positive integer, got 0"):
        glmv.Processor.from_pretrained(tmp_path)
