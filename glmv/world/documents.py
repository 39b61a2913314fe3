"""Receipts, forms and small tables rendered with PIL text: document image -> JSON with a fixed schema.

The vocabulary is small and regular (a few stores, items, names, cities) so a nano model can learn to read it;
prices are kept as the strings printed on the page ("2.40") so the JSON is an exact transcription.
"""

from __future__ import annotations

import json

import numpy as np
from PIL import Image, ImageDraw

from glmv.world import scoring
from glmv.world.core import register
from glmv.world.draw import canvas, font
from glmv.world.style import Style

STORES = ("Fresh Mart", "Corner Shop", "City Market", "Green Grocer", "Sunny Deli", "Blue Cafe", "Daily Foods")
ITEMS = ("bread", "milk", "eggs", "apples", "rice", "tea", "coffee", "cheese", "butter", "juice", "pasta", "soup",
         "honey", "jam", "sugar", "beans")
NAMES = ("Anna Lee", "Tom Park", "Mia Chen", "Leo Ross", "Eva Kim", "Sam Hill", "Ida Cole", "Max Wu")
CITIES = ("Paris", "Berlin", "Tokyo", "Lima", "Oslo", "Cairo", "Rome", "Seoul")
FORM_FIELDS = ("name", "date", "city", "phone", "age")
FORM_TITLES = ("Registration", "Order Form", "Booking", "Member Card")
INK = (30, 30, 35)


def price(cents: int) -> str:
    return f"{cents // 100}.{cents % 100:02d}"


def compact(value) -> str:
    return json.dumps(value, separators=(", ", ": "))


def paper(rng: np.random.Generator, style: Style, width: int, height: int) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    """A page at least 112 px tall (the world's smallest image side); short documents leave space below."""
    img = canvas(rng, style, width, max(112, height))
    return img, ImageDraw.Draw(img)


def _doc_score(out, s) -> float:
    return scoring.json_f1(out, s.truth["data"])


@register("doc_receipt", "documents", _doc_score)
def doc_receipt(rng, style):
    store = STORES[rng.integers(len(STORES))]
    names = [ITEMS[i] for i in rng.permutation(len(ITEMS))[:int(rng.integers(2, 5))]]
    cents = [int(c) for c in rng.integers(50, 1000, len(names))]
    f, bold = font(int(rng.choice((0, 3))), 11), font(1, 12)
    width, line = int(rng.choice((168, 196))), 15
    img, d = paper(rng, style, width, 18 + line * (len(names) + 3))
    d.text((width / 2, 6), store, fill=INK, font=bold, anchor="mt")
    y = 8 + line
    for name, c in zip(names, cents):
        d.text((10, y), name, fill=INK, font=f)
        d.text((width - 10, y), price(c), fill=INK, font=f, anchor="ra")
        y += line
    d.line((10, y + 3, width - 10, y + 3), fill=INK)
    total = price(sum(cents))
    d.text((10, y + 8), "TOTAL", fill=INK, font=bold)
    d.text((width - 10, y + 8), total, fill=INK, font=bold, anchor="ra")
    data = {"store": store, "items": [{"name": n, "price": price(c)} for n, c in zip(names, cents)], "total": total}
    return dict(image=img, prompt=style.ask("doc_receipt"), target=compact(data), truth={"data": data})


def _form_value(rng, key: str) -> str:
    if key == "name":
        return NAMES[rng.integers(len(NAMES))]
    if key == "date":
        return f"2024-{int(rng.integers(1, 13)):02d}-{int(rng.integers(1, 29)):02d}"
    if key == "city":
        return CITIES[rng.integers(len(CITIES))]
    if key == "phone":
        return "".join(str(int(v)) for v in rng.integers(0, 10, 7))
    return str(int(rng.integers(18, 90)))


@register("doc_form", "documents", _doc_score)
def doc_form(rng, style):
    keys = [FORM_FIELDS[i] for i in sorted(rng.permutation(len(FORM_FIELDS))[:int(rng.integers(2, 5))])]
    data = {k: _form_value(rng, k) for k in keys}
    title = FORM_TITLES[rng.integers(len(FORM_TITLES))]
    f, row = font(int(rng.choice((0, 2))), 11), 22
    width = int(rng.choice((168, 196)))
    img, d = paper(rng, style, width, 26 + row * len(keys))
    d.text((8, 5), title, fill=INK, font=font(1, 12))
    for i, (key, value) in enumerate(data.items()):
        y = 24 + i * row
        d.text((8, y + 3), key.capitalize() + ":", fill=INK, font=f)
        d.rectangle((58, y, width - 8, y + 17), fill=(255, 255, 255), outline=(120, 120, 130))
        d.text((62, y + 3), value, fill=(20, 20, 110), font=f)
    return dict(image=img, prompt=style.ask("doc_form", keys=", ".join(keys)), target=compact(data),
                truth={"data": data})


@register("doc_table", "documents", _doc_score)
def doc_table(rng, style):
    names = [ITEMS[i] for i in rng.permutation(len(ITEMS))[:int(rng.integers(2, 5))]]
    rows = [{"name": n, "qty": int(q), "price": price(int(c))}
            for n, q, c in zip(names, rng.integers(1, 10, len(names)), rng.integers(50, 1000, len(names)))]
    f, head = font(int(rng.choice((0, 3))), 11), font(1, 11)
    width, row = int(rng.choice((168, 196))), 18
    cols = (4, width * 0.45, width * 0.68, width - 4)  # column edges: name | qty | price
    img, d = paper(rng, style, width, 8 + row * (len(rows) + 1))
    for r, values in enumerate([("name", "qty", "price")] + [(x["name"], str(x["qty"]), x["price"]) for x in rows]):
        y = 4 + r * row
        if r == 0:
            d.rectangle((cols[0], y, cols[-1], y + row), fill=(215, 220, 235))
        for c, text in enumerate(values):
            d.text((cols[c] + 4, y + 3), text, fill=INK, font=head if r == 0 else f)
    for x in cols:
        d.line((x, 4, x, 4 + row * (len(rows) + 1)), fill=(90, 90, 100))
    for r in range(len(rows) + 2):
        d.line((cols[0], 4 + r * row, cols[-1], 4 + r * row), fill=(90, 90, 100))
    return dict(image=img, prompt=style.ask("doc_table"), target=compact(rows), truth={"data": rows})
