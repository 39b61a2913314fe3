"""Drawing primitives shared by the world's generators: palettes, shapes, textures, fonts, noise."""

from __future__ import annotations

import os
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

COLOURS = {
    "red": (215, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 215), "yellow": (235, 200, 30),
    "purple": (140, 60, 180), "orange": (240, 130, 30),
}
SHAPES = ("circle", "square", "triangle", "diamond")
BACKGROUNDS = ((250, 250, 250), (235, 235, 225), (225, 235, 245), (240, 230, 240))
FONT_FILES = ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSerif.ttf", "DejaVuSansMono.ttf")


@lru_cache(maxsize=64)
def font(index: int, size: int) -> ImageFont.FreeTypeFont:
    """DejaVu fonts from matplotlib's wheel (a dependency), so rendering is identical on every machine."""
    import matplotlib

    path = os.path.join(os.path.dirname(matplotlib.__file__), "mpl-data", "fonts", "ttf", FONT_FILES[index % len(FONT_FILES)])
    return ImageFont.truetype(path, size)


def canvas(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """A plain or gradient background with faint sensor-like noise (the noise also makes every sample's pixels
    unique, so no two splits ever share an image even when the scene itself repeats)."""
    base = np.array(BACKGROUNDS[rng.integers(len(BACKGROUNDS))], dtype=np.float32)
    img = np.broadcast_to(base, (height, width, 3)).copy()
    if rng.integers(2):
        img *= np.linspace(0.9, 1.0, height, dtype=np.float32)[:, None, None]
    img += rng.normal(0, rng.uniform(1.5, 6), img.shape).astype(np.float32)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def shape_polygon(shape: str, box: tuple[float, float, float, float]) -> list[tuple[float, float]] | None:
    x1, y1, x2, y2 = box
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    if shape == "triangle":
        return [(cx, y1), (x2, y2), (x1, y2)]
    if shape == "diamond":
        return [(cx, y1), (x2, cy), (cx, y2), (x1, cy)]
    return None


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, box, colour: tuple[int, int, int], outline: bool = False) -> None:
    edge = tuple(int(c * 0.6) for c in colour) if outline else None
    if shape == "circle":
        draw.ellipse(box, fill=colour, outline=edge, width=2)
    elif shape == "square":
        draw.rectangle(box, fill=colour, outline=edge, width=2)
    else:
        draw.polygon(shape_polygon(shape, box), fill=colour, outline=edge)


def to_1000(box, width: int, height: int) -> list[int]:
    """Pixel box -> GLM-V's thousandths of the image size (0..999)."""
    x1, y1, x2, y2 = box
    return [min(999, round(x1 / width * 1000)), min(999, round(y1 / height * 1000)),
            min(999, round(x2 / width * 1000)), min(999, round(y2 / height * 1000))]


def boxed(text: str) -> str:
    return f"<|begin_of_box|>{text}<|end_of_box|>"
