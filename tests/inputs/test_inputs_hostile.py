"""Findings of a hostile-client probe of ``glmv serve``: frames resized as they are decoded within a per-request
budget, IPv6 forms that carry an IPv4 address, and malformed fields that must be InputError (HTTP 400), not 500.

No test opens a real connection: ``socket.create_connection`` is replaced where a fetch could get that far.
"""

from __future__ import annotations

import base64
import io
import os
import socket
import struct
import zlib
from fractions import Fraction

import av
import numpy as np
import pytest
import torch
from PIL import Image

import glmv
from glmv.errors import InputError, MediaTooLargeError
from glmv.inputs import media
from glmv.inputs.chat import normalize_messages
from glmv.inputs.image import pixel_value_bytes
from glmv.inputs.limits import MediaLimits
from glmv.inputs.media import VideoInfo, decode_video, load_image
from glmv.inputs.video import process_video, sample_indices


@pytest.fixture(scope="module")
def processor(ckpt):
    return glmv.Processor.from_pretrained(ckpt)


def _png(width: int, height: int, seed: int = 0) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def _png_header_only(width: int, height: int) -> bytes:
    """A 1x1 PNG whose header claims ``width`` x ``height``: decoding it fails, reading its header does not."""
    data = bytearray(_png(1, 1))
    ihdr = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return bytes(data)


def _user(*parts) -> list[dict]:
    return [{"role": "user", "content": list(parts)}]


# -- 5. frames resized as they are decoded, within a per-request budget ----------------------------------------------

def test_resizing_while_decoding_gives_the_pixels_of_resizing_after(processor, video_tools):
    # 31 frames at 10 fps, 240x320: sampled to 6 frames and shrunk by the tiny checkpoint's pixel budget
    data = video_tools.make_video(31, 10, height=240, width=320)
    cfg = processor.video_config
    ours = processor.process_video(data)
    full = decode_video(data, lambda info: sample_indices(info, cfg))  # every sampled frame at its source size
    assert full.frames.shape[1:3] == (240, 320)
    reference = process_video(full.frames, full.indices, full.info.fps, cfg)
    assert ours.grid_thw == reference.grid_thw and ours.timestamps == reference.timestamps
    assert torch.equal(ours.pixel_values, reference.pixel_values)


def test_frame_list_resized_while_decoding_gives_the_same_pixels(processor):
    frames = [_png(200, 150, seed=i) for i in range(5)]
    cfg = processor.video_config
    ours = processor.process_video(frames, fps=3)
    arrays = np.stack([np.asarray(load_image(f)) for f in frames])
    indices = sample_indices(VideoInfo(5, 3.0, 200, 150), cfg)
    reference = process_video(arrays[indices], indices, 3.0, cfg)
    assert ours.grid_thw == reference.grid_thw
    assert torch.equal(ours.pixel_values, reference.pixel_values)


def test_the_budget_charges_exactly_the_pixel_values_produced(processor, video_tools):
    image = processor.process_image(_png(300, 200))
    assert image.pixel_values.nbytes == pixel_value_bytes(200, 300, processor.image_config)
    data = video_tools.make_video(9, 4, height=96, width=128)
    video = processor.process_video(data)
    n = len(sample_indices(VideoInfo(9, 4.0, 128, 96), processor.video_config))
    assert video.pixel_values.nbytes == pixel_value_bytes(96, 128, processor.video_config.vision, n)


def _with_limits(ckpt, **limits) -> glmv.Processor:
    return glmv.Processor.from_pretrained(ckpt, limits=MediaLimits(**limits))


def test_image_over_the_budget_is_refused_from_its_header(ckpt):
    small = _with_limits(ckpt, max_decoded_bytes=10_000)
    # the pixels of this PNG cannot be decoded: refusing it with MediaTooLargeError shows only the header was read
    with pytest.raises(MediaTooLargeError, match=r"part 0 \(image\): the image \(4096x4096\).*max_decoded_bytes"):
        small.apply_chat_template(_user({"type": "image", "image": _png_header_only(4096, 4096)}))


def test_video_over_the_budget_is_refused_before_any_frame_is_decoded(ckpt, video_tools, monkeypatch):
    def no_decoding(*args, **kwargs):
        raise AssertionError("a frame was decoded")

    monkeypatch.setattr(media, "_decode_selected", no_decoding)
    small = _with_limits(ckpt, max_decoded_bytes=10_000)
    with pytest.raises(MediaTooLargeError, match=r"the video \(\d+ frames of 64x48\)"):
        small.process_video(video_tools.make_video(9, 4))


def test_the_budget_is_shared_by_the_whole_request(ckpt, processor):
    per_image = pixel_value_bytes(64, 64, processor.image_config)
    proc = _with_limits(ckpt, max_decoded_bytes=2 * per_image)
    images = [{"type": "image", "image": _png(64, 64, i)} for i in range(3)]
    with pytest.raises(MediaTooLargeError, match=r"part 2 \(image\)"):
        proc.apply_chat_template(_user(*images))
    # the next request starts with the whole budget again
    assert proc.apply_chat_template(_user(*images[:2]))["pixel_values"].nbytes == 2 * per_image


