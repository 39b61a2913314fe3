"""`glmv ground` on a world image with the bundled model, and the overlay's pixels."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from glmv.cli import main
from glmv.engine.grounding import BOX_COLOURS, draw_boxes
from glmv.world import sample

BACKGROUND = (250, 250, 250)


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """A world scene and the phrase of its grounding question ("the red square")."""
    s = sample("ground", "test", 0)
    path = tmp_path_factory.mktemp("ground") / "scene.png"
    s.image.save(path)
    phrase = s.prompt.removeprefix("Help me to locate ").removesuffix(" in the image and give me its bounding boxes.")
    return path, phrase


def test_ground_writes_the_overlay_of_the_boxes_it_prints(scene, tmp_path, capsys):
    path, phrase = scene
    out = tmp_path / "overlay.png"
    assert main(["ground", str(path), phrase, "--out", str(out), "--json", "--device", "cpu",
                 "--temperature", "0", "--max-tokens", "48"]) == 0
    result = json.loads(capsys.readouterr().out)  # --json: one object, nothing else
    assert result["phrase"] == phrase and result["boxes"]  # the bundled model answers this with a box
    image = Image.open(path).convert("RGB")
    overlay = Image.open(out)
    assert overlay.size == image.size and overlay.mode == "RGB"
    expected = draw_boxes(image, [b["pixels"] for b in result["boxes"]], [b["label"] for b in result["boxes"]])
    assert np.array_equal(np.asarray(overlay), np.asarray(expected))
    assert not np.array_equal(np.asarray(overlay), np.asarray(image))


def test_ground_prints_pixel_boxes_and_count(scene, tmp_path, capsys):
    path, _ = scene
    assert main(["ground", str(path), "red squares", "--count", "--out", str(tmp_path / "o.png"), "--device", "cpu",
                 "--temperature", "0", "--max-tokens", "48"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("count: ") and "red squares: " in printed and f"wrote {tmp_path / 'o.png'}" in printed
    assert Image.open(tmp_path / "o.png").size == Image.open(path).size


def test_missing_image_is_a_one_line_error(tmp_path, capsys):
    assert main(["ground", str(tmp_path / "nope.png"), "the cat"]) == 1
    assert capsys.readouterr().err.startswith("glmv: error:")


def test_draw_boxes_outlines_each_box_in_its_colour_and_leaves_the_rest():
    image = Image.new("RGB", (300, 200), BACKGROUND)
    box, other = (100, 80, 200, 160), (10, 150, 40, 190)
    out = np.asarray(draw_boxes(image, [box, other], ["the red circle", None]))
    left, top, right, bottom = box
    colour = BOX_COLOURS[0]
    edges = [out[top, left:right], out[bottom - 1, left:right], out[top:bottom, left], out[top:bottom, right - 1]]
    for edge in edges:
        assert (edge == colour).all()
    width = 2  # the outline of an image this small
    assert (out[top + width : bottom - width, left + width : right - width] == BACKGROUND).all()  # interior
    assert (out[top + width - 1, left + width : right - width] == colour).all()  # the outline is `width` thick
    assert (out[bottom:, 60:] == BACKGROUND).all() and (out[:, right:] == BACKGROUND).all()  # beside and below
    assert (out[top - 20 : top, left:left + 20] == colour).any()  # the label's tab, above the box
    assert (out[: top - 20] == BACKGROUND).all()  # nothing higher up
    assert (out[other[1], other[0] : other[2]] == BOX_COLOURS[1]).all()  # the next box: the next colour
    assert np.asarray(image).tolist() == np.full((200, 300, 3), BACKGROUND).tolist()  # the input is left as it was


def test_draw_boxes_labels_a_box_at_the_top_inside_it():
    image = Image.new("L", (120, 90), 255)
    out = draw_boxes(image, [(0, 0, 120, 90)], ["whole image"])
    assert out.mode == "RGB" and out.size == image.size
    inside = np.asarray(out)[2:20, 2:60]
    assert (inside == BOX_COLOURS[0]).all(axis=-1).sum() > 100  # the tab drawn inside, where there is room
