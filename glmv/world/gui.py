"""GUI screens (title bar, menus, text fields, a list, buttons) with element boxes: an instruction -> one
GLM GUI-agent action, `{"action_type":"click","box_2d":[[x1,y1,x2,y2]]}` (0-999 coordinates) in box tokens.

Every label on a screen is distinct (menus, buttons, fields and list items draw from disjoint vocabularies), so
each instruction names exactly one element.
"""

from __future__ import annotations

import json

import numpy as np
from PIL import Image, ImageDraw

from glmv.world import scoring
from glmv.world.core import register
from glmv.world.draw import boxed, font, to_1000

TITLES = ("Editor", "Settings", "Mail", "Notes", "Files", "Photos")
MENUS = ("File", "Edit", "View", "Tools", "Help")
BUTTONS = ("Save", "Open", "Cancel", "OK", "Delete", "Send", "Search", "Next", "Back", "Close", "Apply")
FIELDS = ("Name", "Email", "City", "Phone", "Title", "Note")
ITEMS = ("apple", "river", "stone", "cloud", "house", "light", "table", "water", "paper", "music")
TYPED = ("hello", "alice", "london", "today", "blue", "42")
THEMES = ((40, 90, 200), (30, 140, 90), (120, 60, 170), (200, 90, 30), (60, 60, 70))
FACES = ((250, 250, 250), (240, 242, 246), (246, 243, 236))


def _pick(rng: np.random.Generator, vocab: tuple[str, ...], n: int) -> list[str]:
    return [vocab[i] for i in rng.permutation(len(vocab))[:n]]


def screen(rng: np.random.Generator) -> tuple[Image.Image, list[dict]]:
    """A window; returns (image, elements) with each element's kind, label and 0-1000 box."""
    f = font(0, 10)
    width = int(rng.choice((196, 224)))
    menus, buttons = _pick(rng, MENUS, int(rng.integers(3, 5))), _pick(rng, BUTTONS, int(rng.integers(2, 4)))
    fields, items = _pick(rng, FIELDS, int(rng.integers(1, 3))), _pick(rng, ITEMS, int(rng.integers(2, 5)))
    blocks = ["fields", "list"] if rng.integers(2) else ["list", "fields"]
    height = 30 + 6 + 20 * len(fields) + 6 + 14 * len(items) + 4 + 6 + 20 + 6
    theme = THEMES[rng.integers(len(THEMES))]
    img = Image.new("RGB", (width, height), FACES[rng.integers(len(FACES))])
    d = ImageDraw.Draw(img)
    elements: list[tuple[str, str, tuple[float, float, float, float]]] = []
    d.rectangle((0, 0, width, 15), fill=theme)
    d.text((6, 2), TITLES[rng.integers(len(TITLES))], fill=(255, 255, 255), font=font(1, 10))
    x = 4
    for m in menus:  # menu bar: boxes hug the label with a little padding, as a click target would
        w = d.textlength(m, font=f)
        d.text((x + 3, 18), m, fill=(20, 20, 20), font=f)
        elements.append(("menu", m, (x, 16, x + w + 6, 30)))
        x += w + 10
    d.line((0, 30, width, 30), fill=(190, 190, 195))
    y = 36
    for block in blocks:
        if block == "fields":
            for label in fields:
                d.text((8, y + 3), label, fill=(20, 20, 20), font=f)
                box = (50, y, width - 8, y + 16)
                d.rectangle(box, fill=(255, 255, 255), outline=(140, 140, 150))
                elements.append(("field", label, box))
                y += 20
        else:
            d.rectangle((8, y, width - 8, y + 14 * len(items) + 4), fill=(255, 255, 255), outline=(140, 140, 150))
            for i, item in enumerate(items):
                row = (10, y + 2 + 14 * i, width - 10, y + 16 + 14 * i)
                if i % 2:
                    d.rectangle(row, fill=(238, 240, 245))
                d.text((14, row[1] + 1), item, fill=(20, 20, 20), font=f)
                elements.append(("item", item, row))
            y += 14 * len(items) + 4
        y += 6
    x = width - 8
    for b in reversed(buttons):  # right-aligned button row, like a dialog's
        w = max(34, d.textlength(b, font=f) + 14)
        box = (x - w, y, x, y + 18)
        d.rounded_rectangle(box, radius=4, fill=theme)
        d.text(((box[0] + box[2]) / 2, y + 9), b, fill=(255, 255, 255), font=f, anchor="mm")
        elements.append(("button", b, box))
        x -= w + 6
    return img, [{"kind": k, "label": lab, "box": to_1000(b, width, height)} for k, lab, b in elements]


def action_text(action: dict) -> str:
    return boxed(json.dumps(action, separators=(",", ":")))


@register("gui_action", "gui", lambda out, s: scoring.action_match(out, s.truth["action"]),
          lambda out, s: scoring.action_iou(out, s.truth["action"]))
def gui_action(rng, style):
    """Screens keep their own themed look (of a sample's style only blur and JPEG reach them)."""
    img, elements = screen(rng)
    e = elements[rng.integers(len(elements))]
    action = {"action_type": "click", "box_2d": [e["box"]]}
    if e["kind"] == "field":
        text = TYPED[rng.integers(len(TYPED))]
        prompt = style.ask("gui_type", text=text, label=e["label"])
        action = {"action_type": "input_text", "text": text, "box_2d": [e["box"]]}
    else:
        prompt = style.ask(f"gui_{e['kind']}", label=e["label"])
    return dict(image=img, prompt=prompt, target=action_text(action),
                truth={"action": action, "elements": elements})