def test_frame_list_over_the_budget_is_refused_from_the_first_header(ckpt):
    # the probe's shape: a video_url list of data: URLs of huge PNGs (here header-only ones, which cannot be decoded)
    url = "data:image/png;base64," + base64.b64encode(_png_header_only(4096, 4096)).decode()
    small = _with_limits(ckpt, max_decoded_bytes=10_000)
    with pytest.raises(MediaTooLargeError, match=r"part 0 \(video\): the video \(32 frames of 4096x4096\)"):
        small.apply_chat_template(_user({"type": "video_url", "video_url": [url] * 32}))


def _ts_segment(frames: int, width: int, height: int, start: int, fps: int = 4) -> bytes:
    """An MPEG-TS segment whose timestamps start at frame ``start`` (segments concatenate into one stream)."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="mpegts") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(start, start + frames):
            frame = av.VideoFrame.from_ndarray(np.full((height, width, 3), i * 20, np.uint8), format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buf.getvalue()


def test_a_video_that_grows_mid_stream_is_refused():
    # the header's size is what the limits and the budget checked; bigger frames later must not slip past them
    data = _ts_segment(4, 64, 48, 0) + _ts_segment(4, 128, 96, 4)
    with pytest.raises(InputError, match="changes frame size mid-stream"):
        decode_video(data, lambda info: list(range(info.total_frames)))


def test_decoder_threads_are_bounded_by_frame_size(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    assert media._decoder_threads(VideoInfo(60, 2.0, 4096, 4096)) <= 2  # each thread holds ~50 MB frames
    assert media._decoder_threads(VideoInfo(60, 2.0, 1920, 1080)) >= 16
    assert media._decoder_threads(VideoInfo(60, 2.0, 64, 48)) == 64


# -- 6. IPv6 forms that carry an IPv4 address are judged as that IPv4 address ----------------------------------------

CARRYING_PRIVATE = {
    "NAT64 64:ff9b::/96": "64:ff9b::a9fe:a9fe",  # 169.254.169.254, the cloud metadata service
    "NAT64 local-use 64:ff9b:1::/48": "64:ff9b:1::a9fe:a9fe",
    "6to4 2002::/16": "2002:a9fe:a9fe::1",
    "IPv4-compatible ::a.b.c.d": "::169.254.169.254",
    "IPv4-translated ::ffff:0:a.b.c.d": "::ffff:0:a9fe:a9fe",
    "IPv4-mapped ::ffff:a.b.c.d": "::ffff:127.0.0.1",
    "Teredo, private client": "2001:0:808:808::f5ff:fffe",  # client bits are inverted: 10.0.0.1
    "Teredo, private server": "2001:0:a00:1::f7f7:f7f7",  # server 10.0.0.1, client 8.8.8.8
}
CARRYING_PUBLIC = {
    "NAT64 64:ff9b::/96": "64:ff9b::808:808",
    "6to4 2002::/16": "2002:808:808::1",
    "IPv4-compatible ::a.b.c.d": "::8.8.8.8",
    "IPv4-translated ::ffff:0:a.b.c.d": "::ffff:0:808:808",
    "Teredo": "2001:0:808:808::f7f7:f7f7",  # server and client 8.8.8.8
}


@pytest.fixture
def connections(monkeypatch) -> list:
    """Every attempted connection's address; each attempt then fails like a refused connection."""
    attempts = []

    def record(address, *args, **kwargs):
        attempts.append(address[0])
        raise ConnectionRefusedError("test: no connection")

    monkeypatch.setattr(socket, "create_connection", record)
    return attempts


@pytest.mark.parametrize("form", sorted(CARRYING_PRIVATE))
def test_ipv6_literal_carrying_a_private_ipv4_is_refused_before_connecting(form, connections):
    with pytest.raises(InputError, match="non-public"):
        load_image(f"http://[{CARRYING_PRIVATE[form]}]/latest/meta-data")
    assert connections == []


@pytest.mark.parametrize("form", sorted(CARRYING_PRIVATE))
def test_host_resolving_to_an_ipv6_form_carrying_a_private_ipv4_is_refused(form, connections, monkeypatch):
    address = CARRYING_PRIVATE[form]
    monkeypatch.setattr(socket, "getaddrinfo", lambda host, port, **kw: [
        (socket.AF_INET6, socket.SOCK_STREAM, 6, "", (address, port, 0, 0))])
    with pytest.raises(InputError, match="non-public"):
        load_image("http://media.example.com/a.png")
    assert connections == []


