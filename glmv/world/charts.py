"""Bar, line and pie charts drawn with PIL, with their data: chart -> JSON, value lookup, arithmetic comparisons."""

from __future__ import annotations

import json

import numpy as np
from PIL import ImageDraw

from glmv.world import scoring
from glmv.world.core import register
from glmv.world.draw import COLOURS, boxed, canvas, font
from glmv.world.style import Style

LABELS = ("A", "B", "C", "D", "E")


def chart(rng: np.random.Generator, style: Style):
    """A bar or line chart of 3-5 labelled integer values (1..9) with a value axis; returns (image, data)."""
    n = int(rng.integers(3, 6))
    data = {LABELS[i]: int(v) for i, v in enumerate(rng.integers(1, 10, n))}
    w, h = 168, 140
    img = canvas(rng, style, w, h)
    d = ImageDraw.Draw(img)
    left, bottom, top, right = 24, h - 20, 10, w - 6
    f = font(0, 11)
    for v in (0, 5, 10):  # axis ticks
        y = bottom - (bottom - top) * v / 10
        d.line((left - 3, y, right, y), fill=(200, 200, 200))
        d.text((2, y - 6), str(v), fill=(60, 60, 60), font=f)
    d.line((left, top, left, bottom), fill=(0, 0, 0))
    slot = (right - left) / n
    colour = list(COLOURS.values())[rng.integers(len(COLOURS))]
    points = []
    for i, (label, value) in enumerate(data.items()):
        cx = left + slot * (i + 0.5)
        y = bottom - (bottom - top) * value / 10
        points.append((cx, y))
        d.text((cx - 3, bottom + 3), label, fill=(0, 0, 0), font=f)
    if rng.integers(2):
        for cx, y in points:
            d.rectangle((cx - slot * 0.3, y, cx + slot * 0.3, bottom), fill=colour)
    else:
        d.line(points, fill=colour, width=2)
        for cx, y in points:
            d.ellipse((cx - 3, y - 3, cx + 3, y + 3), fill=colour)
    return img, data


@register("chart_json", "charts", lambda out, s: scoring.json_f1(out, s.truth["data"]))
def chart_json(rng, style):
    img, data = chart(rng, style)
    return dict(image=img, prompt=style.ask("chart_json"), target=json.dumps(data, separators=(", ", ": ")),
                truth={"data": data})


@register("chart_value", "charts", lambda out, s: scoring.numeric(out, s.truth["answer"]))
def chart_value(rng, style):
    img, data = chart(rng, style)
    label = list(data)[rng.integers(len(data))]
    return dict(image=img, prompt=style.ask("chart_value", label=label), target=boxed(str(data[label])),
                truth={"answer": data[label], "data": data})


@register("chart_diff", "charts", lambda out, s: scoring.numeric(out, s.truth["answer"]), thinking=True)
def chart_diff(rng, style):
    img, data = chart(rng, style)
    a, b = (list(data)[i] for i in rng.permutation(len(data))[:2])
    diff = data[a] - data[b]
    trace = f"{a} is {data[a]} and {b} is {data[b]}. {data[a]} - {data[b]} = {diff}."
    return dict(image=img, prompt=style.ask("chart_diff", a=a, b=b),
                target=f"<think>{trace}</think>{boxed(str(diff))}", truth={"answer": diff, "trace": trace, "data": data})


def pie(rng: np.random.Generator, style: Style):
    """A pie of 3-5 labelled slices (percentages in steps of 5, each at least 10, summing to 100) with a
    legend "A 35%" beside it, slices in distinct colours starting at a random angle; returns (image, data,
    {label: colour name})."""
    n = int(rng.integers(3, 6))
    while True:  # cut points in 5% steps, re-drawn until every slice is wide enough to see
        cuts = np.sort(rng.choice(np.arange(1, 20), n - 1, replace=False))
        shares = np.diff(np.concatenate([[0], cuts, [20]])) * 5
        if shares.min() >= 10:
            break
    data = {LABELS[i]: int(v) for i, v in enumerate(shares)}
    w, h = 168, 112
    img = canvas(rng, style, w, h)
    d = ImageDraw.Draw(img)
    names = [list(COLOURS)[i] for i in rng.permutation(len(COLOURS))[:n]]
    colours = [COLOURS[c] for c in names]
    f = font(0, 11)
    r, cx, cy = 46, 52, h / 2
    angle = float(rng.uniform(0, 360))
    for i, (label, share) in enumerate(data.items()):
        end = angle + share * 3.6
        d.pieslice((cx - r, cy - r, cx + r, cy + r), angle, end, fill=colours[i], outline=(255, 255, 255))
        mid = np.radians((angle + end) / 2)  # the slice's letter sits on its bisector, 60% out
        ink = (0, 0, 0) if sum(colours[i]) > 400 else (255, 255, 255)  # dark letters on yellow and orange
        d.text((cx + 0.6 * r * np.cos(mid), cy + 0.6 * r * np.sin(mid)), label, fill=ink, font=font(1, 11),
               anchor="mm")
        y = cy - 8 * n + 16 * i + 2
        d.rectangle((110, y, 119, y + 9), fill=colours[i])
        d.text((123, y - 1), f"{label} {share}%", fill=(0, 0, 0), font=f)
        angle = end
    return img, data, dict(zip(data, names))


@register("chart_pie", "charts", lambda out, s: scoring.json_f1(out, s.truth["data"]))
def chart_pie(rng, style):
    img, data, colours = pie(rng, style)
    return dict(image=img, prompt=style.ask("chart_pie"), target=json.dumps(data, separators=(", ", ": ")),
                truth={"data": data, "colours": colours})
