"""Richer scenes: objects with a size class and a fill texture on patterned backgrounds, allowed to overlap.
Attribute questions, harder counting (up to 10 objects, filtered by colour, shape or texture) and grounding
of every object of a colour (several boxes).

The plain scenes of scenes.py stay as they are (a nano model's first curriculum); these add the variety a
model needs to stop relying on "one flat shape on a blank page".
"""

from __future__ import annotations

import numpy as np
from PIL import ImageDraw

from glmv.world import scoring
from glmv.world.core import register
from glmv.world.draw import (
    COLOURS,
    SHAPES,
    TEXTURES,
    boxed,
    canvas,
    draw_textured,
    to_1000,
)
from glmv.world.style import Style, reframe

SIZES = (112, 140, 168, 196)
SIDE = {"small": (0.13, 0.17), "large": (0.27, 0.33)}  # fractions of the short image side; never ambiguous
PLURAL = {"circle": "circles", "square": "squares", "triangle": "triangles", "diamond": "diamonds"}


def backdrop(rng: np.random.Generator, style: Style, width: int, height: int):
    """canvas() plus, two times in three, a faint grid or diagonal hatching, so the background is not flat."""
    img = canvas(rng, style, width, height)
    lines, d = int(rng.integers(3)), ImageDraw.Draw(img)
    tone = tuple(int(c) for c in rng.integers(195, 225, 3))
    step = int(rng.integers(10, 18))
    if lines == 1:
        for x in range(step // 2, width, step):
            d.line((x, 0, x, height), fill=tone)
        for y in range(step // 2, height, step):
            d.line((0, y, width, y), fill=tone)
    elif lines == 2:
        for x in range(-height, width, step):
            d.line((x, 0, x + height, height), fill=tone)
    return img


def _overlap_ok(box, colour: str, placed: list[tuple[tuple, str]], overlap: bool) -> bool:
    """Without overlap: a 3 px gap. With it: different colours may cover at most a quarter of the smaller
    object (each stays countable); same colours never touch (they would merge into one blob)."""
    for other, c in placed:
        ix = min(box[2], other[2]) - max(box[0], other[0])
        iy = min(box[3], other[3]) - max(box[1], other[1])
        if not overlap or c == colour:
            if ix > -3 and iy > -3:
                return False
        elif ix > 0 and iy > 0:
            smaller = min((box[2] - box[0]) * (box[3] - box[1]), (other[2] - other[0]) * (other[3] - other[1]))
            if ix * iy > 0.25 * smaller:
                return False
    return True


def rich_scene(rng: np.random.Generator, style: Style, n: int, distinct: bool, overlap: bool):
    """Up to n objects (one that finds no free place after 100 tries is left out, so the truth is always what
    was drawn); returns (image, objects) with colour, shape, size, texture and 0-1000 box, in drawing order.
    Of the style's look it takes the background and the aspect ratio (its objects have their own sizes and
    fill textures)."""
    w, h = reframe(style.look, int(rng.choice(SIZES)), int(rng.choice(SIZES)))
    img = backdrop(rng, style, w, h)
    pairs = [(c, s) for c in COLOURS for s in SHAPES]
    kinds = [pairs[i] for i in rng.permutation(len(pairs))[:n]] if distinct else \
        [pairs[i] for i in rng.integers(len(pairs), size=n)]
    objects, placed = [], []
    for colour, shape in kinds:
        size, texture = ("small", "large")[rng.integers(2)], TEXTURES[rng.integers(len(TEXTURES))]
        for _ in range(100):
            side = rng.uniform(*SIDE[size]) * min(w, h)
            x1, y1 = rng.uniform(2, w - side - 2), rng.uniform(2, h - side - 2)
            box = (x1, y1, x1 + side, y1 + side)
            if _overlap_ok(box, colour, placed, overlap):
                break
        else:
            continue
        placed.append((box, colour))
        draw_textured(img, shape, box, COLOURS[colour], texture)
        objects.append({"colour": colour, "shape": shape, "size": size, "texture": texture,
                        "box": to_1000(box, w, h)})
    return img, objects


@register("attribute", "scenes", lambda out, s: scoring.text_match(out, s.truth["answer"]))
def attribute(rng, style):
    """The size or texture of a named object, or which of two is larger."""
    img, objects = rich_scene(rng, style, int(rng.integers(2, 5)), distinct=True, overlap=False)
    a = objects[rng.integers(len(objects))]
    kind = int(rng.integers(3))
    others = [o for o in objects if o["size"] != a["size"]]
    if kind == 2 and others:
        b = others[rng.integers(len(others))]
        first, second = (a, b) if rng.integers(2) else (b, a)
        winner = a if a["size"] == "large" else b
        prompt = style.ask("attribute_larger", first=f"{first['colour']} {first['shape']}",
                           second=f"{second['colour']} {second['shape']}")
        answer = f"{winner['colour']} {winner['shape']}"
    else:
        attr = "size" if kind == 0 else "texture"
        prompt, answer = style.ask(f"attribute_{attr}", object=f"{a['colour']} {a['shape']}"), a[attr]
    return dict(image=img, prompt=prompt, target=boxed(answer), truth={"answer": answer, "objects": objects})


def _count_reward(out, s):
    value = scoring.number(out)
    return 0.0 if value is None else max(0.0, 1 - abs(value - s.truth["count"]) / 3)


@register("count_hard", "scenes", lambda out, s: scoring.numeric(out, s.truth["count"]), _count_reward)
def count_hard(rng, style):
    """4-10 textured, overlapping objects; count all of them or those of one colour, shape or texture."""
    img, objects = rich_scene(rng, style, int(rng.integers(4, 11)), distinct=False, overlap=True)
    o = objects[rng.integers(len(objects))]
    by = ("all", "colour", "shape", "texture")[rng.integers(4)]
    if by == "all":
        prompt, n = style.ask("count"), len(objects)
    else:
        n = sum(x[by] == o[by] for x in objects)
        noun = f"{PLURAL[o['shape']]}" if by == "shape" else f"{o[by]} objects"
        prompt = style.ask("count_of", noun=noun)
    return dict(image=img, prompt=prompt, target=boxed(str(n)), truth={"count": n, "objects": objects})


@register("ground_all", "scenes", lambda out, s: scoring.boxes_f1(out, s.truth["boxes"]))
def ground_all(rng, style):
    """Every object of one colour, as a list of boxes ordered left to right."""
    img, objects = rich_scene(rng, style, int(rng.integers(3, 8)), distinct=False, overlap=True)
    colour = objects[rng.integers(len(objects))]["colour"]
    boxes = sorted(o["box"] for o in objects if o["colour"] == colour)
    return dict(image=img, prompt=style.ask("ground_all", colour=colour), target=boxed(str(boxes).replace(" ", "")),
                truth={"boxes": boxes, "objects": objects})