@pytest.mark.parametrize("form", sorted(CARRYING_PUBLIC))
def test_ipv6_form_carrying_a_public_ipv4_is_allowed(form, connections):
    address = CARRYING_PUBLIC[form]
    with pytest.raises(InputError, match="failed"):  # the test's refused connection, after the address check
        load_image(f"http://[{address}]/a.png")
    assert connections == [address]


# -- 7. malformed fields are InputError naming the field --------------------------------------------------------------

FRAMES = [np.zeros((28, 28, 3), np.uint8)] * 2


@pytest.mark.parametrize("fps", ["abc", {"x": 1}, "inf", "nan", float("inf"), float("nan"), 0, -1, 1e300,
                                 pytest.param(10**400, id="10**400"), True, "2", [2]])
def test_bad_fps(fps):
    with pytest.raises(InputError, match=r"message 0, part 1 \(video\): fps must be a number in \(0, 240\]"):
        normalize_messages(_user("Count.", {"type": "video", "video": FRAMES, "fps": fps}))


def test_good_fps_is_a_float():
    for fps in (1, 0.5, 240, np.float32(29.97)):
        _, refs = normalize_messages(_user({"type": "video", "video": FRAMES, "fps": fps}))
        assert refs[0].fps == pytest.approx(float(fps)) and isinstance(refs[0].fps, float)


def test_bad_fps_through_the_processor(processor):
    with pytest.raises(InputError, match="fps"):
        processor.apply_chat_template(_user({"type": "video", "video": FRAMES, "fps": "inf"}))


def _assistant(**fields) -> list[dict]:
    return [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "", **fields}]


@pytest.mark.parametrize("fields,match", [
    ({"tool_calls": 5}, r"message 1: 'tool_calls' must be a list"),
    ({"tool_calls": True}, r"message 1: 'tool_calls' must be a list"),
    ({"tool_calls": [5]}, r"message 1, tool call 0: must be an object"),
    ({"tool_calls": [{"function": 5}]}, r"tool call 0: 'function' must be an object"),
    ({"tool_calls": [{"function": "get"}]}, r"tool call 0: 'function' must be an object"),
    ({"tool_calls": [{"function": {"arguments": "{}"}}]}, r"tool call 0: the function's 'name' must be a string"),
    ({"tool_calls": [{"function": {"name": 5, "arguments": "{}"}}]}, r"'name' must be a string"),
    ({"tool_calls": [{"function": {"name": "f", "arguments": "[1, 2]"}}]}, r"arguments must be a JSON object"),
    ({"tool_calls": [{"function": {"name": "f", "arguments": 7}}]}, r"arguments must be a JSON object"),
    ({"tool_calls": [{"function": {"name": "f", "arguments": "[" * 100_000}}]}, r"arguments are not valid JSON"),
    ({"tool_calls": [{"function": {"name": "f", "arguments": "{\"a\": " + "9" * 5000 + "}"}}]}, "not valid JSON"),
    ({"reasoning_content": 5}, r"message 1: 'reasoning_content' must be a string"),
    ({"name": ["x"]}, r"message 1: 'name' must be a string"),
    ({"tool_call_id": {}}, r"message 1: 'tool_call_id' must be a string"),
])
def test_bad_message_fields(fields, match):
    with pytest.raises(InputError, match=match):
        normalize_messages(_assistant(**fields))


def test_good_tool_calls_still_parse():
    openai = {"type": "function", "function": {"name": "f", "arguments": "{\"city\": \"Paris\"}"}}
    flat = {"name": "g", "arguments": {"n": 1}}
    normalized, _ = normalize_messages(_assistant(tool_calls=[openai, flat]))
    calls = normalized[1]["tool_calls"]
    assert calls[0]["function"] == {"name": "f", "arguments": {"city": "Paris"}}
    assert calls[1]["function"] == {"name": "g", "arguments": {"n": 1}}


@pytest.mark.parametrize("part,match", [
    ({"type": "image_url", "image_url": {"url": 5}}, r"part 0 \(image\): image_url.url must be a string"),
    ({"type": "video_url", "video_url": {"url": {"nested": "x"}}}, r"part 0 \(video\): video_url.url must be a string"),
    ({"type": ["image"]}, r"message 0, part 0: unsupported content type \['image'\]"),
    ({"type": {"a": 1}}, r"unsupported content type"),
])
def test_bad_parts(part, match):
    with pytest.raises(InputError, match=match):
        normalize_messages(_user(part))


@pytest.mark.parametrize("url", ["http://example.com:99999/a.png", "http://[::1/a.png", "http://example.com:abc/",
                                 "http://[zz]/a.png", "file://[::1/etc/passwd"])
def test_malformed_urls(url, connections):
    with pytest.raises(InputError, match="malformed URL"):
        load_image(url)
    assert connections == []


def test_malformed_url_through_the_processor(processor):
    part = {"type": "image_url", "image_url": {"url": "http://example.com:99999/a.png"}}
    with pytest.raises(InputError, match=r"message 0, part 0 \(image\): malformed URL"):
        processor.apply_chat_template(_user(part))


