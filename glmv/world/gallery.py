"""A contact sheet of samples: each cell shows the image (or frames spread over the video) with any boxes of the target
drawn in magenta, the conversation's text turns and the target, so a person can check at a glance that pictures
and ground truth agree."""

from __future__ import annotations

import math
import textwrap

import numpy as np
from PIL import Image, ImageDraw

from glmv.engine.outputs import parse_boxes
from glmv.world.core import Sample
from glmv.world.draw import font

CELL = 240  # wide enough for the largest (224 px) images
LINE = 12
CHARS = 38  # characters per wrapped line at 10 px DejaVu Sans in a 240 px cell


def caption_lines(s: Sample) -> list[tuple[str, bool]]:
    """(line, is_target): 'U:'/'A:' text turns of the conversation (dialogue history included), then '=> target'."""
    lines = []
    for m in s.messages():
        content = m["content"]
        text = content if isinstance(content, str) else " ".join(c["text"] for c in content if c["type"] == "text")
        role = "U: " if m["role"] == "user" else "A: "
        for k, part in enumerate(text.splitlines()):  # keep multiple-choice options on their own lines
            lines += [(w, False) for w in textwrap.wrap((role if k == 0 else "   ") + part, CHARS)]
    return lines + [(w, True) for w in textwrap.wrap(f"=> {s.target}", CHARS)]


def media_of(s: Sample, strip: int = 4) -> Image.Image:
    """The image, or a strip of `strip` frames spread over the video (its first frame alone is often empty)."""
    if s.image is not None:
        return s.image.copy()
    picks = [s.frames[round(i)] for i in np.linspace(0, len(s.frames) - 1, min(strip, len(s.frames)))]
    w, h = picks[0].size
    out = Image.new("RGB", (len(picks) * (w + 2) - 2, h), (255, 255, 255))
    for i, f in enumerate(picks):
        out.paste(f, (i * (w + 2), 0))
    return out


def gallery(samples: list[Sample], columns: int = 4) -> Image.Image:
    columns = max(1, min(columns, len(samples)))
    texts = [caption_lines(s) for s in samples]
    media = [media_of(s) for s in samples]
    for m in media:
        m.thumbnail((CELL - 8, CELL - 8))  # only ever shrinks
    media_h = max(m.height for m in media) + (20 if any(s.frames for s in samples) else 8)
    cell_h = media_h + LINE * max(len(t) for t in texts) + 6
    rows = math.ceil(len(samples) / columns)
    sheet = Image.new("RGB", (columns * CELL, rows * cell_h), (255, 255, 255))
    d = ImageDraw.Draw(sheet)
    f = font(0, 10)
    for i, (s, m, lines) in enumerate(zip(samples, media, texts)):
        x, y = (i % columns) * CELL, (i // columns) * cell_h
        mx, my = x + (CELL - m.width) // 2, y + 4
        sheet.paste(m, (mx, my))
        for x1, y1, x2, y2 in parse_boxes(s.target):  # 0-1000 coordinates -> the pasted thumbnail
            d.rectangle((mx + x1 * m.width / 1000, my + y1 * m.height / 1000,
                         mx + x2 * m.width / 1000, my + y2 * m.height / 1000), outline=(255, 0, 255), width=2)
        if s.frames:
            d.text((mx + 2, my + m.height + 1), f"video: {len(s.frames)} frames @ {s.fps:g} fps", fill=(200, 0, 0), font=f)
        for j, (line, is_target) in enumerate(lines):
            d.text((x + 4, y + media_h + j * LINE), line, fill=(0, 110, 0) if is_target else (0, 0, 0), font=f)
        d.rectangle((x, y, x + CELL - 1, y + cell_h - 1), outline=(200, 200, 200))
    return sheet
