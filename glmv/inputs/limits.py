"""Limits on what one request may send, in one place so the server can override them."""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class MediaLimits:
    """Caps checked before any expensive work (download, decode, resize).

    ``allowed_dirs`` governs local files named by *strings* (plain paths and ``file://`` URLs), the form media takes
    when it arrives inside a JSON request: ``None`` allows any local path (a library caller is trusted), a tuple
    allows only paths inside those directories (after resolving symlinks), ``()`` forbids local files. ``Path``
    objects, bytes and in-memory images are always accepted: only Python code can construct them.
    """

    max_image_bytes: int = 32 << 20
    max_video_bytes: int = 512 << 20
    max_image_pixels: int = 50_000_000  # source pixels, read from the header before decoding
    max_images: int = 32  # per request
    max_videos: int = 4  # per request
    max_video_frames: int = 1024  # frames actually sampled (the GLM rules take at most 640)
    max_video_seconds: float = 3 * 3600.0
    max_frame_pixels: int = 4096 * 4096
    timeout_s: float = 10.0  # per network operation and for a whole download
    max_redirects: int = 3
    allow_private_networks: bool = False
    allowed_dirs: tuple[str, ...] | None = None

    @classmethod
    def untrusted(cls, **overrides) -> "MediaLimits":
        """Defaults for requests from the network: no local files, no private addresses."""
        return replace(cls(allowed_dirs=(), allow_private_networks=False), **overrides)
