"""`glmv draw` and sweep grids: the grid's size and labels, each cell equal to the image drawn alone, the axes
parsed strictly; single images with their seeds in the PNG."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from glmv.cli import main
from glmv.errors import InputError
from glmv.image.sweep import BACKGROUND, GAP, Axis, compose, layout, parse_axes


def test_axes_are_parsed_strictly():
    assert parse_axes(["steps=20,50", "guidance=1.5,3"]) == [Axis("steps", (20, 50)), Axis("guidance", (1.5, 3.0))]
    for bad, message in ((["colour=1,2"], "name one of"), (["steps=1.5"], "integer"), (["seed=1,1"], "repeats"),
                         (["seed=1", "seed=2"], "once"), (["steps=1", "seed=1", "guidance=1", "top_k=1"], "1 to 3"),
                         (["seed=" + ",".join(map(str, range(65)))], "at most 64")):
        with pytest.raises(InputError, match=message):
            parse_axes(bad)


def ink(region: Image.Image) -> int:
    """Pixels that are not background (text drawn there)."""
    return int((np.asarray(region) != BACKGROUND).any(-1).sum())


def test_grid_size_and_labels():
    """Three axes (2 columns x 3 rows x 2 panels) of 40x24 cells: the size follows the layout, every label sits in
    its place (ink in each header cell, row label and panel title), every cell lands where its index says."""
    axes = parse_axes(["steps=1,2", "guidance=1.5,3,4.5", "seed=7,8"])
    colours = [(10 * i, 100, 200 - 10 * i) for i in range(12)]
    grid = compose([Image.new("RGB", (40, 24), c) for c in colours], axes)
    box = layout(axes, (40, 24))
    assert grid.size == (2 * box["panel_w"] + GAP, box["title"] + box["header"] + 3 * 24)
    assert box["side"] > 40 and box["title"] == box["header"] > 16  # room for 'guidance=4.5' and the titles
    assert json.loads(grid.info["glmv.sweep"])["axes"] == [["steps", [1, 2]], ["guidance", [1.5, 3.0, 4.5]],
                                                           ["seed", [7, 8]]]
    for z in range(2):
        left = z * (box["panel_w"] + GAP)
        assert ink(grid.crop((left, 0, left + box["panel_w"], box["title"]))) > 20  # "seed=7" / "seed=8"
        for x in range(2):
            cx = left + box["side"] + 40 * x
            assert ink(grid.crop((cx, box["title"], cx + 40, box["title"] + box["header"]))) > 20  # "steps=1"...
            for y in range(3):
                top = box["title"] + box["header"] + 24 * y
                assert grid.getpixel((cx + 20, top + 12)) == colours[x * 6 + y * 2 + z]
        for y in range(3):
            top = box["title"] + box["header"] + 24 * y
            assert ink(grid.crop((left, top, left + box["side"], top + 24))) > 20  # "guidance=1.5"...


def test_draw_sweep_from_the_cli(glm_image_dir, image_pipeline, tmp_path, capsys):
    """The CLI's grid PNG: its size and axes as laid out, and its cells equal to images drawn one by one."""
    out = tmp_path / "grid.png"
    assert main(["draw", "a red fox", "--model", str(glm_image_dir), "--out", str(out), "--height", "32", "--width",
                 "64", "--device", "cpu", "--no-progress", "--sweep", "steps=1,2", "--sweep", "guidance=1.5,3",
                 "--sweep", "seed=1,2"]) == 0
    assert "2 steps x 2 guidance x 2 seed" in capsys.readouterr().out
    grid = Image.open(out)
    axes = parse_axes(["steps=1,2", "guidance=1.5,3", "seed=1,2"])
    box = layout(axes, (64, 32))
    assert grid.size == (2 * box["panel_w"] + GAP, box["panel_h"])
    assert json.loads(grid.text["glmv.sweep"])["axes"] == [["steps", [1, 2]], ["guidance", [1.5, 3.0]],
                                                           ["seed", [1, 2]]]
    assert grid.text["prompt"] == "a red fox"
    # the cell of steps=2 (column 2), guidance=3 (row 2), seed=2 (panel 2)
    left, top = box["panel_w"] + GAP + box["side"] + 64, box["title"] + box["header"] + 32
    alone = image_pipeline.generate("a red fox", 32, 64, steps=2, guidance=3.0, seed=2)[0]
    assert np.array_equal(np.asarray(grid.convert("RGB").crop((left, top, left + 64, top + 32))), np.asarray(alone))


def test_draw_images_with_seeds(glm_image_dir, tmp_path, capsys):
    out = tmp_path / "cat.png"
    assert main(["draw", "a cat", "--model", str(glm_image_dir), "--out", str(out), "--height", "32", "--width", "32",
                 "--steps", "1", "--seed", "11", "--n", "2", "--device", "cpu", "--no-progress"]) == 0
    first, second = Image.open(tmp_path / "cat-0.png"), Image.open(tmp_path / "cat-1.png")
    assert (first.text["seed"], second.text["seed"], first.text["prompt"]) == ("11", "12", "a cat")
    assert first.size == (32, 32)
    assert main(["draw", "a cat", "--model", str(glm_image_dir), "--height", "33", "--device", "cpu"]) == 1
    assert "multiple of 32" in capsys.readouterr().err
