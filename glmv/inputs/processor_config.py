"""Write a checkpoint's preprocessor_config.json / video_preprocessor_config.json (the files glmv.Processor reads)."""

from __future__ import annotations

import json
from pathlib import Path


def write_processor_configs(path: str | Path, min_pixels: int = 2 * 28 * 28, max_pixels: int = 2 * 28 * 28 * 16,
                            video_max_pixels: int | None = None, glm46v: bool = False) -> None:
    """preprocessor_config.json + video_preprocessor_config.json with small pixel budgets (default: images of
    at most 16 LLM tokens, videos of at most 4× that over all frames); ``glm46v`` picks the GLM-4.6V video rule."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    common = {
        "patch_size": 14, "temporal_patch_size": 2, "merge_size": 2, "resample": 3, "rescale_factor": 1 / 255,
        "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711],
        "do_resize": True, "do_rescale": True, "do_normalize": True, "do_convert_rgb": True,
        "processor_class": "Glm46VProcessor" if glm46v else "Glm4vProcessor",
    }
    image = {**common, "image_processor_type": "Glm4vImageProcessor",
             "size": {"shortest_edge": min_pixels, "longest_edge": max_pixels}}
    video = {**common, "video_processor_type": "Glm46VVideoProcessor" if glm46v else "Glm4vVideoProcessor",
             "fps": 2, "max_duration": 300, "do_sample_frames": True,
             "size": {"shortest_edge": min_pixels, "longest_edge": video_max_pixels or 4 * max_pixels}}
    (path / "preprocessor_config.json").write_text(json.dumps(image, indent=2))
    (path / "video_preprocessor_config.json").write_text(json.dumps(video, indent=2))
