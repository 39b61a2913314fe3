"""Hostile and broken input: every case is an InputError (MediaTooLargeError for size limits), quickly.

Network tests only ever talk to 127.0.0.1 servers started here; non-public addresses are refused before any
connection is attempted.
"""

from __future__ import annotations

import http.server
import io
import socket
import struct
import threading
import time
import zlib

import numpy as np
import pytest
from PIL import Image

import glmv
from glmv.errors import InputError, MediaTooLargeError
from glmv.inputs.fetch import read_source
from glmv.inputs.limits import MediaLimits
from glmv.inputs.media import decode_video, load_image


def _png(width=32, height=32) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def _jpeg() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def _bomb_png(width=100_000, height=100_000) -> bytes:
    """A small valid PNG whose header claims a huge size (the decompression-bomb shape)."""
    data = bytearray(_png(1, 1))
    ihdr = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return bytes(data)


BAD_IMAGES = {
    "empty": b"",
    "truncated_png": _png()[:200],
    "truncated_jpeg": _jpeg()[:300],
    "text_as_image": b"<html>this is not a picture</html>",
    "random_bytes": np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes(),
    "svg": b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"></svg>',
}


@pytest.mark.parametrize("name", sorted(BAD_IMAGES))
def test_bad_image_bytes(name):
    with pytest.raises(InputError):
        load_image(BAD_IMAGES[name])


def test_decompression_bomb_refused_before_decoding():
    started = time.perf_counter()
    with pytest.raises(MediaTooLargeError, match="pixels"):
        load_image(_bomb_png())
    assert time.perf_counter() - started < 1.0


def test_byte_and_count_limits():
    with pytest.raises(MediaTooLargeError):
        load_image(_png(), MediaLimits(max_image_bytes=100))
    with pytest.raises(MediaTooLargeError):
        load_image(Image.new("RGB", (300, 300)), MediaLimits(max_image_pixels=10_000))
    with pytest.raises(MediaTooLargeError):
        read_source("data:image/png;base64," + "A" * 4000, MediaLimits(), max_bytes=1000)
    with pytest.raises(InputError, match="base64"):
        read_source("data:image/png;base64,@@@@", MediaLimits(), max_bytes=1000)


def test_too_many_images_names_the_limit(ckpt):
    proc = glmv.Processor.from_pretrained(ckpt, limits=MediaLimits(max_images=2))
    content = [{"type": "image", "image": Image.new("RGB", (28, 28))} for _ in range(3)]
    with pytest.raises(MediaTooLargeError, match="3 images"):
        proc.apply_chat_template([{"role": "user", "content": content}])


def test_local_files_outside_allowed_dirs(tmp_path):
    inside = tmp_path / "ok"
    inside.mkdir()
    (inside / "a.png").write_bytes(_png())
    (tmp_path / "secret.png").write_bytes(_png())
    limits = MediaLimits(allowed_dirs=(str(inside),))
    assert load_image(str(inside / "a.png"), limits).size == (32, 32)
    assert load_image(f"file://{inside / 'a.png'}", limits).size == (32, 32)
    for ref in (str(tmp_path / "secret.png"), f"file://{tmp_path / 'secret.png'}", str(inside / ".." / "secret.png")):
        with pytest.raises(InputError, match="outside"):
            load_image(ref, limits)
    with pytest.raises(InputError, match="outside"):
        load_image(str(inside / "a.png"), MediaLimits.untrusted())
    with pytest.raises(InputError, match="scheme"):
        load_image("ftp://example.com/a.png")


@pytest.mark.parametrize("url", ["http://10.0.0.1/a.png", "http://127.0.0.1:9/a.png", "https://[::1]/a.png",
                                 "http://169.254.169.254/latest/meta-data", "http://0.0.0.0/", "http://[::ffff:10.0.0.1]/",
                                 "http://100.64.0.1/", "http://224.0.0.1/"])
def test_private_addresses_are_refused_before_connecting(url, monkeypatch):
    def no_connect(*args, **kwargs):
        raise AssertionError("a connection was attempted")

    monkeypatch.setattr(socket, "create_connection", no_connect)
    with pytest.raises(InputError, match="non-public"):
        load_image(url)


@pytest.fixture
def silent_server():
    """A TCP server on 127.0.0.1 that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    yield server.getsockname()[1]
    server.close()


def test_url_that_never_answers_times_out(silent_server):
    limits = MediaLimits(allow_private_networks=True, timeout_s=0.5)
    started = time.perf_counter()
    with pytest.raises(InputError, match="timed out"):
        load_image(f"http://127.0.0.1:{silent_server}/a.png", limits)
    assert time.perf_counter() - started < 5


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        if self.path == "/redirect-file":
            self.send_response(302)
            self.send_header("Location", "file:///etc/passwd")
            self.end_headers()
        elif self.path == "/loop":
            self.send_response(302)
            self.send_header("Location", "/loop")
            self.end_headers()
        elif self.path == "/huge":
            self.send_response(200)
            self.send_header("Content-Length", str(1 << 30))
            self.end_headers()
        elif self.path == "/image":
            body = _png()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        else:
            self.send_response(404)
            self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def http_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_http_fetch_paths(http_server):
    limits = MediaLimits(allow_private_networks=True, timeout_s=2)
    assert load_image(f"{http_server}/image", limits).size == (32, 32)
    with pytest.raises(InputError, match="unsupported or malformed URL"):
        load_image(f"{http_server}/redirect-file", limits)
    with pytest.raises(InputError, match="too many redirects"):
        load_image(f"{http_server}/loop", limits)
    with pytest.raises(MediaTooLargeError):
        load_image(f"{http_server}/huge", limits)
    with pytest.raises(InputError, match="HTTP 404"):
        load_image(f"{http_server}/missing", limits)


def _all_frames(info):
    return list(range(info.total_frames))


def test_bad_videos(video_tools):
    good = video_tools.make_video(12, 6)
    for data in (b"", b"\x00\x00\x00\x18ftypisom" + b"\x00" * 100, good[: len(good) // 3], _png(),
                 b"#EXTM3U\n#EXTINF:1,\nfile:///etc/passwd\n"):
        with pytest.raises(InputError):
            decode_video(data, _all_frames)
    with pytest.raises(MediaTooLargeError, match="long"):
        decode_video(good, _all_frames, MediaLimits(max_video_seconds=1))
    with pytest.raises(MediaTooLargeError, match="frames"):
        decode_video(good, _all_frames, MediaLimits(max_video_frames=4))
    with pytest.raises(MediaTooLargeError):
        decode_video(good, _all_frames, MediaLimits(max_frame_pixels=100))


def test_bad_frame_lists(ckpt):
    proc = glmv.Processor.from_pretrained(ckpt)
    with pytest.raises(InputError, match="differ in size"):
        proc.process_video([np.zeros((28, 28, 3), np.uint8), np.zeros((56, 28, 3), np.uint8)], fps=1)
    with pytest.raises(InputError, match="empty"):
        proc.process_video([], fps=1)
