"""Drawing primitives shared by the world's generators: palettes, shapes, textures, fonts, noise, and the parts of
a sample's look (glmv.world.style) that are drawn: backgrounds, turned, outlined and anti-aliased shapes."""

from __future__ import annotations

import os
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from glmv.errors import ConfigError
from glmv.world.style import Style

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


def canvas(rng: np.random.Generator, style: Style, width: int, height: int) -> Image.Image:
    """A plain or gradient background with faint sensor-like noise (the noise also makes every sample's pixels
    unique, so no two splits ever share an image even when the scene itself repeats), then the style's
    background layer, if any."""
    base = np.array(BACKGROUNDS[rng.integers(len(BACKGROUNDS))], dtype=np.float32)
    if rng.integers(2):
        base = base * np.linspace(0.9, 1.0, height, dtype=np.float32)[:, None, None]
    img = noise(rng, height, width) * np.float32(rng.uniform(1.5, 6)) + base
    if style.look.background != "plain":
        img = LAYERS[style.look.background](style.rng, img)
    return Image.fromarray(np.clip(img, 0, 255, out=img).astype(np.uint8))


def _gradient(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """Up to 70 % of a second pale colour blended in along a random direction (the plain canvas only darkens
    by 10 % top to bottom)."""
    h, w = img.shape[:2]
    angle = rng.uniform(0, 2 * np.pi)
    y, x = np.ogrid[0:h, 0:w]
    ramp = (x * np.cos(angle) + y * np.sin(angle)).astype(np.float32)
    ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1.0) * np.float32(0.7)
    other = rng.integers(170, 256, 3).astype(np.float32)
    return img + ramp[..., None] * (other - img)


def _texture(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """A faint regular pattern: diagonal stripes, checks or dots with a 6-15 px period, 20-45 grey levels
    darker than the paper."""
    h, w = img.shape[:2]
    period, kind = int(rng.integers(6, 16)), int(rng.integers(3))
    y, x = np.ogrid[0:h, 0:w]
    if kind == 0:
        mark = (x + y) % period < period // 3
    elif kind == 1:
        mark = (x // period + y // period) % 2 == 1
    else:
        mark = (x % period < 2) & (y % period < 2)
    return img - mark[..., None] * np.float32(rng.uniform(20, 45))


def _noisy(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """Heavy coloured sensor noise, sigma 12-25 grey levels (the plain canvas has 1.5-6)."""
    h, w = img.shape[:2]
    return img + noise(rng, h, w) * np.float32(rng.uniform(12, 25))


LAYERS = {"gradient": _gradient, "texture": _texture, "noise": _noisy}  # the non-plain backgrounds of a Look


Box = tuple[float, float, float, float]


def shape_polygon(shape: str, box: Box, angle: float = 0.0) -> list[tuple[float, float]]:
    """The corners of a triangle, diamond or square in its box, turned by `angle` degrees about the box centre
    and shrunk just enough to stay inside the box."""
    x1, y1, x2, y2 = box
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    if shape == "triangle":
        corners = [(cx, y1), (x2, y2), (x1, y2)]
    elif shape == "diamond":
        corners = [(cx, y1), (x2, cy), (cx, y2), (x1, cy)]
    else:
        corners = [(x1, y1), (x2, y1), (x2, y2), (x1, y2)]
    if not angle:
        return corners
    cos, sin = np.cos(np.radians(angle)), np.sin(np.radians(angle))
    turned = [((x - cx) * cos - (y - cy) * sin, (x - cx) * sin + (y - cy) * cos) for x, y in corners]
    half_w, half_h = max(abs(x) for x, _ in turned), max(abs(y) for _, y in turned)
    k = min(1.0, (x2 - x1) / 2 / half_w, (y2 - y1) / 2 / half_h)
    return [(cx + x * k, cy + y * k) for x, y in turned]


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, box: Box, colour: tuple[int, int, int] | int,
               outline: bool = False, angle: float = 0.0, widths: tuple[int, int] = (2, 1)) -> Box:
    """A filled shape in its box, turned by `angle` degrees (circles look the same at any angle); `colour` is an
    int when drawing into a mask. `widths`: the outline's width on circles and unturned squares, and on the
    other polygons. Returns the box of what was drawn."""
    edge = tuple(int(c * 0.6) for c in colour) if outline else None
    if shape == "circle":
        draw.ellipse(box, fill=colour, outline=edge, width=widths[0])
    elif shape == "square" and not angle:
        draw.rectangle(box, fill=colour, outline=edge, width=widths[0])
    else:
        points = shape_polygon(shape, box, angle)
        draw.polygon(points, fill=colour, outline=edge, width=widths[1])
        if angle:  # unturned, every shape touches all four sides of its box
            xs, ys = [x for x, _ in points], [y for _, y in points]
            return min(xs), min(ys), max(xs), max(ys)
    return box


SUPERSAMPLE = 4


class Painter:
    """Draws shapes into one image in a sample's look. One ImageDraw serves every shape: making one costs about
    as much as drawing a small shape."""

    def __init__(self, img: Image.Image, style: Style):
        self.img, self.draw = img, ImageDraw.Draw(img)
        self.outline, self.antialias = style.look.outline, style.look.antialias
        self.widths = (3, 3) if self.outline == "bold" else (2, 1)

    def shape(self, shape: str, box: Box, colour: tuple[int, int, int], outline: bool = False,
              angle: float = 0.0) -> Box:
        """draw_shape in the look: `outline` (the generator's own choice) is kept, dropped or made bold as the
        look says, and an anti-aliased look draws at 4x and averages down. Returns the box of what was drawn."""
        if self.outline != "mixed":
            outline = self.outline == "bold"
        if not self.antialias:
            return draw_shape(self.draw, shape, box, colour, outline, angle, self.widths)
        widths = (self.widths[0] * SUPERSAMPLE, self.widths[1] * SUPERSAMPLE)
        return _supersampled(self.img, box, lambda d, big: draw_shape(d, shape, big, colour, outline, angle, widths))


def _supersampled(img: Image.Image, box: Box, draw_fn) -> Box:
    """Run draw_fn(draw, box) on a 4x nearest-neighbour copy of the box's surroundings and average it back down:
    edges come out anti-aliased, and every pixel the drawing leaves alone comes back exactly as it was."""
    n = SUPERSAMPLE
    x0, y0 = max(0, int(box[0]) - 3), max(0, int(box[1]) - 3)
    x1, y1 = min(img.width, int(box[2]) + 4), min(img.height, int(box[3]) + 4)
    big = img.crop((x0, y0, x1, y1)).resize(((x1 - x0) * n, (y1 - y0) * n), Image.Resampling.NEAREST)
    drawn = draw_fn(ImageDraw.Draw(big), ((box[0] - x0) * n, (box[1] - y0) * n, (box[2] - x0) * n, (box[3] - y0) * n))
    img.paste(big.reduce(n), (x0, y0))
    return drawn[0] / n + x0, drawn[1] / n + y0, drawn[2] / n + x0, drawn[3] / n + y0


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
