"""Sweeps: every combination of up to three settings rendered into one labelled grid (sdnext's XYZ grid).

    axes = parse_axes(["steps=20,50", "guidance=1.5,3", "seed=1,2,3"])   # x, y, z
    grid = sweep(pipe, "a red fox", 1024, 1024, axes)                      # one PIL image

The first axis runs along the columns, the second along the rows, the third over panels side by side, each panel
titled with its value. Cells that share a seed and the prior's sampling share the prior's tokens (the prior runs
once per distinct seed, all seeds of a sampling setting decoded together); only the DiT runs per cell. The grid
PNG carries the axes in its `glmv.sweep` text chunk (json).
"""

from __future__ import annotations

import itertools
import json
import os
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from glmv.errors import InputError
from glmv.image.generate import Progress

AXES = {"steps": int, "guidance": float, "seed": int, "temperature": float, "top_p": float, "top_k": int}
PRIOR_KEYS = ("seed", "temperature", "top_p", "top_k")  # what decides the prior's tokens
MAX_AXES, MAX_CELLS = 3, 64
FONT_SIZE, PAD, GAP = 16, 6, 12  # label text, padding around it, gap between panels (px)
BACKGROUND, INK = (255, 255, 255), (0, 0, 0)


@dataclass(frozen=True)
class Axis:
    name: str
    values: tuple

    def label(self, value: Any) -> str:
        return f"{self.name}={value:g}" if isinstance(value, float) else f"{self.name}={value}"


def parse_axis(text: str) -> Axis:
    """'name=v1,v2,...' -> Axis, values typed by the setting (steps, seed, top_k: integers; others: numbers)."""
    name, sep, values = text.partition("=")
    name = name.strip()
    if not sep or name not in AXES:
        raise InputError(f"a sweep is 'name=v1,v2,...' with name one of {', '.join(AXES)}; got {text!r}")
    try:
        parsed = tuple(AXES[name](v.strip()) for v in values.split(","))
    except ValueError:
        raise InputError(f"sweep {name}: every value must be {'an integer' if AXES[name] is int else 'a number'}, "
                         f"got {values!r}") from None
    if len(set(parsed)) != len(parsed):
        raise InputError(f"sweep {name} repeats a value: {values!r}")
    return Axis(name, parsed)


def parse_axes(texts: list[str]) -> list[Axis]:
    axes = [parse_axis(t) for t in texts]
    if not 1 <= len(axes) <= MAX_AXES:
        raise InputError(f"give 1 to {MAX_AXES} --sweep axes (x, y, z), got {len(axes)}")
    names = [a.name for a in axes]
    if len(set(names)) != len(names):
        raise InputError(f"each setting may be swept once, got {names}")
    cells = 1
    for a in axes:
        cells *= len(a.values)
    if cells > MAX_CELLS:
        raise InputError(f"the sweep has {cells} combinations; at most {MAX_CELLS} are drawn at once")
    return axes


def sweep(pipe, prompt: str, height: int, width: int, axes: list[Axis], settings: dict[str, Any],
          images: list | None = None, progress: Progress | None = None) -> Image.Image:
    """Render every combination of `axes` over the base `settings` (steps, guidance, seed, temperature, top_p,
    top_k: None = the pipeline's default) with `pipe` (an ImagePipeline) and lay them out in one grid."""
    refs = pipe.references(images)
    prior_prompt = pipe.prompt(prompt, height, width, refs)
    combos = [dict(settings, **dict(zip((a.name for a in axes), values)))
              for values in itertools.product(*(a.values for a in axes))]
    tokens = {}
    for sampling in dict.fromkeys(tuple(c[k] for k in PRIOR_KEYS[1:]) for c in combos):
        seeds = list(dict.fromkeys(c["seed"] for c in combos if tuple(c[k] for k in PRIOR_KEYS[1:]) == sampling))
        out = pipe.prior_tokens(prior_prompt, seeds, progress, **dict(zip(PRIOR_KEYS[1:], sampling)))
        tokens.update({(seed, *sampling): t for seed, t in zip(seeds, out)})
    cells = [pipe.render(prompt, tokens[tuple(c[k] for k in PRIOR_KEYS)], height, width, c["steps"], c["guidance"],
                         c["seed"], refs, progress) for c in combos]
    return compose(cells, axes)


@lru_cache(maxsize=1)
def _font() -> ImageFont.ImageFont:
    """DejaVu Sans from matplotlib's wheel (a dependency), the same on every machine."""
    import matplotlib

    return ImageFont.truetype(os.path.join(matplotlib.get_data_path(), "fonts", "ttf", "DejaVuSans.ttf"), FONT_SIZE)


def layout(axes: list[Axis], cell: tuple[int, int]) -> dict[str, int]:
    """Pixel sizes of the grid: label column (left, row labels), header (column labels), panel title (z)."""
    font = _font()
    width = lambda texts: max(int(font.getlength(t)) for t in texts) + 2 * PAD
    line = FONT_SIZE + 2 * PAD
    side = width([axes[1].label(v) for v in axes[1].values]) if len(axes) > 1 else 0
    title = line if len(axes) > 2 else 0
    nx = len(axes[0].values)
    ny = len(axes[1].values) if len(axes) > 1 else 1
    nz = len(axes[2].values) if len(axes) > 2 else 1
    panel_w, panel_h = side + nx * cell[0], title + line + ny * cell[1]
    return dict(side=side, header=line, title=title, panel_w=panel_w, panel_h=panel_h,
                width=nz * panel_w + (nz - 1) * GAP, height=panel_h, nx=nx, ny=ny, nz=nz)


def compose(cells: list[Image.Image], axes: list[Axis]) -> Image.Image:
    """Cells in itertools.product order of the axes (x slowest) -> the labelled grid."""
    w, h = cells[0].size
    box = layout(axes, (w, h))
    grid = Image.new("RGB", (box["width"], box["height"]), BACKGROUND)
    draw, font = ImageDraw.Draw(grid), _font()
    for z in range(box["nz"]):
        left = z * (box["panel_w"] + GAP)
        if len(axes) > 2:
            draw.text((left + box["panel_w"] // 2, box["title"] // 2), axes[2].label(axes[2].values[z]), INK, font,
                      anchor="mm")
        top = box["title"] + box["header"]
        for x in range(box["nx"]):
            cx = left + box["side"] + x * w
            draw.text((cx + w // 2, box["title"] + box["header"] // 2), axes[0].label(axes[0].values[x]), INK, font,
                      anchor="mm")
            for y in range(box["ny"]):
                grid.paste(cells[_cell(axes, x, y, z)], (cx, top + y * h))
        for y in range(box["ny"] if len(axes) > 1 else 0):
            draw.text((left + PAD, top + y * h + h // 2), axes[1].label(axes[1].values[y]), INK, font, anchor="lm")
    grid.info["glmv.sweep"] = json.dumps({"axes": [[a.name, list(a.values)] for a in axes], "cell": [w, h]})
    return grid


def _cell(axes: list[Axis], x: int, y: int, z: int) -> int:
    """The index of cell (x, y, z) in itertools.product order (the first axis varies slowest)."""
    sizes = [len(a.values) for a in axes]
    flat = 0
    for i, size in zip((x, y, z), sizes):
        flat = flat * size + i
    return flat
