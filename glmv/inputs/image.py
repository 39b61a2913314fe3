"""GLM-V image processor: smart_resize, bicubic resize, CLIP normalisation, block-major patchify.

Bit-identical to transformers' ``Glm4vImageProcessorPil`` (the PIL backend that follows the original processor),
without torchvision. Everything here is a pure function of picklable arguments, so it runs in worker
threads/processes; a large image is processed in bands of rows, one per thread (docs/performance.md).
"""

from __future__ import annotations

import functools
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from PIL import Image

from glmv.errors import ConfigError, InputError
from glmv.inputs import resample

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class VisionConfig:
    """Resize and patch settings shared by the image and video processors (from ``*preprocessor_config.json``)."""

    min_pixels: int = 112 * 112
    max_pixels: int = 28 * 28 * 15000
    patch_size: int = 14
    temporal_patch_size: int = 2
    merge_size: int = 2
    image_mean: tuple[float, ...] = CLIP_MEAN
    image_std: tuple[float, ...] = CLIP_STD
    rescale_factor: float = 1 / 255
    resample: int = Image.Resampling.BICUBIC
    extra: dict = field(default_factory=dict, compare=False)  # the file's other keys (fps, processor_class, ...)

    @property
    def factor(self) -> int:
        return self.patch_size * self.merge_size

    @classmethod
    def from_dict(cls, d: dict, defaults: "VisionConfig | None" = None,
                  file: str = "preprocessor_config.json") -> "VisionConfig":
        """The settings of a checkpoint's ``file`` (keys it lacks come from ``defaults``), checked once here so a
        bad value fails at load instead of on every image."""
        base = defaults or cls()
        size = d.get("size") or {}
        try:
            cfg = cls(
                min_pixels=int(size.get("shortest_edge", d.get("min_pixels", base.min_pixels))),
                max_pixels=int(size.get("longest_edge", d.get("max_pixels", base.max_pixels))),
                patch_size=int(d.get("patch_size", base.patch_size)),
                temporal_patch_size=int(d.get("temporal_patch_size", base.temporal_patch_size)),
                merge_size=int(d.get("merge_size", base.merge_size)),
                image_mean=tuple(float(x) for x in d.get("image_mean", base.image_mean)),
                image_std=tuple(float(x) for x in d.get("image_std", base.image_std)),
                rescale_factor=float(d.get("rescale_factor", base.rescale_factor)),
                resample=int(d.get("resample", base.resample)),
                extra=dict(d),
            )
        except (TypeError, ValueError, AttributeError, OverflowError) as e:
            raise ConfigError(f"{file}: bad value ({e}); correct it in {file}") from None
        cfg.validate(file)
        return cfg

    def validate(self, file: str) -> None:
        """ConfigError naming ``file``, the field and its value, for settings the processors cannot work with."""
        resamples = sorted(int(r) for r in Image.Resampling)
        checks = [
            (self.patch_size >= 1, "patch_size", self.patch_size, "a positive integer"),
            (self.temporal_patch_size >= 1, "temporal_patch_size", self.temporal_patch_size, "a positive integer"),
            # Placeholder counts assume GLM-V's 2x2 merge (ImageFeatures.num_tokens).
            (self.merge_size == 2, "merge_size", self.merge_size, "2 (GLM-V merges 2x2 patches into one token)"),
            (self.min_pixels >= 1, "min_pixels (size.shortest_edge)", self.min_pixels, "a positive integer"),
            (self.max_pixels >= self.min_pixels, "max_pixels (size.longest_edge)", self.max_pixels,
             f"at least min_pixels ({self.min_pixels})"),
            (len(self.image_mean) == 3 and all(map(math.isfinite, self.image_mean)), "image_mean", self.image_mean,
             "3 finite numbers (R, G, B)"),
            (len(self.image_std) == 3 and all(math.isfinite(x) and x > 0 for x in self.image_std), "image_std",
             self.image_std, "3 positive numbers (R, G, B)"),
            (math.isfinite(self.rescale_factor) and self.rescale_factor > 0, "rescale_factor", self.rescale_factor,
             "a positive number (1/255 for 8-bit pixels)"),
            (self.resample in resamples, "resample", self.resample, f"a PIL resampling filter, one of {resamples}"),
        ]
        for ok, name, value, want in checks:
            if not ok:
                raise ConfigError(f"{file}: {name} must be {want}, got {value!r}; correct it in {file}")


