"""Frame bombs: small requests whose media decode to 4096x4096 frames must not hold them all at once.

Peak RSS is measured in a fresh process (benchmarks/bench_media_bomb.py, which prints the same numbers) with the
bundled model's processor, the one ``glmv serve`` uses by default. Decoded at full size and stacked before
resizing, the 32-frame list took ~3.1 GiB and the 60-frame MP4 ~5.8 GiB; each frame resized as it is decoded, both
stay near one frame's worth. The full-size cases are slow; the 8-frame ones (~0.8 GiB before) run by default.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

_BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_media_bomb.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_media_bomb", _BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ONE_FRAME = 4096 * 4096 * 3  # at least one RGB frame at source size exists at some moment: the measurement works


@pytest.mark.parametrize("bomb,frames", [
    ("png_list_bomb", 8),
    ("mp4_bomb", 8),
    pytest.param("png_list_bomb", 32, marks=pytest.mark.slow),
    pytest.param("mp4_bomb", 60, marks=pytest.mark.slow),
])
def test_frame_bomb_peak_rss_stays_near_one_frame(bench, bomb, frames):
    growth, outcome = bench.peak_rss_growth(getattr(bench, bomb)(frames))
    assert outcome == "processed"
    assert ONE_FRAME <= growth < 512 << 20, f"peak RSS grew by {growth / 2**20:.0f} MiB"
