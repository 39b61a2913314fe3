"""Visual reasoning with verifiable answers, in the thinking format: a short trace, then a boxed answer."""

from __future__ import annotations

from PIL import ImageDraw

from glmv.world import scoring
from glmv.world.core import register
from glmv.world.draw import COLOURS, SHAPES, Painter, boxed, canvas, font
from glmv.world.scenes import scene


def objects_of(n: int, colour: str) -> str:
    return f"{n} {colour} object{'' if n == 1 else 's'}"


def _colour_counts(objects: list[dict]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for o in objects:
        counts[o["colour"]] = counts.get(o["colour"], 0) + 1
    return counts


@register("count_sum", "reasoning", lambda out, s: scoring.numeric(out, s.truth["answer"]), thinking=True)
def count_sum(rng, style):
    """Count two colours and add them."""
    img, objects = scene(rng, style, int(rng.integers(2, 7)), distinct=False, size_range=(0.14, 0.22))
    counts = _colour_counts(objects)
    colours = sorted(counts)
    a = colours[rng.integers(len(colours))]
    others = [c for c in ("red", "green", "blue", "yellow", "purple", "orange") if c != a]
    b = others[rng.integers(len(others))]
    na, nb = counts.get(a, 0), counts.get(b, 0)
    trace = f"I count {objects_of(na, a)} and {objects_of(nb, b)}. {na} + {nb} = {na + nb}."
    return dict(image=img, prompt=style.ask("count_sum", a=a, b=b),
                target=f"<think>{trace}</think>{boxed(str(na + nb))}", truth={"answer": na + nb, "trace": trace})


@register("count_more", "reasoning", lambda out, s: scoring.text_match(out, s.truth["answer"]), thinking=True)
def count_more(rng, style):
    """Which of two colours has more objects (never a tie)."""
    while True:
        img, objects = scene(rng, style, int(rng.integers(3, 7)), distinct=False, size_range=(0.14, 0.22))
        counts = _colour_counts(objects)
        if len(counts) >= 2:
            a, b = sorted(counts)[:2]
            if counts[a] != counts[b]:
                break
    winner = a if counts[a] > counts[b] else b
    trace = f"I count {objects_of(counts[a], a)} and {objects_of(counts[b], b)}. {max(counts[a], counts[b])} is more."
    return dict(image=img, prompt=style.ask("count_more", a=a, b=b),
                target=f"<think>{trace}</think>{boxed(winner)}", truth={"answer": winner, "trace": trace})


CELL = 14  # grid squares of the geometry task, in pixels


@register("geometry", "reasoning", lambda out, s: scoring.numeric(out, s.truth["answer"]), thinking=True)
def geometry(rng, style):
    """A rectangle on squared paper: its area or perimeter in grid squares, read off by counting squares."""
    cols, rows = int(rng.choice((8, 10, 12))), int(rng.choice((8, 10, 12)))
    img = canvas(rng, style, cols * CELL, rows * CELL)
    d = ImageDraw.Draw(img)
    for x in range(0, cols * CELL, CELL):
        d.line((x, 0, x, rows * CELL), fill=(185, 185, 195))
    for y in range(0, rows * CELL, CELL):
        d.line((0, y, cols * CELL, y), fill=(185, 185, 195))
    w, h = int(rng.integers(1, 7)), int(rng.integers(1, 7))
    x0, y0 = int(rng.integers(0, cols - w + 1)), int(rng.integers(0, rows - h + 1))
    colour = list(COLOURS.values())[rng.integers(len(COLOURS))]
    d.rectangle((x0 * CELL, y0 * CELL, (x0 + w) * CELL, (y0 + h) * CELL), fill=colour, outline=(40, 40, 40))
    size = f"The rectangle is {w} square{'s' * (w != 1)} wide and {h} square{'s' * (h != 1)} tall."
    if rng.integers(2):
        question, answer, step = "area", w * h, f"Area = {w} x {h} = {w * h}."
    else:
        question, answer, step = "perimeter", 2 * (w + h), f"Perimeter = 2 x ({w} + {h}) = {2 * (w + h)}."
    trace = f"{size} {step}"
    return dict(image=img, prompt=style.ask("geometry", question=question),
                target=f"<think>{trace}</think>{boxed(str(answer))}",
                truth={"answer": answer, "width": w, "height": h, "trace": trace})


PIECE = 28  # one item of the pattern task, in pixels


@register("pattern", "reasoning", lambda out, s: scoring.text_match(out, s.truth["answer"]), thinking=True)
def pattern(rng, style):
    """A row of shapes repeating with period 2 or 3 and a "?" in the last place: what comes next."""
    period = int(rng.integers(2, 4))
    shown = int(rng.integers(2 * period, 7))  # the repeat is seen at least twice: the answer is determined
    pairs = [(c, s) for c in COLOURS for s in SHAPES]
    unit = [pairs[i] for i in rng.permutation(len(pairs))[:period]]
    turns = [style.turn() for _ in unit]  # a repeat looks the same each time it comes round
    width = (shown + 1) * PIECE + 8
    img = canvas(rng, style, max(112, width), 112)
    x0, y = (img.width - width) // 2 + 4, 56 - PIECE // 2
    paint = Painter(img, style)
    for i in range(shown):
        colour, shape = unit[i % period]
        box = (x0 + i * PIECE + 3, y + 3, x0 + (i + 1) * PIECE - 3, y + PIECE - 3)
        paint.shape(shape, box, COLOURS[colour], angle=turns[i % period])
    d = paint.draw
    qx = x0 + shown * PIECE
    d.rectangle((qx + 2, y + 2, qx + PIECE - 2, y + PIECE - 2), outline=(60, 60, 60))
    d.text((qx + PIECE / 2, y + PIECE / 2), "?", fill=(60, 60, 60), font=font(1, 16), anchor="mm")
    colour, shape = unit[shown % period]
    answer = f"{colour} {shape}"
    names = ", ".join(f"{c} {s}" for c, s in unit)
    trace = f"The row repeats every {period}: {names}. Place {shown + 1} is place {shown % period + 1} of the " \
            f"repeat, so it is the {answer}."
    return dict(image=img, prompt=style.ask("pattern"),
                target=f"<think>{trace}</think>{boxed(answer)}",
                truth={"answer": answer, "trace": trace, "row": [f"{c} {s}" for c, s in (unit * 3)[:shown]]})
