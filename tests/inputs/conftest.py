"""Fixtures for the inputs tests: a tiny checkpoint directory (tokenizer + small processor configs), videos
written with PyAV, and the transformers reference pieces that import without torchvision."""

from __future__ import annotations

import io
import types
from pathlib import Path

import av
import numpy as np
import pytest

from glmv.testing.tiny_tokenizer import make_tiny_tokenizer, write_processor_configs


@pytest.fixture(scope="session")
def ckpt(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tiny_ckpt")
    make_tiny_tokenizer(path)
    write_processor_configs(path)
    return path


@pytest.fixture(scope="session")
def ref_tokenizer(ckpt):
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_file=str(ckpt / "tokenizer.json"))


def frame_pattern(i: int, height: int, width: int) -> np.ndarray:
    """A frame whose content identifies its index (smooth, so compression keeps it recognisable)."""
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([(x * 3 + i * 7) % 256, (y * 2 + i * 13) % 256, np.full_like(x, (i * 29) % 256)], -1)
    return base.astype(np.uint8)


def make_video(num_frames: int, fps: int, height: int = 48, width: int = 64, codec: str = "libx264",
               container: str = "mp4", gop: int = 12) -> bytes:
    buf = io.BytesIO()
    with av.open(buf, "w", format=container) as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.gop_size = gop
        for i in range(num_frames):
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame_pattern(i, height, width), format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buf.getvalue()


@pytest.fixture(scope="session")
def video_tools():
    """The helpers above, as a fixture (test modules cannot import conftest under --import-mode=importlib)."""
    return types.SimpleNamespace(make_video=make_video, frame_pattern=frame_pattern)
