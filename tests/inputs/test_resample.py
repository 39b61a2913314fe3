"""glmv's copy of PIL's resize arithmetic (glmv/inputs/resample.py) gives Image.resize's bytes: every supported
filter, growing and shrinking each axis, both of PIL's pass orders, any band of output rows on its own."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
import textwrap

import numpy as np
import PIL
import pytest
from PIL import Image

from glmv.inputs import resample
from glmv.inputs.image import VisionConfig, process_image

SUPPORTED = [Image.Resampling.BICUBIC, Image.Resampling.BILINEAR, Image.Resampling.BOX]


def pil_resize(src: np.ndarray, size: tuple[int, int], resample_filter: int) -> np.ndarray:
    return np.asarray(Image.fromarray(src).resize(size, resample=resample_filter))


def random_sizes(n: int, seed: int) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """(in, out) (width, height) pairs from 1 to 120 px: shrink, grow, keep one axis."""
    rng = np.random.default_rng(seed)
    pairs = []
    for i in range(n):
        in_w, in_h, out_w, out_h = (int(v) for v in rng.integers(1, 121, 4))
        if i % 5 == 0:
            out_w = in_w  # height only
        elif i % 5 == 1:
            out_h = in_h  # width only
        pairs.append(((in_w, in_h), (out_w, out_h)))
    return pairs


@pytest.mark.parametrize("resample_filter", SUPPORTED, ids=lambda f: f.name)
def test_resize_equals_pil(resample_filter):
    pairs = random_sizes(120, seed=int(resample_filter))
    orders = {resample.horizontal_first(*a, *b) for a, b in pairs}
    assert orders == ({True, False} if int(PIL.__version__.split(".")[0]) >= 13 else {True})  # each order ran
    rng = np.random.default_rng(1)
    for (in_w, in_h), out in pairs:
        src = rng.integers(0, 256, (in_h, in_w, 3), dtype=np.uint8)
        assert np.array_equal(resample.resize(src, out, resample_filter), pil_resize(src, out, resample_filter)), \
            f"{in_w}x{in_h} -> {out[0]}x{out[1]}"


@pytest.mark.parametrize("in_size, out_size", [
    ((1920, 1080), (1932, 1092)),  # 1080p at GLM-4.5V's budget: grows a little, horizontal pass first
    ((3840, 2160), (2912, 1624)),  # 4K: shrinks both
    ((700, 1500), (700, 476)),  # height only, shrinking 3x: vertical pass alone
    ((1500, 700), (476, 700)),  # width only
    ((500, 1500), (476, 504)),  # height shrinks much more than width: Pillow 13 passes vertically first
])
def test_any_band_equals_those_rows_of_the_whole(in_size, out_size):
    rng = np.random.default_rng(2)
    src = rng.integers(0, 256, (in_size[1], in_size[0], 3), dtype=np.uint8)
    plan = resample.plan(in_size, out_size, Image.Resampling.BICUBIC)
    whole = plan.rows(src, 0, out_size[1])
    assert np.array_equal(whole, pil_resize(src, out_size, Image.Resampling.BICUBIC))
    edges = sorted({0, out_size[1], *(int(y) for y in rng.integers(1, out_size[1], 5))})
    bands = [plan.rows(src, y0, y1) for y0, y1 in zip(edges, edges[1:])]
    assert np.array_equal(np.concatenate(bands), whole)


@pytest.mark.parametrize("resample_filter", [Image.Resampling.NEAREST, Image.Resampling.HAMMING,
                                             Image.Resampling.LANCZOS], ids=lambda f: f.name)
def test_other_filters_are_left_to_pil(resample_filter):
    assert resample.plan((64, 48), (32, 24), resample_filter) is None
    src = np.random.default_rng(3).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    assert np.array_equal(resample.resize(src, (32, 24), resample_filter), pil_resize(src, (32, 24), resample_filter))


def test_the_same_size_is_left_to_pil():
    assert resample.plan((64, 48), (64, 48), Image.Resampling.BICUBIC) is None


def test_a_pillow_that_resizes_differently_leaves_the_work_to_pil(monkeypatch, caplog):
    """Were a Pillow release to change its pass order again, the check at first use would see it: PIL resizes,
    with a warning, and the pixels stay PIL's."""
    monkeypatch.setattr(resample, "horizontal_first", lambda *sizes: False)  # a wrong rule
    resample._matches_pil.cache_clear()
    resample.plan.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger="glmv.inputs.resample"):
            assert resample.plan((1920, 1080), (1932, 1092), Image.Resampling.BICUBIC) is None
        assert "resizes differently" in caplog.text
        image = Image.fromarray(np.random.default_rng(4).integers(0, 256, (300, 500, 3), dtype=np.uint8))
        cfg = VisionConfig()
        ours = process_image(image, cfg, threads=2).pixel_values
        monkeypatch.undo()
        resample._matches_pil.cache_clear()
        resample.plan.cache_clear()
        assert resample.plan((500, 300), (504, 308), Image.Resampling.BICUBIC) is not None
        assert np.array_equal(ours.numpy().view(np.uint32),
                              process_image(image, cfg, threads=2).pixel_values.numpy().view(np.uint32))
    finally:
        resample._matches_pil.cache_clear()
        resample.plan.cache_clear()


def test_a_read_only_install_compiles_without_a_disk_cache():
    """Where numba finds no writable cache directory, it refuses ``cache=True``; the kernels then compile in the
    process, and the rows are the same."""
    script = textwrap.dedent("""
        from numba.core import caching
        caching.CacheImpl._locator_classes = []  # as a read-only install with no writable home
        import numpy as np
        from PIL import Image
        from glmv.inputs.image import VisionConfig, process_image
        image = Image.fromarray(np.random.default_rng(5).integers(0, 256, (300, 500, 3), dtype=np.uint8))
        rows = process_image(image, VisionConfig(), threads=2).pixel_values.numpy()
        np.save(__import__("sys").argv[1], rows)
    """)
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "rows.npy")
        subprocess.run([sys.executable, "-c", script, out], check=True, timeout=300)
        rows = np.load(out)
    image = Image.fromarray(np.random.default_rng(5).integers(0, 256, (300, 500, 3), dtype=np.uint8))
    expected = process_image(image, VisionConfig(), threads=2).pixel_values.numpy()
    assert np.array_equal(rows.view(np.uint32), expected.view(np.uint32))
