"""Drawing primitives shared by the world's generators: palettes, shapes, textures, fonts, noise."""

from __future__ import annotations

import os
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from glmv.errors import ConfigError

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
    try:
        import matplotlib
    except ImportError:
        raise ConfigError("glmv.world draws text with the DejaVu fonts shipped in matplotlib: "
                          "pip install matplotlib") from None

    path = os.path.join(os.path.dirname(matplotlib.__file__), "mpl-data", "fonts", "ttf", FONT_FILES[index % len(FONT_FILES)])
    return ImageFont.truetype(path, size)


NOISE = 256  # side of the noise bank


@lru_cache(maxsize=1)
def _noise_bank() -> np.ndarray:
    bank = np.random.default_rng(0).standard_normal((NOISE, NOISE, 3), dtype=np.float32)
    bank.setflags(write=False)  # noise() hands out views of it: nobody may write into them
    return bank


def noise(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Standard normal noise, (height, width, 3) float32: a random window of one fixed bank (tiled for images
    larger than it). Drawing fresh Gaussian noise for every image took most of a sample's time."""
    bank = _noise_bank()
    if height > NOISE or width > NOISE:
        bank = np.tile(bank, (height // NOISE + 1, width // NOISE + 1, 1))
    y, x = int(rng.integers(bank.shape[0] - height + 1)), int(rng.integers(bank.shape[1] - width + 1))
    return bank[y:y + height, x:x + width]


def canvas(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """A plain or gradient background with faint sensor-like noise (the noise also makes every sample's pixels
    unique, so no two splits ever share an image even when the scene itself repeats)."""
    base = np.array(BACKGROUNDS[rng.integers(len(BACKGROUNDS))], dtype=np.float32)
    if rng.integers(2):
        base = base * np.linspace(0.9, 1.0, height, dtype=np.float32)[:, None, None]
    img = noise(rng, height, width) * np.float32(rng.uniform(1.5, 6)) + base
    return Image.fromarray(np.clip(img, 0, 255, out=img).astype(np.uint8))


def shape_polygon(shape: str, box: tuple[float, float, float, float]) -> list[tuple[float, float]] | None:
    x1, y1, x2, y2 = box
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    if shape == "triangle":
        return [(cx, y1), (x2, y2), (x1, y2)]
    if shape == "diamond":
        return [(cx, y1), (x2, cy), (cx, y2), (x1, cy)]
    return None


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, box, colour: tuple[int, int, int] | int,
               outline: bool = False) -> None:
    """A filled shape in its box; `colour` is an int when drawing into a mask."""
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


TEXTURES = ("plain", "striped", "dotted")


def _pattern(texture: str, colour: tuple[int, int, int], width: int, height: int) -> np.ndarray:
    """A width x height tile of the colour with light diagonal stripes (period 6 px) or a dot grid (5 px), so
    the texture stays readable on the smallest shapes of a 112 px image."""
    y, x = np.mgrid[0:height, 0:width]
    light = (x + y) % 6 < 2 if texture == "striped" else (x % 5 < 2) & (y % 5 < 2)
    tile = np.empty((height, width, 3), dtype=np.uint8)
    tile[:] = colour
    tile[light] = [c + (255 - c) * 3 // 4 for c in colour]  # three quarters of the way to white
    return tile


def draw_textured(img: Image.Image, shape: str, box, colour: tuple[int, int, int], texture: str) -> None:
    """draw_shape with a fill texture: the shape is drawn into a mask and a patterned tile pasted through it."""
    if texture == "plain":
        draw_shape(ImageDraw.Draw(img), shape, box, colour)
        return
    x0, y0 = int(box[0]), int(box[1])
    w, h = int(box[2]) - x0 + 2, int(box[3]) - y0 + 2
    mask = Image.new("L", (w, h), 0)
    draw_shape(ImageDraw.Draw(mask), shape, (box[0] - x0, box[1] - y0, box[2] - x0, box[3] - y0), 255)
    img.paste(Image.fromarray(_pattern(texture, colour, w, h)), (x0, y0), mask)
