"""GLM-V video processing: frame-sampling rules, one shared pixel budget, patchify, per-patch timestamps.

Two sampling rules exist: GLM-4.1V/4.5V (``glm4v``: 2 fps, ≤300 s, longer videos resampled to 600 points) and
GLM-4.6V (``glm46v``: frame rate by duration, ≤640 frames). Both de-duplicate and make the count even.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from glmv.errors import ConfigError
from glmv.inputs import resample
from glmv.inputs.image import VisionConfig, patchify, target_size
from glmv.inputs.media import VideoInfo

VIDEO_DEFAULTS = VisionConfig(min_pixels=112 * 112, max_pixels=28 * 28 * 2 * 30000)


@dataclass(frozen=True)
class VideoConfig:
    vision: VisionConfig = VIDEO_DEFAULTS
    rule: str = "glm4v"  # or "glm46v"
    fps: float = 2.0  # glm4v rule only: frames sampled per second
    max_duration: float = 300.0  # glm4v rule only: longer videos get a fixed number of samples

    @classmethod
    def from_dict(cls, d: dict, rule: str, file: str = "video_preprocessor_config.json") -> "VideoConfig":
        """The settings of a checkpoint's ``file``, checked once here so a bad value fails at load, not per video."""
        return cls(VisionConfig.from_dict(d, VIDEO_DEFAULTS, file), rule, _positive(d, "fps", 2.0, file),
                   _positive(d, "max_duration", 300.0, file))


def _positive(d: dict, name: str, default: float, file: str) -> float:
    """A positive finite number from the config (``default`` when absent, null or 0)."""
    raw = d.get(name) or default
    try:
        value = float(raw)
    except (TypeError, ValueError):
        value = math.nan
    if not 0 < value < math.inf:
        raise ConfigError(f"{file}: {name} must be a positive number, got {raw!r}; correct it in {file}")
    return value


def _dedupe_even(indices: list[int]) -> list[int]:
    """Drop repeats keeping order; repeat the last index if the count is odd (frames go in pairs)."""
    unique = list(dict.fromkeys(indices))
    if len(unique) & 1:
        unique.append(unique[-1])
    return unique


def sample_glm4v(info: VideoInfo, fps: float = 2.0, max_duration: float = 300.0) -> list[int]:
    """GLM-4.1V/4.5V rule, as transformers' ``Glm4vVideoProcessor.sample_frames``."""
    last = info.total_frames - 1
    duration = info.duration or round(last / info.fps) + 1
    if duration <= max_duration:
        n = max(int(math.floor(duration * fps)), 1)
        indices = [min(last, int(math.ceil(i * info.fps / fps))) for i in range(n)]
    else:
        n = int(max_duration * fps)
        if n >= info.total_frames:
            indices = list(range(info.total_frames))
        else:
            indices = [min(last, int(math.ceil(t * info.fps))) for t in np.linspace(0, duration, n, endpoint=True)]
    return _dedupe_even(indices)


def sample_glm46v(info: VideoInfo, temporal_patch_size: int = 2) -> list[int]:
    """GLM-4.6V rule, as transformers' ``Glm46VVideoProcessor.sample_frames``: 3 fps up to 30 s, 1 fps up to
    300 s, 0.5 fps beyond (duration capped at 2400 s), at most 640 frames."""
    total = info.total_frames
    duration = info.duration or round((total - 1) / info.fps) + 1
    effective = min(duration, 2400)
    target_fps = 3 if effective <= 30 else 1 if effective <= 300 else 0.5
    extract_t = min(int(effective * target_fps * temporal_patch_size), 640)
    if total < extract_t:
        indices = np.linspace(0, total - 1, extract_t, dtype=int).tolist()
    else:
        indices, current, step, max_second = [], 0.0, 1 / (temporal_patch_size * target_fps), int(duration)
        for i in range(total):
            if i * (1 / info.fps) >= current:
                current += step
                indices.append(i)
                if current >= max_second:
                    break
    if len(indices) < extract_t:
        start, end = (indices[0], indices[-1]) if indices else (0, max(total - 1, 0))
        indices = np.linspace(start, end, extract_t, dtype=int).tolist()
    elif len(indices) > extract_t:
        indices = np.linspace(0, total - 1, extract_t, dtype=int).tolist()
    return _dedupe_even(indices)


def sample_indices(info: VideoInfo, cfg: VideoConfig) -> list[int]:
    if cfg.rule == "glm46v":
        return sample_glm46v(info, cfg.vision.temporal_patch_size)
    return sample_glm4v(info, cfg.fps, cfg.max_duration)


@dataclass(frozen=True)
class VideoFeatures:
    """One processed video: rows (t·h·w, 1176), grid (t, h, w) in patches, and the time (s) of each temporal patch."""

    pixel_values: torch.Tensor
    grid_thw: tuple[int, int, int]
    timestamps: tuple[float, ...]

    @property
    def tokens_per_frame(self) -> int:
        return self.grid_thw[1] * self.grid_thw[2] // 4


def resize_frame(frame: np.ndarray, num_frames: int, cfg: VisionConfig) -> np.ndarray:
    """One (H, W, 3) frame of a clip of ``num_frames`` frames to the clip's target size (the same for every frame:
    the pixel budget covers the whole clip). Decoders call it on each frame as soon as it is decoded, so a clip is
    never held at its source size."""
    h, w = target_size(frame.shape[0], frame.shape[1], cfg, num_frames)
    if (h, w) == frame.shape[:2]:
        return frame
    return resample.resize(frame, (w, h), cfg.resample)


def resize_frames(frames: np.ndarray, cfg: VisionConfig) -> np.ndarray:
    """Every frame of a (T, H, W, 3) clip to the clip's target size."""
    return np.stack([resize_frame(frame, len(frames), cfg) for frame in frames])


def process_video(frames: np.ndarray, indices: list[int], fps: float, cfg: VideoConfig = VideoConfig()) -> VideoFeatures:
    """Sampled uint8 (T, H, W, 3) frames, their source indices and the source fps → patch rows and timestamps."""
    return process_resized_video(resize_frames(frames, cfg.vision), indices, fps, cfg)


def process_resized_video(frames: np.ndarray, indices: list[int], fps: float, cfg: VideoConfig = VideoConfig(),
                          ) -> VideoFeatures:
    """``process_video`` for frames already at the clip's target size (``resize_frame``, as the decoders apply it)."""
    vision = cfg.vision
    if pad := -len(frames) % vision.temporal_patch_size:  # an odd count repeats the last frame
        frames = np.concatenate([frames, np.repeat(frames[-1:], pad, axis=0)])
    rows = patchify(frames, vision)
    grid = (len(frames) // vision.temporal_patch_size, frames.shape[1] // vision.patch_size,
            frames.shape[2] // vision.patch_size)
    return VideoFeatures(torch.from_numpy(rows), grid, frame_timestamps(indices, fps, grid[0]))


def frame_timestamps(indices: list[int], fps: float, num_patches: int) -> tuple[float, ...]:
    """Seconds of the first frame of each temporal patch, truncated or padded (repeat last) to ``num_patches``."""
    times = [i / fps for i in indices][::2]
    times = times[:num_patches]
    while len(times) < num_patches:
        times.append(times[-1] if times else 0.0)
    return tuple(times)


def frame_label(rule: str, seconds: float) -> str:
    """Text written after each frame's image tokens: whole seconds for GLM-4.1V/4.5V, ``"12.0 seconds"`` for 4.6V."""
    return f"{seconds:.1f} seconds" if rule == "glm46v" else str(int(seconds))