def smart_resize(num_frames: int, height: int, width: int, temporal_factor: int = 2, factor: int = 28,
                 min_pixels: int = 112 * 112, max_pixels: int = 14 * 14 * 2 * 2 * 2 * 6144) -> tuple[int, int]:
    """Target (height, width): multiples of ``factor``, ``num_frames·h·w`` within [min, max] pixels, aspect kept.

    Literal port of transformers' ``smart_resize`` (including Python's banker's ``round``) so grids match exactly.
    """
    if num_frames < temporal_factor:
        raise InputError(f"{num_frames} frames is fewer than the temporal patch size {temporal_factor}")
    if height < factor or width < factor:
        scale = max(factor / height, factor / width)
        height, width = int(height * scale), int(width * scale)
    if max(height, width) / min(height, width) > 200:
        raise InputError(f"aspect ratio {max(height, width) / min(height, width):.0f}:1 is over the limit of 200:1")
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    t_bar = round(num_frames / temporal_factor) * temporal_factor
    if t_bar * h_bar * w_bar > max_pixels:
        beta = math.sqrt((num_frames * height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif t_bar * h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (num_frames * height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def target_size(height: int, width: int, cfg: VisionConfig, num_frames: int = 0) -> tuple[int, int]:
    """(height, width) the processors resize ``num_frames`` frames of ``height`` x ``width`` to (an image is one
    temporal patch); known from a header, so the size of what decoding will produce is known before it starts."""
    return smart_resize(max(num_frames, cfg.temporal_patch_size), height, width, cfg.temporal_patch_size, cfg.factor,
                        cfg.min_pixels, cfg.max_pixels)


def pixel_value_bytes(height: int, width: int, cfg: VisionConfig, num_frames: int = 0) -> int:
    """Bytes of the float32 rows ``patchify`` makes of ``num_frames`` source frames (an image: one temporal patch)
    of ``height`` x ``width``, padded to whole temporal patches."""
    h, w = target_size(height, width, cfg, num_frames)
    frames = -(-max(num_frames, 1) // cfg.temporal_patch_size) * cfg.temporal_patch_size
    return frames * h * w * 3 * 4


def normalize_lut(cfg: VisionConfig) -> np.ndarray:
    """(C, 256) float32 table of normalised values, computed the way transformers does (float64 rescale, then
    float32 ``(x - mean) / std``), so a lookup is both exact and faster than arithmetic on every pixel."""
    levels = (np.arange(256, dtype=np.float64) * cfg.rescale_factor).astype(np.float32)
    mean = np.asarray(cfg.image_mean, dtype=np.float32)[:, None]
    std = np.asarray(cfg.image_std, dtype=np.float32)[:, None]
    return (levels[None, :] - mean) / std


def patch_blocks(rows: np.ndarray, height: int, width: int, cfg: VisionConfig) -> np.ndarray:
    """``rows`` (gt·gh·gw, C·t·p·p) as (gt, gh/m, gw/m, m, m, C, t, p, p): block-major rows, each (C, t, p, p)."""
    p, m, t = cfg.patch_size, cfg.merge_size, cfg.temporal_patch_size
    gt = rows.shape[0] // ((height // p) * (width // p))
    return rows.reshape(gt, height // p // m, width // p // m, m, m, rows.shape[1] // (t * p * p), t, p, p)


def patchify(frames: np.ndarray, cfg: VisionConfig) -> np.ndarray:
    """(T, H, W, C) uint8 frames, T a multiple of the temporal patch → (T/t·H/p·W/p, C·t·p·p) float32 rows.

    Rows are block-major (each merge_size×merge_size block of patches is contiguous) and each row is laid out
    (C, t, p, p). A still image (a broadcast, zero-stride time axis) is normalised once and written to every
    time slot.
    """
    from glmv.inputs import _image_kernels as kernels

    t_patch, p = cfg.temporal_patch_size, cfg.patch_size
    T, H, W, C = frames.shape
    rows = np.empty((T // t_patch * (H // p) * (W // p), C * t_patch * p * p), dtype=np.float32)
    blocks = patch_blocks(rows, H, W, cfg)
    lut = normalize_lut(cfg)
    if frames.strides[0] == 0:  # a still image
        still = np.ascontiguousarray(frames[0])
        for group in range(T // t_patch):
            kernels.patches(still, lut, blocks[group], 0, t_patch)
        return rows
    for i in range(T):
        group, slot = divmod(i, t_patch)
        kernels.patches(np.ascontiguousarray(frames[i]), lut, blocks[group], slot, slot + 1)
    return rows


@dataclass(frozen=True)
class ImageFeatures:
    """One processed image: ``pixel_values`` (h·w, 1176) float32 and its grid (1, h, w) in patches."""

    pixel_values: torch.Tensor
    grid_thw: tuple[int, int, int]
    original_size: tuple[int, int] | None = None  # (width, height) before resizing: boxes map back to it

    @property
    def num_tokens(self) -> int:
        """LLM placeholder tokens (patches after the 2×2 merge); merge_size 2 assumed by GLM-V."""
        t, h, w = self.grid_thw
        return t * h * w // 4


# Below this many output pixels one thread does an image: handing bands to others costs more than it saves.
PARALLEL_MIN_PIXELS = 1 << 18


def process_image(image: Image.Image, cfg: VisionConfig = VisionConfig(), threads: int | None = None,
                  ) -> ImageFeatures:
    """An RGB PIL image → patch rows; the still image is repeated along time to fill one temporal patch.

    The output is cut into bands of whole merged-patch rows, one per thread (``threads``, default torch's thread
    count, i.e. the server's --threads); each thread resizes its band (``glmv.inputs.resample``: PIL's arithmetic
    in numba, the GIL released) and looks it up into its rows. Where that module cannot match PIL's bytes (another
    filter), PIL resizes the whole image first and only the lookup is split.
    """
    from glmv.inputs import _image_kernels as kernels

    if image.mode != "RGB":
        image = image.convert("RGB")
    h, w = target_size(image.height, image.width, cfg)
    p, t, f = cfg.patch_size, cfg.temporal_patch_size, cfg.factor
    rows = np.empty(((h // p) * (w // p), 3 * t * p * p), dtype=np.float32)
    blocks = patch_blocks(rows, h, w, cfg)[0]
    lut = normalize_lut(cfg)
    threads = torch.get_num_threads() if threads is None else threads
    bands = min(threads, h // f) if h * w >= PARALLEL_MIN_PIXELS else 1
    edges = [h // f * i // bands * f for i in range(bands + 1)]
    plan = resample.plan(image.size, (w, h), cfg.resample)
    src = np.asarray(image) if plan else np.asarray(image.resize((w, h), resample=cfg.resample))

    def band(i: int) -> None:
        y0, y1 = edges[i], edges[i + 1]
        pixels = plan.rows(src, y0, y1) if plan else src[y0:y1]
        kernels.patches(pixels, lut, blocks[y0 // f:y1 // f], 0, t)

    _spread(band, bands, threads)
    return ImageFeatures(torch.from_numpy(rows), (1, h // p, w // p), (image.width, image.height))


def warm_up(cfg: VisionConfig = VisionConfig()) -> None:
    """Compile the image kernels (or load them from numba's cache) and check the resize against PIL now, so the
    first real image does not wait for it: about 3 s on a new machine, 0.7 s once the cache holds the kernels."""
    process_image(Image.new("RGB", (64, 48)), cfg, threads=1)


@functools.lru_cache(maxsize=1)
def _pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(os.cpu_count() or 1, thread_name_prefix="glmv-image")


# A forked child (a DataLoader worker) inherits the pool without its threads: it must make its own.
os.register_at_fork(after_in_child=_pool.cache_clear)


def _spread(work: Callable[[int], None], n: int, threads: int) -> None:
    """``work(0)`` … ``work(n - 1)`` on up to ``threads`` threads: the caller's, and others from one pool of as many
    threads as cores shared by all images, so concurrent requests add only their own threads."""
    k = max(1, min(threads, n))
    others = [_pool().submit(_each, work, range(i, n, k)) for i in range(1, k)]
    _each(work, range(0, n, k))
    for future in others:
        future.result()


def _each(work: Callable[[int], None], items: range) -> None:
    for i in items:
        work(i)
