"""Video sampling, decoding and patchify against transformers' reference code.

transformers' video processors resize with torchvision, which glmv must not need, so pixel values are compared
against the reference's pieces that run without it: ``read_video_pyav`` (decode), ``Glm4vVideoProcessor``'s
``sample_frames`` and ``patchify`` (called on an instance made with ``__new__``), its ``smart_resize``, and the PIL
backend's resize/rescale/normalize in place of the torchvision resize.
"""

from __future__ import annotations

import ast
import math
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from glmv.inputs.image import VisionConfig
from glmv.inputs.media import VideoInfo, decode_video
from glmv.inputs.video import (
    VideoConfig,
    process_video,
    sample_glm4v,
    sample_glm46v,
    sample_indices,
)

VIDEO_VISION = VisionConfig(min_pixels=2 * 28 * 28, max_pixels=2 * 28 * 28 * 64)


@pytest.fixture(scope="module")
def ref_video_processor():
    from transformers.models.glm4v.video_processing_glm4v import Glm4vVideoProcessor

    proc = Glm4vVideoProcessor.__new__(Glm4vVideoProcessor)  # __init__ would need torchvision
    proc.fps, proc.max_duration, proc.temporal_patch_size = 2, 300, 2
    return proc


@pytest.fixture(scope="module")
def ref_sample_glm46v():
    """The GLM-4.6V ``sample_frames`` source, compiled from transformers' file (the module imports torchvision)."""
    import transformers.models.glm4v as glm4v_pkg

    source = Path(glm4v_pkg.__file__).parent.parent.joinpath("glm46v", "video_processing_glm46v.py").read_text()
    tree = ast.parse(source)
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Glm46VVideoProcessor")
    fn = next(n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "sample_frames")
    namespace = {"math": math, "np": np, "VideoMetadata": object}
    exec(compile(ast.Module([fn], []), "video_processing_glm46v.py", "exec"), namespace)
    self = types.SimpleNamespace(temporal_patch_size=2)
    return lambda metadata: namespace["sample_frames"](self, metadata)


def _metadata(total: int, fps: float):
    from transformers.video_utils import VideoMetadata

    return VideoMetadata(total_num_frames=total, fps=fps, duration=total / fps)


CASES = [(1, 30), (2, 2), (3, 1), (7, 24), (59, 29.97), (240, 30), (900, 25), (9000, 30), (18001, 60), (700, 1),
         (36000, 10), (45, 0.5), (100000, 24), (2400 * 30 + 7, 30)]


@pytest.mark.parametrize("total,fps", CASES)
def test_sampling_rules_match_reference(total, fps, ref_video_processor, ref_sample_glm46v):
    info = VideoInfo(total, fps, 64, 48)
    assert sample_glm4v(info) == ref_video_processor.sample_frames(_metadata(total, fps)).tolist()
    assert sample_glm46v(info) == ref_sample_glm46v(_metadata(total, fps)).tolist()


@pytest.mark.parametrize("num_frames,fps,codec,container", [
    (5, 2, "libx264", "mp4"), (31, 10, "libx264", "mp4"), (48, 24, "mpeg4", "avi"), (61, 30, "libx264", "mov"),
])
def test_decode_and_process_match_reference(num_frames, fps, codec, container, ref_video_processor, tmp_path,
                                            video_tools):
    from transformers.image_processing_backends import PilBackend
    from transformers.image_utils import SizeDict
    from transformers.models.glm4v.image_processing_pil_glm4v import (
        Glm4vImageProcessorPil,
    )
    from transformers.models.glm4v.video_processing_glm4v import (
        smart_resize as ref_smart_resize,
    )
    from transformers.video_utils import read_video_pyav

    path = tmp_path / f"v.{container}"
    path.write_bytes(video_tools.make_video(num_frames, fps, codec=codec, container=container))
    cfg = VideoConfig(VIDEO_VISION)
    decoded = decode_video(path, lambda info: sample_indices(info, cfg))
    ref_frames, ref_meta = read_video_pyav(str(path), ref_video_processor.sample_frames)
    assert decoded.indices == list(ref_meta.frames_indices)
    # read_video_pyav keeps a repeated index once; glmv keeps the repeat (the array path of transformers does too)
    assert np.array_equal(decoded.frames[: len(ref_frames)], ref_frames)

    ours = process_video(decoded.frames, decoded.indices, decoded.info.fps, cfg)
    pil = Glm4vImageProcessorPil()
    frames = decoded.frames.transpose(0, 3, 1, 2)  # (T, C, H, W)
    h, w = ref_smart_resize(len(frames), frames.shape[2], frames.shape[3], 2, 28, VIDEO_VISION.min_pixels,
                            VIDEO_VISION.max_pixels)
    resized = [PilBackend.resize(pil, f, SizeDict(height=h, width=w), resample=3) for f in frames]
    prepared = [pil.normalize(pil.rescale(f, 1 / 255), pil.image_mean, pil.image_std) for f in resized]
    video = torch.from_numpy(np.stack(prepared)[None].astype(np.float32))
    ref_rows, gt, gh, gw = ref_video_processor.patchify(video, patch_size=14, merge_size=2, temporal_patch_size=2)
    assert ours.grid_thw == (gt, gh, gw)
    assert (ours.pixel_values - ref_rows[0]).abs().max() <= 1e-5
    ref_times = [i / ref_meta.fps for i in ref_meta.frames_indices][::2][:gt]
    assert list(ours.timestamps) == ref_times


def test_seeking_gives_the_same_frames_as_sequential_decoding(video_tools):
    data = video_tools.make_video(120, 12, gop=10)
    wanted = lambda info: [0, 3, 50, 51, 90, 119]  # noqa: E731
    sequential = decode_video(data, wanted, seek_gap=10_000)
    seeking = decode_video(data, wanted, seek_gap=1)
    assert np.array_equal(sequential.frames, seeking.frames)
    # and the frames are the ones that were written (up to compression)
    for k, i in enumerate(sequential.indices):
        assert np.abs(sequential.frames[k].astype(int) - video_tools.frame_pattern(i, 48, 64)).mean() < 8


def test_frame_list_and_odd_counts_pad_by_repeating_the_last_frame(video_tools):
    frames = np.stack([video_tools.frame_pattern(i, 56, 56) for i in range(3)])
    cfg = VideoConfig(VIDEO_VISION)
    indices = sample_indices(VideoInfo(3, 2.0, 56, 56), cfg)
    assert indices == [0, 1, 2, 2]
    out = process_video(frames[indices], indices, 2.0, cfg)
    assert out.grid_thw[0] == 2 and out.timestamps == (0.0, 1.0)


def test_webm_without_a_frame_count(video_tools):
    # WebM (and MKV) store no frame count: transformers' read_video_pyav then sees 0 frames and fails; glmv estimates the
    # count from the stream duration.
    data = video_tools.make_video(40, 8, codec="libvpx-vp9", container="webm")
    decoded = decode_video(data, lambda info: sample_glm4v(info))
    assert decoded.info.total_frames == 40
    assert decoded.indices == sample_glm4v(VideoInfo(40, 8.0, 64, 48))
    for k, i in enumerate(decoded.indices):
        assert np.abs(decoded.frames[k].astype(int) - video_tools.frame_pattern(i, 48, 64)).mean() < 8
