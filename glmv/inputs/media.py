"""Decode media into what the processors take: RGB ``PIL.Image`` for images, uint8 RGB frames for videos.

Sizes are checked from headers before any pixel is decoded; every decoder failure becomes ``InputError``.
"""

from __future__ import annotations

import io
import math
import os
import struct
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image, ImageOps

from glmv.errors import InputError, MediaTooLargeError
from glmv.inputs.fetch import read_source
from glmv.inputs.limits import MediaLimits

# PIL's own bomb guard (it raises above twice this); ours runs first with the request's limit.
Image.MAX_IMAGE_PIXELS = MediaLimits().max_image_pixels
_DECODER_MEMORY = 128 << 20  # for a video decoder's threads: 4K frames get 5 threads, 1080p ones 21
_IMAGE_FORMATS = ("PNG", "JPEG", "GIF", "WEBP", "BMP", "TIFF")  # JPEG covers MPO (phone photos)


def load_image(source: Any, limits: MediaLimits = MediaLimits(),
               check_size: Callable[[int, int], None] | None = None) -> Image.Image:
    """An RGB image from a PIL image, numpy array (H, W[, C]), torch tensor (C, H, W), bytes, path or URL.

    ``check_size(width, height)`` runs once the size is known and before any pixel is decoded (a request's
    DecodeBudget raises from it).
    """
    check_size = check_size or (lambda width, height: None)
    if isinstance(source, Image.Image):
        _check_pixels(source.width, source.height, limits.max_image_pixels)
        check_size(source.width, source.height)
        return to_rgb(source)
    if isinstance(source, (np.ndarray, torch.Tensor)):
        image = array_to_image(source, limits, channels_first=isinstance(source, torch.Tensor))
        check_size(image.width, image.height)
        return image
    data = read_source(source, limits, limits.max_image_bytes)
    if isinstance(data, Path):
        data = data.read_bytes()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=_IMAGE_FORMATS)
            _check_pixels(image.width, image.height, limits.max_image_pixels)  # header only, nothing decoded yet
            check_size(image.width, image.height)
            image.seek(0)  # first frame of an animation
            image = ImageOps.exif_transpose(image)  # decodes; honours the camera's orientation tag
            return to_rgb(image)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise MediaTooLargeError(f"image too large ({e})") from None
    except Image.UnidentifiedImageError:
        raise InputError("not an image in a supported format (PNG, JPEG, GIF, WebP, BMP, TIFF)") from None
    except (OSError, SyntaxError, ValueError, EOFError, struct.error) as e:
        raise InputError(f"corrupt or truncated image ({e})") from None


