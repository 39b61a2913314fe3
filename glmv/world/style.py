"""Variety: the look a sample is drawn in and the wording of its question.

A model trained on one renderer and one phrasing per task learns those, not the task. A `Style` names a
renderer variant (`Look`: background, object size, rotation, outline, anti-aliasing, aspect ratio, blur, JPEG)
and a wording, which the generators follow. The plain style (the original look, wording 0, media before the
question) is what train / validation / test give unless a caller asks for variety, so existing samples stay
byte-identical. Choosing a style and drawing a look take their random draws from seed streams of their own
(glmv.world.core), never from the stream that decides a sample's content, so the plain path consumes exactly
the draws it always did.

The `heldout` split asks every question in its held-out wording and draws in the held-out look (textured
backgrounds seen through blur); `varied_style`, which the other splits use, never picks either.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field, replace

import numpy as np
from PIL import Image, ImageFilter

from glmv.world.wordings import CLOSERS, HELDOUT_WORDING, OPENERS, PLACES, WORDINGS

# Every renderer axis and its variants; the first of each is the plain look.
LOOKS: dict[str, tuple] = {
    "background": ("plain", "gradient", "texture", "noise"),
    "scale": (1.0, 0.8, 1.2),  # object size factor (scenes of plain shapes)
    "rotation": (0.0, 15.0),  # most degrees an object is turned (plain shapes: scenes, videos, patterns)
    "outline": ("mixed", "none", "bold"),  # mixed: some objects get a thin edge, as always
    "antialias": (False, True),  # shapes drawn at 4x and averaged down
    "aspect": (1.0, 1.6, 0.6),  # width / height of scene images, the short side kept
    "blur": (0.0, 0.6, 1.0),  # Gaussian radius in pixels, on the finished image
    "jpeg": (0, 70, 35),  # JPEG quality the finished image is saved at; 0: not at all
}


@dataclass(frozen=True)
class Look:
    background: str
    scale: float
    rotation: float
    outline: str
    antialias: bool
    aspect: float
    blur: float
    jpeg: int


PLAIN = Look(**{axis: variants[0] for axis, variants in LOOKS.items()})
HELDOUT_LOOK = replace(PLAIN, background="texture", blur=1.0)


def held_out(look: Look) -> bool:
    """The held-out renderer is a combination: textures and blur are both seen in training, never together, so
    the held-out split asks whether a model combines what it learned rather than whether it saw everything."""
    return look.background == HELDOUT_LOOK.background and look.blur > 0


@dataclass(frozen=True)
class Style:
    look: Look = PLAIN
    wording: int = 0  # index into each question's wordings (glmv.world.wordings)
    text_first: bool = False  # the question before the image / video in the user turn
    # Task-independent framing (glmv.world.wordings): a sentence before, one after, and the phrase that says where
    # to look put in place of the wording's own ("": as written).
    opener: str = ""
    closer: str = ""
    place: str = ""
    # What the look draws at random; core.sample_in_style sets it (None: a plain look, which draws nothing).
    rng: np.random.Generator | None = field(default=None, compare=False, repr=False)

    def ask(self, key: str, /, **slots) -> str:
        """The question `key` (glmv.world.wordings) in this style's wording and framing, its slots filled in
        (the place phrase is swapped in the template, never in a slot's value)."""
        template = WORDINGS[key][self.wording]
        if self.place:
            template = _PLACE_PATTERN.sub(self.place, template)
        return self.opener + template.format(**slots) + self.closer

    def turn(self) -> float:
        """An angle for one object, in degrees (0 when the look turns nothing)."""
        limit = self.look.rotation
        return float(self.rng.uniform(-limit, limit)) if limit else 0.0


PLAIN_STYLE = Style()
_PLACE_PATTERN = re.compile("|".join(re.escape(p) for p in sorted(PLACES[1:], key=len, reverse=True)))


HELDOUT_STYLE = Style(HELDOUT_LOOK, HELDOUT_WORDING)


def varied_style(rng: np.random.Generator) -> Style:
    """A random look (each axis uniform over its variants, the held-out combination excluded), a random
    wording other than the held-out one (the last), a random question position and a random framing."""
    while True:
        look = Look(**{axis: variants[int(rng.integers(len(variants)))] for axis, variants in LOOKS.items()})
        if not held_out(look):
            break
    wording, text_first = int(rng.integers(HELDOUT_WORDING)), bool(rng.integers(2))
    opener, closer, place = (str(options[int(rng.integers(len(options)))]) for options in (OPENERS, CLOSERS, PLACES))
    return Style(look, wording, text_first, opener, closer, place)


def reframe(look: Look, width: int, height: int) -> tuple[int, int]:
    """A scene's image size in the look's aspect ratio, keeping the short side (the world's images are at least
    112 px on each side)."""
    if look.aspect == 1.0:
        return width, height
    side = min(width, height)
    return (round(side * look.aspect), side) if look.aspect > 1 else (side, round(side / look.aspect))


def develop(img: Image.Image, look: Look) -> Image.Image:
    """What happens to a finished image on its way to the model: blur, then lossy JPEG."""
    if look.blur:
        img = img.filter(ImageFilter.GaussianBlur(look.blur))
    if look.jpeg:
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=look.jpeg)
        img = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    return img


def develop_frames(frames: list[Image.Image], look: Look) -> list[Image.Image]:
    """develop() for a video. A frame equal to the one before it (nothing happened) shares that frame's result
    instead of being developed again: most frames of the world's videos repeat, and blur is the slow part."""
    out: list[Image.Image] = []
    previous = None
    for frame in frames:
        raw = frame.tobytes()
        out.append(out[-1] if raw == previous else develop(frame, look))
        previous = raw
    return out
