"""The fast image path (bands of rows resized with PIL's arithmetic in numba, table lookup straight into the patch
layout) gives pixel_values bit-identical to transformers' PIL processor (Glm4vImageProcessorPil) at real
checkpoint budgets: 1080p, 4K, odd sizes, every grow/shrink combination of the two axes, RGBA, grey, palette and
tiny images, on 1 and 3 threads."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest
from PIL import Image

from glmv.inputs.image import PARALLEL_MIN_PIXELS, VisionConfig, patchify, process_image, target_size

MIN_PIXELS, MAX_PIXELS = 12544, 9633792  # GLM-4.1V/4.5V preprocessor_config.json
CFG = VisionConfig(min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS)

# (height, width): 1080p, 4K, 224px; odd sizes rounding each axis up or down (PIL picks its pass order from that);
# over the budget (4K); tiny (scaled up to the minimum); extreme aspect ratios.
SIZES = [(1080, 1920), (2160, 3840), (224, 224), (1081, 1917), (1100, 1925), (97, 98), (98, 97), (333, 111),
         (1000, 1001), (1, 1), (3, 5), (27, 29), (30, 2000), (2000, 30)]


@pytest.fixture(scope="module")
def reference():
    from transformers.models.glm4v.image_processing_pil_glm4v import (
        Glm4vImageProcessorPil,
    )

    return Glm4vImageProcessorPil(size={"shortest_edge": MIN_PIXELS, "longest_edge": MAX_PIXELS})


def random_image(height: int, width: int, mode: str = "RGB", seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed * 1_000_003 + height * 7919 + width)
    bands = len(Image.new(mode, (1, 1)).getbands())
    shape = (height, width) if bands == 1 else (height, width, bands)
    return Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8))  # 1/2/3/4 bands: L/LA/RGB/RGBA


def assert_bit_identical(ours: np.ndarray, expected: np.ndarray) -> None:
    assert ours.dtype == expected.dtype == np.float32 and ours.shape == expected.shape
    # compare bits, not values: catches -0.0 against 0.0 and NaN payloads too
    mismatched = np.count_nonzero(ours.view(np.uint32) != expected.view(np.uint32))
    assert mismatched == 0, f"{mismatched} of {ours.size} values differ"


@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("size", SIZES, ids=[f"{h}x{w}" for h, w in SIZES])
def test_bit_identical_to_transformers(size, threads, reference):
    image = random_image(*size)
    expected = reference(image, return_tensors="np")
    ours = process_image(image, CFG, threads=threads)
    assert list(ours.grid_thw) == expected["image_grid_thw"][0].tolist()
    assert_bit_identical(ours.pixel_values.numpy(), expected["pixel_values"])


@pytest.mark.parametrize("mode", ["RGBA", "L", "LA", "P", "CMYK", "I;16"])
@pytest.mark.parametrize("threads", [1, 3])
def test_other_modes_bit_identical_to_transformers(mode, threads, reference):
    if mode == "I;16":
        image = Image.fromarray(np.random.default_rng(3).integers(0, 65536, (720, 1280), dtype=np.uint16))
    elif mode in ("P", "CMYK"):
        image = random_image(720, 1280).convert(mode)
    else:
        image = random_image(720, 1280, mode)
    assert image.mode == mode
    expected = reference(image, return_tensors="np")["pixel_values"]
    assert_bit_identical(process_image(image, CFG, threads=threads).pixel_values.numpy(), expected)


@pytest.mark.parametrize("resample", list(Image.Resampling), ids=lambda f: f.name)
@pytest.mark.parametrize("size", [(1080, 1920), (97 * 7, 98 * 7), (1500, 700)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_bands_equal_one_thread_for_every_filter(size, resample):
    """Each thread resizes and looks up its own band of rows (PIL resizes first, for the filters glmv leaves to
    it); the rows must be those of one thread's whole image."""
    cfg = VisionConfig(min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS, resample=int(resample))
    h, w = target_size(*size, cfg)
    assert h * w >= PARALLEL_MIN_PIXELS  # the parallel path runs
    image = random_image(*size, seed=int(resample))
    serial = process_image(image, cfg, threads=1).pixel_values.numpy()
    for threads in (2, 3, 8):
        assert_bit_identical(process_image(image, cfg, threads=threads).pixel_values.numpy(), serial)


def test_default_threads_are_torchs(monkeypatch, reference):
    """Without ``threads``, an image gets torch's thread count (the server's --threads)."""
    import torch

    import glmv.inputs.image as image_module

    used: list[int] = []
    spread = image_module._spread

    def recording(work, n: int, threads: int) -> None:
        used.append(threads)
        spread(work, n, threads)

    monkeypatch.setattr(image_module, "_spread", recording)
    image = random_image(1080, 1920, seed=5)
    expected = reference(image, return_tensors="np")["pixel_values"]
    for n in (1, 2, 16):
        monkeypatch.setattr(torch, "get_num_threads", lambda n=n: n)
        assert_bit_identical(process_image(image, CFG).pixel_values.numpy(), expected)
    assert used == [1, 2, 16]  # asked for; _spread runs at most one thread per band


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_gets_its_own_threads():
    """A forked child (a DataLoader worker) inherits the thread pool without its threads; work handed to them
    would never run."""
    image = random_image(1080, 1920, seed=6)
    expected = process_image(image, CFG, threads=3).pixel_values.numpy()  # the parent's pool has threads now
    pid = os.fork()
    if pid == 0:  # the child must leave through os._exit whatever happens, or it would run the rest of the session
        code = 1
        try:
            signal.alarm(60)  # a stuck child dies rather than hanging the run
            code = 0 if np.array_equal(process_image(image, CFG, threads=3).pixel_values.numpy(), expected) else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def _plain_patchify(frames: np.ndarray, cfg: VisionConfig) -> np.ndarray:
    """Normalise, then one reshape/transpose (transformers' order of work), as a reference for patchify."""
    values = (frames.astype(np.float64) * cfg.rescale_factor).astype(np.float32)
    values = (values - np.asarray(cfg.image_mean, np.float32)) / np.asarray(cfg.image_std, np.float32)
    t, p, m = cfg.temporal_patch_size, cfg.patch_size, cfg.merge_size
    T, H, W, C = frames.shape
    blocks = values.reshape(T // t, t, H // (p * m), m, p, W // (p * m), m, p, C)
    blocks = blocks.transpose(0, 2, 5, 3, 6, 8, 1, 4, 7)
    return np.ascontiguousarray(blocks).reshape(-1, C * t * p * p)


@pytest.mark.parametrize("cfg, shape, still", [
    (VisionConfig(), (2, 56, 84, 3), True),  # an image: one frame broadcast over the temporal patch
    (VisionConfig(), (4, 56, 84, 3), True),  # a still broadcast over two temporal patches
    (VisionConfig(), (6, 28, 112, 3), False),  # video frames
    (VisionConfig(patch_size=16, temporal_patch_size=1, merge_size=1), (1, 64, 96, 3), False),  # GLM-Image
], ids=["still", "still-2-groups", "video", "glm-image"])
def test_patchify_equals_normalise_then_transpose(cfg, shape, still):
    rng = np.random.default_rng(4)
    if still:
        frames = np.broadcast_to(rng.integers(0, 256, shape[1:], dtype=np.uint8), shape)
    else:
        frames = rng.integers(0, 256, shape, dtype=np.uint8)
    assert_bit_identical(patchify(frames, cfg), _plain_patchify(frames, cfg))
