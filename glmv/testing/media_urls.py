"""Small images and videos as bytes and data: URLs, the way HTTP clients send media (tests, benchmarks)."""

from __future__ import annotations

import base64
import io

import av
import numpy as np
from PIL import Image


def png_bytes(width: int = 64, height: int = 48, color: tuple[int, int, int] = (200, 40, 40)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buf, format="PNG")
    return buf.getvalue()


def mp4_bytes(frames: int = 8, fps: int = 4, width: int = 64, height: int = 48) -> bytes:
    """A short H.264 clip whose frames differ (a moving gradient), so every frame decodes to new content."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        y, x = np.mgrid[0:height, 0:width]
        for i in range(frames):
            rgb = np.stack([(x * 4 + i * 16) % 256, (y * 4) % 256, np.full_like(x, i * 30 % 256)], -1)
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb.astype(np.uint8), format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buf.getvalue()


def data_url(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def image_part(data: bytes | None = None, mime: str = "image/png") -> dict:
    """An OpenAI `image_url` content part carrying the image inline."""
    return {"type": "image_url", "image_url": {"url": data_url(png_bytes() if data is None else data, mime)}}


def video_part(data: bytes | None = None) -> dict:
    return {"type": "video_url", "video_url": {"url": data_url(mp4_bytes() if data is None else data, "video/mp4")}}