def _check_pixels(width: int, height: int, max_pixels: int) -> None:
    if width <= 0 or height <= 0:
        raise InputError(f"image has an empty size {width}x{height}")
    if width * height > max_pixels:
        raise MediaTooLargeError(f"image is {width}x{height} = {width * height} pixels, over the limit of {max_pixels}")


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB like transformers' ``convert_to_rgb`` (alpha is dropped), except that 16/32-bit and float grey are
    rescaled to 8 bits rather than clipped (PIL's ``convert`` would turn most of such an image white)."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") else max(float(arr.max()), 1.0)
        grey = np.clip(arr * (255.0 / top) + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    return image.convert("RGB")


def array_to_image(array: np.ndarray | torch.Tensor, limits: MediaLimits, channels_first: bool) -> Image.Image:
    """uint8 (0-255) or float (0-1) pixels; numpy is (H, W[, C]), torch is ([C,] H, W); C is 1, 3 or 4."""
    arr = array.detach().cpu().numpy() if isinstance(array, torch.Tensor) else np.asarray(array)
    if arr.ndim == 3 and channels_first:
        arr = arr.transpose(1, 2, 0)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
        raise InputError(f"image array must be (H, W), (H, W, 3) or (H, W, 4), got shape {tuple(array.shape)}")
    _check_pixels(arr.shape[1], arr.shape[0], limits.max_image_pixels)
    if arr.dtype != np.uint8:
        if not np.issubdtype(arr.dtype, np.floating):
            raise InputError(f"image array must be uint8 or float in [0, 1], got {arr.dtype}")
        arr = (np.clip(np.nan_to_num(arr), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return to_rgb(Image.fromarray(np.ascontiguousarray(arr)))


@dataclass(frozen=True)
class VideoInfo:
    """What the frame-sampling rules need; ``duration`` is frames / fps, as transformers computes it."""

    total_frames: int
    fps: float
    width: int
    height: int

    @property
    def duration(self) -> float:
        return self.total_frames / self.fps


@dataclass(frozen=True)
class DecodedVideo:
    frames: np.ndarray  # (T, H, W, 3) uint8, one per sampled index (duplicates included)
    indices: list[int]  # source frame index of each frame
    info: VideoInfo


# Container signatures we accept; the demuxer is then forced, so ffmpeg never probes exotic formats (playlists,
# concat lists) that could open other files or URLs.
def _sniff_container(head: bytes) -> str | None:
    if head[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip"):
        return "mov"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "matroska"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "avi"
    if head[:4] == b"OggS":
        return "ogg"
    if head[:3] == b"FLV":
        return "flv"
    if len(head) > 376 and head[0] == head[188] == head[376] == 0x47:
        return "mpegts"
    return None


# A decoder's hook to resize each frame as soon as it is decoded: (frame, number of frames chosen) -> frame.
FrameResize = Callable[[np.ndarray, int], np.ndarray]


def _keep_size(frame: np.ndarray, num_frames: int) -> np.ndarray:
    return frame


def decode_video(
    source: Any,
    choose_indices: Callable[[VideoInfo], Sequence[int]],
    limits: MediaLimits = MediaLimits(),
    seek_gap: int | None = None,
    resize: FrameResize = _keep_size,
) -> DecodedVideo:
    """Open a video file/bytes/URL, pick frame indices with ``choose_indices`` and decode only those frames.

    ``choose_indices`` runs before any frame is decoded (a request's DecodeBudget raises from it); ``resize`` runs on
    each frame right after it is decoded, so only one frame at a time is ever held at its source size.
    ``seek_gap``: jump (seek to the previous keyframe) when the next wanted frame is more than this many frames
    ahead; the default of ~10 s spans a typical keyframe interval, so a seek rarely lands behind where we are.
    """
    import av

    data = read_source(source, limits, limits.max_video_bytes)
    head = data[:512] if isinstance(data, bytes) else data.open("rb").read(512)
    demuxer = _sniff_container(head)
    if demuxer is None:
        raise InputError("not a video in a supported container (MP4/MOV, MKV/WebM, AVI, Ogg, FLV, MPEG-TS)")
    try:
        with av.open(io.BytesIO(data) if isinstance(data, bytes) else str(data), format=demuxer) as container:
            if not container.streams.video:
                raise InputError("the file has no video stream")
            stream = container.streams.video[0]
            info = _video_info(container, stream, limits)
            indices = _chosen(choose_indices, info, limits)
            stream.thread_type = "AUTO"
            stream.codec_context.thread_count = _decoder_threads(info)
            gap = seek_gap if seek_gap is not None else max(250, int(10 * info.fps))

            def keep(frame: Any) -> np.ndarray:
                # A stream may change size mid-way; past the header's size the checks above would not hold.
                if (frame.width, frame.height) != (info.width, info.height):
                    raise InputError(f"video changes frame size mid-stream (from {info.width}x{info.height} to "
                                     f"{frame.width}x{frame.height}); re-encode it at one size")
                return resize(frame.to_ndarray(format="rgb24"), len(indices))

            by_index = _decode_selected(container, stream, sorted(set(indices)), info.fps, gap, keep)
    except av.FFmpegError as e:
        raise InputError(f"corrupt or unsupported video ({e})") from None
    missing = [i for i in indices if i not in by_index]
    if missing:
        raise InputError(f"video ended before frame {missing[0]} (of {info.total_frames} announced); truncated?")
    return DecodedVideo(np.stack([by_index[i] for i in indices]), indices, info)


def _decoder_threads(info: VideoInfo) -> int:
    """Each decoder thread holds frames of its own (~3 bytes a pixel measured): as many threads as cores, but no
    more than fit in _DECODER_MEMORY, so huge frames cannot multiply their memory by the core count."""
    return max(1, min(os.cpu_count() or 1, _DECODER_MEMORY // (3 * info.width * info.height)))


def _chosen(choose_indices: Callable[[VideoInfo], Sequence[int]], info: VideoInfo, limits: MediaLimits) -> list[int]:
    indices = [int(i) for i in choose_indices(info)]
    if len(indices) > limits.max_video_frames:
        raise MediaTooLargeError(f"{len(indices)} frames sampled, over the limit of {limits.max_video_frames}")
    return indices


def _video_info(container: Any, stream: Any, limits: MediaLimits) -> VideoInfo:
    fps = float(stream.average_rate or stream.guessed_rate or 0)
    if not fps > 0 or not math.isfinite(fps):
        raise InputError("video has no usable frame rate")
    total = int(stream.frames or 0)
    if total <= 0:  # some containers (WebM, TS) do not store a frame count: estimate it from the duration
        if stream.duration is not None and stream.time_base:
            seconds = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            seconds = container.duration / 1_000_000
        else:
            raise InputError("video has neither a frame count nor a duration")
        total = max(1, round(seconds * fps))
    info = VideoInfo(total, fps, int(stream.codec_context.width), int(stream.codec_context.height))
    if info.duration > limits.max_video_seconds:
        raise MediaTooLargeError(f"video is {info.duration:.0f} s long, over the limit of {limits.max_video_seconds:g} s")
    if info.width * info.height > limits.max_frame_pixels or info.width <= 0 or info.height <= 0:
        raise MediaTooLargeError(f"video frames are {info.width}x{info.height}, over the limit of {limits.max_frame_pixels} pixels")
    return info


def _decode_selected(container: Any, stream: Any, wanted: list[int], fps: float, seek_gap: int,
                     keep: Callable[[Any], np.ndarray]) -> dict[int, np.ndarray]:
    """``keep(frame)`` of the frames at the ``wanted`` (sorted) indices; a frame's index comes from its timestamp
    (constant frame rate)."""
    start = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
    out: dict[int, np.ndarray] = {}
    frames, position = container.decode(stream), -1
    for target in wanted:
        if target - position > seek_gap:
            container.seek(int((target / fps + start) / stream.time_base), stream=stream, backward=True)
            frames = container.decode(stream)
        frame = None
        for frame in frames:
            has_pts = frame.pts is not None
            position = round((float(frame.pts * stream.time_base) - start) * fps) if has_pts else position + 1
            if position >= target:
                break
        else:
            return out
        out[target] = keep(frame)
    return out


def decode_frame_list(frames: Sequence[Any], fps: float, choose_indices: Callable[[VideoInfo], Sequence[int]],
                      limits: MediaLimits = MediaLimits(), resize: FrameResize = _keep_size) -> DecodedVideo:
    """A video given as its frames (PIL images, arrays, tensors, bytes, paths, URLs) shot at ``fps``, decoded like
    ``decode_video``: indices are chosen from frame 0's header, then only the chosen frames (and frame 0) are
    decoded, each resized right away. All frames must share a size."""
    if len(frames) == 0:
        raise InputError("video frame list is empty")
    if len(frames) > limits.max_video_frames:
        raise MediaTooLargeError(f"{len(frames)} video frames, over the limit of {limits.max_video_frames}")
    frame_limits = replace(limits, max_image_pixels=limits.max_frame_pixels)
    indices: list[int] = []

    def choose(width: int, height: int) -> None:
        indices.extend(_chosen(choose_indices, VideoInfo(len(frames), fps, width, height), limits))

    first = np.asarray(load_image(frames[0], frame_limits, choose))
    by_index = {0: resize(first, len(indices))} if 0 in indices else {}
    size = first.shape
    del first  # from here on, one frame at a time is held at its source size
    for i in sorted(set(indices) - {0}):
        frame = np.asarray(load_image(frames[i], frame_limits))
        if frame.shape != size:
            raise InputError(f"video frames differ in size: frame 0 is {size[1]}x{size[0]}, frame {i} is "
                             f"{frame.shape[1]}x{frame.shape[0]}")
        by_index[i] = resize(frame, len(indices))
    info = VideoInfo(len(frames), fps, size[1], size[0])
    return DecodedVideo(np.stack([by_index[i] for i in indices]), indices, info)
