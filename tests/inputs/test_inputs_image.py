"""Image processor equals transformers' PIL backend (Glm4vImageProcessorPil); media conversion to RGB."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from glmv.errors import InputError
from glmv.inputs.image import VisionConfig, process_image, smart_resize
from glmv.inputs.media import load_image

MIN_PIXELS, MAX_PIXELS = 2 * 28 * 28, 2 * 28 * 28 * 40  # small budgets keep the test fast

# (height, width): tiny, square, odd, extreme aspect both ways, larger than the budget, exact multiples
SIZES = [(3, 5), (1, 1), (27, 27), (28, 28), (29, 57), (56, 84), (100, 100), (224, 224), (30, 2000), (2000, 30),
         (5, 900), (333, 111), (480, 640), (640, 480), (1080, 1920), (1, 150), (720, 13), (97, 98), (250, 251),
         (1000, 1001), (14, 2800), (3000, 2000)]


@pytest.fixture(scope="module")
def reference():
    from transformers.models.glm4v.image_processing_pil_glm4v import (
        Glm4vImageProcessorPil,
    )

    return Glm4vImageProcessorPil(size={"shortest_edge": MIN_PIXELS, "longest_edge": MAX_PIXELS})


@pytest.mark.parametrize("size", SIZES, ids=[f"{h}x{w}" for h, w in SIZES])
def test_image_matches_reference(size, reference):
    rng = np.random.default_rng(size[0] * 7919 + size[1])
    image = Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8))
    ref = reference(image, return_tensors="np")
    ours = process_image(image, VisionConfig(min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS))
    assert list(ours.grid_thw) == ref["image_grid_thw"][0].tolist()
    assert ours.pixel_values.shape == ref["pixel_values"].shape
    assert np.array_equal(ours.pixel_values.numpy().view(np.uint32), ref["pixel_values"].view(np.uint32))  # bits
    assert ours.num_tokens == ours.pixel_values.shape[0] // 4


def test_multiple_images_concatenate_like_reference(reference):
    rng = np.random.default_rng(1)
    images = [Image.fromarray(rng.integers(0, 256, s, dtype=np.uint8)) for s in [(40, 90, 3), (300, 200, 3)]]
    ref = reference(images, return_tensors="np")
    cfg = VisionConfig(min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS)
    ours = [process_image(im, cfg) for im in images]
    assert np.array_equal(np.concatenate([o.pixel_values.numpy() for o in ours]), ref["pixel_values"])
    assert [list(o.grid_thw) for o in ours] == ref["image_grid_thw"].tolist()


def test_smart_resize_matches_reference_on_real_budgets():
    from transformers.models.glm4v.image_processing_pil_glm4v import (
        smart_resize as ref_resize,
    )

    for h, w in [(4000, 6000), (1080, 1920), (100, 100), (3, 500), (12345, 67), (28, 5599)]:
        for frames in (2, 3, 16, 600):
            kwargs = dict(min_pixels=12544, max_pixels=9633792)
            assert smart_resize(frames, h, w, **kwargs) == ref_resize(frames, h, w, **kwargs)
    # spec §5.1 worked examples: 6000×4000 → 6144 tokens, 1920×1080 → 2691, 100×100 → 16
    assert smart_resize(2, 4000, 6000, min_pixels=12544, max_pixels=9633792) == (1792, 2688)
    assert smart_resize(2, 1080, 1920, min_pixels=12544, max_pixels=9633792) == (1092, 1932)


def test_extreme_aspect_ratio_is_an_input_error():
    with pytest.raises(InputError, match="aspect ratio"):
        process_image(Image.new("RGB", (5000, 10)), VisionConfig())


def _encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def test_modes_become_rgb():
    rgba = Image.new("RGBA", (10, 8), (10, 20, 30, 0))
    assert load_image(_encode(rgba, "PNG")).getpixel((0, 0)) == (10, 20, 30)  # alpha dropped, like transformers
    palette = Image.new("P", (4, 4))
    palette.putpalette([0, 0, 0, 200, 100, 50] + [0] * 762)
    palette.putpixel((1, 1), 1)
    assert load_image(_encode(palette, "PNG")).getpixel((1, 1)) == (200, 100, 50)
    cmyk = Image.new("CMYK", (6, 6), (0, 255, 255, 0))  # pure red in CMYK
    assert load_image(_encode(cmyk, "JPEG", quality=100)).getpixel((3, 3))[0] > 240
    grey16 = Image.fromarray(np.full((5, 5), 32768, dtype=np.uint16))  # mid-grey, not clipped to white
    assert abs(load_image(_encode(grey16, "PNG")).getpixel((2, 2))[0] - 128) <= 1


def test_exif_orientation_is_applied():
    image = Image.new("RGB", (40, 20), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    loaded = load_image(_encode(image, "JPEG", exif=exif.tobytes()))
    assert loaded.size == (20, 40)


def test_arrays_and_tensors():
    import torch

    arr = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    assert np.array_equal(np.asarray(load_image(arr)), arr)
    assert np.array_equal(np.asarray(load_image(torch.from_numpy(arr).permute(2, 0, 1))), arr)
    assert np.array_equal(np.asarray(load_image(arr / 255.0)), arr)
    with pytest.raises(InputError):
        load_image(np.zeros((4, 4, 7), dtype=np.uint8))
