"""Limits on what one request may send, in one place so the server can override them."""

from __future__ import annotations

from dataclasses import dataclass, replace

from glmv.errors import MediaTooLargeError

# Pixel values of one LLM token: a 2x2 merge of patches of 3 x 2 x 14 x 14 float32 values (GLM-V's fixed geometry).
TOKEN_PIXEL_BYTES = 4 * 1176 * 4


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
    # Bytes of pixel values (the float32 rows a request keeps until the model runs) that one request's images and
    # videos may resize to, counted from headers and the resize target before any pixel is decoded. The default
    # is a 128k-token context (the largest of GLM-V) filled with vision tokens: more can never fit one prompt.
    max_decoded_bytes: int = 131072 * TOKEN_PIXEL_BYTES
    timeout_s: float = 10.0  # per network operation and for a whole download
    max_redirects: int = 3
    allow_private_networks: bool = False
    allowed_dirs: tuple[str, ...] | None = None

    @classmethod
    def untrusted(cls, **overrides) -> "MediaLimits":
        """Defaults for requests from the network: no local files, no private addresses."""
        return replace(cls(allowed_dirs=(), allow_private_networks=False), **overrides)


class DecodeBudget:
    """What is left of one request's ``max_decoded_bytes``; each image or video is charged before it is decoded."""

    def __init__(self, limits: MediaLimits):
        self.limit = self.left = limits.max_decoded_bytes

    def charge(self, nbytes: int, what: str) -> None:
        """Take ``nbytes`` for ``what`` (e.g. "the video (64 frames of 1920x1080)"), or raise MediaTooLargeError."""
        if nbytes > self.left:
            raise MediaTooLargeError(
                f"{what} resizes to {_mib(nbytes)} of pixel values, over the {_mib(self.left)} left of the "
                f"request's limit of {_mib(self.limit)} (max_decoded_bytes); send fewer, smaller or shorter images "
                f"and videos")
        self.left -= nbytes


def _mib(nbytes: int) -> str:
    return f"{nbytes / 2**20:.1f} MiB"
