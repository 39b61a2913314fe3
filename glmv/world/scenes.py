"""Scenes of coloured shapes: colour and shape questions, counting, grounding, pointing, captions, relations."""

from __future__ import annotations

import re

import numpy as np

from glmv.world import scoring
from glmv.world.core import register
from glmv.world.draw import COLOURS, SHAPES, Painter, boxed, canvas, to_1000
from glmv.world.style import Style, reframe

SIZES = (112, 140, 168)


def scene(rng: np.random.Generator, style: Style, n: int, distinct: bool = True, size_range=(0.22, 0.36)):
    """An image with n non-overlapping shapes in the style's look; returns (image, objects) with 0-1000 boxes
    of what was drawn."""
    w, h = reframe(style.look, int(rng.choice(SIZES)), int(rng.choice(SIZES)))
    img = canvas(rng, style, w, h)
    paint = Painter(img, style)
    pairs = [(c, s) for c in COLOURS for s in SHAPES]
    kinds = [pairs[i] for i in rng.permutation(len(pairs))[:n]] if distinct else \
        [(list(COLOURS)[rng.integers(len(COLOURS))], SHAPES[rng.integers(len(SHAPES))]) for _ in range(n)]
    objects, placed = [], []
    for colour, shape in kinds:
        for tries in range(200):  # rejection sampling: no overlaps, a margin from the border
            # A look's size factor eases back toward 1 with every failed try, so crowded scenes still fit.
            scale = 1 + (style.look.scale - 1) * (1 - tries / 200)
            side = rng.uniform(*size_range) * min(w, h) * scale
            x1, y1 = rng.uniform(2, w - side - 2), rng.uniform(2, h - side - 2)
            box = (x1, y1, x1 + side, y1 + side)
            if all(box[2] + 3 < b[0] or b[2] + 3 < box[0] or box[3] + 3 < b[1] or b[3] + 3 < box[1] for b in placed):
                break
        placed.append(box)
        drawn = paint.shape(shape, box, COLOURS[colour], bool(rng.integers(2)), style.turn())
        objects.append({"colour": colour, "shape": shape, "box": to_1000(drawn, w, h)})
    return img, objects


def name(o: dict) -> str:
    return f"{o['colour']} {o['shape']}"


@register("color", "scenes", lambda out, s: scoring.text_match(out, s.truth["answer"]))
def color(rng, style):
    img, [o] = scene(rng, style, 1)
    return dict(image=img, prompt=style.ask("color", shape=o["shape"]), target=boxed(o["colour"]),
                truth={"answer": o["colour"]})


@register("shape", "scenes", lambda out, s: scoring.text_match(out, s.truth["answer"]))
def shape(rng, style):
    img, [o] = scene(rng, style, 1)
    return dict(image=img, prompt=style.ask("shape"), target=boxed(o["shape"]), truth={"answer": o["shape"]})


def _count_reward(out, s):
    value = scoring.number(out)
    return 0.0 if value is None else max(0.0, 1 - abs(value - s.truth["count"]) / 3)


@register("count", "scenes", lambda out, s: scoring.numeric(out, s.truth["count"]), _count_reward)
def count(rng, style):
    n = int(rng.integers(1, 7))
    img, objects = scene(rng, style, n, distinct=False, size_range=(0.14, 0.22))
    return dict(image=img, prompt=style.ask("count"), target=boxed(str(n)), truth={"count": n})


def _ground_score(out, s):
    return float(scoring.box_iou(out, s.truth["box"]) >= 0.5)


@register("ground", "scenes", _ground_score, lambda out, s: scoring.box_reward(out, s.truth["box"]))
def ground(rng, style):
    img, objects = scene(rng, style, int(rng.integers(1, 4)))
    o = objects[rng.integers(len(objects))]
    return dict(image=img, prompt=style.ask("ground", object=name(o)), target=boxed(str(o["box"]).replace(" ", "")),
                truth={"box": o["box"]})


def _point_score(out, s):
    nums = re.findall(r"-?\d+(?:\.\d+)?", scoring.answer_text(out))
    if len(nums) < 2:
        return 0.0
    x, y = float(nums[0]), float(nums[1])
    x1, y1, x2, y2 = s.truth["box"]
    return float(x1 <= x <= x2 and y1 <= y <= y2)


@register("point", "scenes", _point_score)
def point(rng, style):
    img, objects = scene(rng, style, int(rng.integers(1, 4)))
    o = objects[rng.integers(len(objects))]
    x1, y1, x2, y2 = o["box"]
    centre = [(x1 + x2) // 2, (y1 + y2) // 2]
    return dict(image=img, prompt=style.ask("point", object=name(o)), target=boxed(str(centre).replace(" ", "")),
                truth={"box": o["box"], "point": centre})


def caption_text(objects: list[dict]) -> str:
    ordered = sorted(objects, key=lambda o: o["box"][0])
    parts = [f"{'an' if o['colour'][0] in 'aeiou' else 'a'} {name(o)}" for o in ordered]
    listing = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    return listing[0].upper() + listing[1:] + "."


@register("caption", "scenes", lambda out, s: scoring.text_match(out, s.truth["caption"]),
          lambda out, s: scoring.char_similarity(out, s.truth["caption"]))
def caption(rng, style):
    img, objects = scene(rng, style, int(rng.integers(1, 4)))
    text = caption_text(objects)
    return dict(image=img, prompt=style.ask("caption"), target=text, truth={"caption": text, "objects": objects})


@register("relation", "scenes", lambda out, s: scoring.text_match(out, s.truth["answer"]))
def relation(rng, style):
    img, (a, b) = scene(rng, style, 2)
    left = (a["box"][0] + a["box"][2]) < (b["box"][0] + b["box"][2])
    answer = "left" if left else "right"
    return dict(image=img, prompt=style.ask("relation", a=name(a), b=name(b)),
                target=boxed(answer), truth={"answer": answer})
