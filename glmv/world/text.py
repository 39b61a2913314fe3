"""Rendered text in several fonts, sizes, colours and small rotations, with noise: OCR of words and lines."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from glmv.world import scoring
from glmv.world.core import register
from glmv.world.draw import FONT_FILES, boxed, canvas, font, noise
from glmv.world.style import Style

WORDS = """apple river stone cloud green house light table water paper music night garden window bread
chair dream field glass heart honey lemon money ocean plant queen radio smile storm tiger train truck voice
watch world youth zebra amber badge cabin delta eagle fable giant hotel index jelly koala laser maple noble
olive piano quiet robot salad tulip umbra vivid wagon xenon yacht zesty acorn blaze candy dance ember frost
grape haven ivory joker karma lunar mango nylon orbit pearl quest raven solar toast unity velvet waltz
yield zone bike cake door fish gold hill iron jazz kite lamp moon nest opal park quiz rose star tree vase
wolf yarn blue code data echo film gate hand jump king leaf mind note open path ring ship time user view
wave word yes no red box cat dog sun car map cup key pen hat bag egg ice jam kit log net owl pig rug
sky toy van web""".split()


def render_text(rng: np.random.Generator, style: Style, text: str) -> Image.Image:
    """The text in one font and ink, rotated by up to 8 degrees about its centre, placed so that the rotated
    text lies wholly inside the image (a clipped letter would make the target unreadable)."""
    w, h = int(rng.choice((140, 168, 196))), int(rng.choice((56, 84, 112)))
    img = canvas(rng, style, w, h)
    size, face = int(rng.integers(16, 26)), int(rng.integers(len(FONT_FILES)))
    angle = float(rng.uniform(-8, 8))
    sin, cos = abs(np.sin(np.radians(angle))), np.cos(np.radians(angle))
    layer = Image.new("L", (w, h), 0)
    d = ImageDraw.Draw(layer)
    while True:  # shrink long lines until the rotated ink box fits with a 2 px margin
        left, top, right, bottom = d.textbbox((0, 0), text, font=font(face, size))
        tw, th = right - left, bottom - top
        half_w, half_h = (tw * cos + th * sin) / 2, (tw * sin + th * cos) / 2
        if (half_w + 2 <= w / 2 and half_h + 2 <= h / 2) or size <= 8:
            break
        size -= 1
    cx = rng.uniform(half_w + 2, max(half_w + 2, w - half_w - 2))
    cy = rng.uniform(half_h + 2, max(half_h + 2, h - half_h - 2))
    d.text((cx - (left + right) / 2, cy - (top + bottom) / 2), text, fill=255, font=font(face, size))
    layer = layer.rotate(angle, resample=Image.Resampling.BICUBIC, center=(cx, cy))
    ink = tuple(int(c) for c in rng.integers(0, 90, 3))
    img.paste(Image.new("RGB", (w, h), ink), (0, 0), layer)
    arr = np.asarray(img).astype(np.float32) + noise(rng, h, w) * np.float32(rng.uniform(0, 10))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def _word(rng) -> str:
    word = WORDS[rng.integers(len(WORDS))]
    style = rng.integers(3)
    return word.upper() if style == 1 else word.capitalize() if style == 2 else word


@register("ocr", "text", lambda out, s: scoring.exact(out, s.truth["text"]),
          lambda out, s: scoring.char_similarity(out, s.truth["text"]))
def ocr(rng, style):
    word = _word(rng)
    return dict(image=render_text(rng, style, word), prompt=style.ask("ocr"), target=boxed(word),
                truth={"text": word})


@register("ocr_line", "text", lambda out, s: scoring.exact(out, s.truth["text"]),
          lambda out, s: scoring.char_similarity(out, s.truth["text"]))
def ocr_line(rng, style):
    line = " ".join(_word(rng) for _ in range(int(rng.integers(2, 4))))
    return dict(image=render_text(rng, style, line), prompt=style.ask("ocr_line"), target=boxed(line),
                truth={"text": line})
