"""Dense targets for the vision stage, computed from the world's exact ground truth.

For every image token the decoder will read (one per 2x2 patch window, row-major) the targets say what covers
it: the share of its area that is background or each colour, the share each shape and each fill texture covers
(summing to the share of objects), and how many object centres fall in it (their sum over an image is the
object count). Text images add which letters the image
contains. All of it comes from what the generator drew (colours, shapes, textures and boxes of every object,
in drawing order, so later objects cover earlier ones; the text of an OCR image), never from a model.
"""

from __future__ import annotations

import string
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from glmv.world.draw import COLOURS, SHAPES, TEXTURES, draw_shape

COLOUR_CLASSES = ("background", *COLOURS)
SHAPE_CLASSES = SHAPES
TEXTURE_CLASSES = TEXTURES
LETTERS = string.ascii_letters  # case matters: OCR answers are exact
SUB = 8  # each token is rasterised as SUB x SUB cells: area shares in steps of 1/64
# Tasks whose truth lists everything drawn: every object (scenes), or the only thing drawn, its text.
OBJECT_TASKS = ("caption", "dialogue", "attribute", "count_hard", "ground_all")
TEXT_TASKS = ("ocr", "ocr_line")
VISION_TASKS = OBJECT_TASKS + TEXT_TASKS


@dataclass
class ImageTargets:
    colour: torch.Tensor  # [T, len(COLOUR_CLASSES)] share of each token's area (background first)
    shape: torch.Tensor  # [T, len(SHAPE_CLASSES)] share of each token's area; all 0 on background
    texture: torch.Tensor  # [T, len(TEXTURE_CLASSES)]
    centres: torch.Tensor  # [T] object centres inside each token
    letters: torch.Tensor  # [len(LETTERS)] 1 for each letter in the image's text

    @property
    def count(self) -> int:
        return int(self.centres.sum())


def coverage(objects: list[dict], rows: int, cols: int) -> torch.Tensor:
    """[rows * cols, 1 + len(objects)]: the share of each token covered by nothing (column 0) or by each
    object, drawn in order into a label map with the shapes' own outlines (a circle does not fill its box)."""
    label = Image.new("L", (cols * SUB, rows * SUB), 0)
    draw = ImageDraw.Draw(label)
    for i, o in enumerate(objects):
        x1, y1, x2, y2 = (v / 1000 for v in o["box"])
        draw_shape(draw, o["shape"], (x1 * cols * SUB, y1 * rows * SUB, x2 * cols * SUB, y2 * rows * SUB), i + 1)
    ids = torch.from_numpy(np.asarray(label, dtype=np.int64))
    share = F.one_hot(ids, len(objects) + 1).float().view(rows, SUB, cols, SUB, -1).mean((1, 3))
    return share.reshape(rows * cols, -1)


def _classes(objects: list[dict], key: str, classes: tuple[str, ...], default: str | None = None) -> torch.Tensor:
    """[1 + len(objects), len(classes)]: row i + 1 object i's class one-hot; row 0, the background, is the first
    class when it is one, else all zero."""
    rows = [F.one_hot(torch.tensor(classes.index(o.get(key, default))), len(classes)).float() for o in objects]
    background = F.one_hot(torch.tensor(0), len(classes)).float() if classes[0] == "background" \
        else torch.zeros(len(classes))
    return torch.stack([background, *rows])


def image_targets(truth: dict, grid_thw: tuple[int, int, int], merge: int = 2) -> ImageTargets:
    """The targets of one image from its sample's truth (`objects` with 0-1000 boxes, or `text`); grid_thw is
    the processed image's patch grid."""
    _, h, w = grid_thw
    rows, cols = h // merge, w // merge
    objects = truth.get("objects", [])
    share = coverage(objects, rows, cols)
    centres = torch.zeros(rows * cols)
    for o in objects:
        x1, y1, x2, y2 = o["box"]
        r, c = min(rows - 1, int((y1 + y2) / 2000 * rows)), min(cols - 1, int((x1 + x2) / 2000 * cols))
        centres[r * cols + c] += 1
    letters = torch.zeros(len(LETTERS))
    for ch in set(truth.get("text", "")) & set(LETTERS):
        letters[LETTERS.index(ch)] = 1
    return ImageTargets(
        colour=share @ _classes(objects, "colour", COLOUR_CLASSES),
        shape=share @ _classes(objects, "shape", SHAPE_CLASSES),
        texture=share @ _classes(objects, "texture", TEXTURE_CLASSES, default="plain"),  # plain scenes: solid fills
        centres=centres, letters=letters)


def collate_targets(targets: list[ImageTargets]) -> dict[str, torch.Tensor]:
    """Token targets concatenated in the images' order (as the vision tower outputs them), image targets
    stacked, and how many tokens each image has."""
    return {
        "colour": torch.cat([t.colour for t in targets]), "shape": torch.cat([t.shape for t in targets]),
        "texture": torch.cat([t.texture for t in targets]), "centres": torch.cat([t.centres for t in targets]),
        "letters": torch.stack([t.letters for t in targets]),
        "tokens": torch.tensor([len(t.centres) for t in targets]),
    }
