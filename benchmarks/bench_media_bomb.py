"""Peak RSS growth of two "frame bombs": small requests whose media decode to huge frames.

    python benchmarks/bench_media_bomb.py [--model PATH]

- png list: a ``video_url`` frame list of 32 ``data:`` URLs of a 4096x4096 1-bit PNG (~0.1 MB of request);
- mp4: a ~50 KB H.264 MP4 of 60 frames at 4096x4096, 2 fps (every frame is sampled).

Each request runs in a fresh process through ``Processor.apply_chat_template`` (what the server does with a
request's messages), after a small warm-up request, and prints the peak RSS growth (VmHWM) it caused. Decoded at
full size and stacked, the two take ~1.6 GB and ~2.9 GB of RGB frames; resized as they are decoded, one frame.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import subprocess
import sys
import tempfile
from fractions import Fraction

import av
from PIL import Image

from glmv.model_path import BUNDLED

BOMB_SIDE = 4096

# Runs in the child: warm up (lazy imports, codec and thread-pool start-up are a one-time process cost, not the
# request's), reset the high-water mark, process the request, print the growth and how the request ended.
_CHILD = """
import json, sys
import glmv
from glmv.errors import InputError
from glmv.inputs.limits import MediaLimits
from glmv.testing.media_urls import mp4_bytes, png_bytes
from glmv.testing.memory import peak, reset_peak

proc = glmv.Processor.from_pretrained(sys.argv[1], limits=MediaLimits.untrusted())
proc.apply_chat_template([{"role": "user", "content": [{"type": "image", "image": png_bytes()},
                                                       {"type": "video", "video": mp4_bytes()}]}])
messages = json.load(open(sys.argv[2]))
base = reset_peak()
try:
    proc.apply_chat_template(messages)
    outcome = "processed"
except InputError as e:
    outcome = type(e).__name__
print(peak() - base, outcome)
"""


def png_list_bomb(frames: int = 32) -> list[dict]:
    """Messages with one video given as ``frames`` data: URLs of a 4096x4096 1-bit PNG (~2 KB each)."""
    buf = io.BytesIO()
    Image.new("1", (BOMB_SIDE, BOMB_SIDE)).save(buf, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    return [{"role": "user", "content": [{"type": "video_url", "video_url": [url] * frames}]}]


def mp4_bomb(frames: int = 60, fps: int = 2) -> list[dict]:
    """Messages with one ~50 KB MP4 of ``frames`` blank 4096x4096 frames, as a data: URL."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width = stream.height = BOMB_SIDE
        stream.pix_fmt, stream.options = "yuv420p", {"preset": "ultrafast"}
        frame = av.VideoFrame(BOMB_SIDE, BOMB_SIDE, "yuv420p")
        for plane in frame.planes:
            plane.update(bytes(plane.buffer_size))
        for i in range(frames):
            frame.pts, frame.time_base = i, Fraction(1, fps)  # without timestamps the muxer invents a rate
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    url = "data:video/mp4;base64," + base64.b64encode(buf.getvalue()).decode()
    return [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": url}}]}]


def peak_rss_growth(messages: list[dict], model: str = str(BUNDLED)) -> tuple[int, str]:
    """(peak RSS growth in bytes, outcome) of processing ``messages`` in a fresh process with ``model``'s
    processor and the server's limits; outcome is ``processed`` or the InputError subclass it raised."""
    with tempfile.NamedTemporaryFile("w", suffix=".json") as f:
        json.dump(messages, f)
        f.flush()
        result = subprocess.run([sys.executable, "-c", _CHILD, model, f.name], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"bomb child failed:\n{result.stderr}")
    growth, outcome = result.stdout.split()
    return int(growth), outcome


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(BUNDLED), help="checkpoint whose processor configs are used")
    args = ap.parse_args()
    print(f"{'bomb':34} {'request KB':>10} {'peak RSS growth MiB':>20}  outcome")
    for name, messages in (("png list: 32 x 4096x4096 data URLs", png_list_bomb()),
                           ("mp4: 60 frames at 4096x4096", mp4_bomb())):
        growth, outcome = peak_rss_growth(messages, args.model)
        print(f"{name:34} {len(json.dumps(messages)) / 1024:10.0f} {growth / 2**20:20.0f}  {outcome}")


if __name__ == "__main__":
    main()
