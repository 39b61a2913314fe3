"""Richer scenes (sizes, textures, overlap), pie charts, videos of comings and goings, geometry and pattern
puzzles: the pictures agree with the ground truth, checked on the pixels. (Determinism, split disjointness and
self-scoring of every task are in test_world_generators.py.)"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from glmv.world import TASKS, sample, scoring
from glmv.world.attributes import PLURAL
from glmv.world.draw import COLOURS, TEXTURES, noise
from glmv.world.reasoning import CELL
from glmv.world.video import FPS


def pixel_box(box: list[int], img) -> tuple[int, int, int, int]:
    w, h = img.size
    return (round(box[0] * w / 1000), round(box[1] * h / 1000), round(box[2] * w / 1000), round(box[3] * h / 1000))


def has_colour(region: np.ndarray, rgb) -> bool:
    return bool(np.all(region == np.array(rgb, dtype=np.uint8), axis=-1).any())


def tint(rgb) -> tuple[int, ...]:
    return tuple(c + (255 - c) * 3 // 4 for c in rgb)


def test_textures_are_drawn_and_plain_shapes_have_none():
    for i in range(30):
        s = sample("attribute", "train", i)
        pixels = np.asarray(s.image)
        for o in s.truth["objects"]:
            x1, y1, x2, y2 = pixel_box(o["box"], s.image)
            region = pixels[y1:y2 + 1, x1:x2 + 1]
            colour = COLOURS[o["colour"]]
            assert has_colour(region, colour), (i, o)
            assert has_colour(region, tint(colour)) == (o["texture"] != "plain"), (i, o)


def test_size_classes_do_not_overlap_and_the_larger_one_is_large():
    sides = {"small": [], "large": []}
    for i in range(40):
        s = sample("attribute", "test", i)
        w, h = s.image.size
        for o in s.truth["objects"]:
            sides[o["size"]].append((o["box"][2] - o["box"][0]) * w / 1000 / min(w, h))
        if s.prompt.startswith("Which is larger"):
            (winner,) = [o for o in s.truth["objects"] if f"{o['colour']} {o['shape']}" == s.truth["answer"]]
            assert winner["size"] == "large"
    assert max(sides["small"]) < 0.19 < 0.25 < min(sides["large"])


def test_overlaps_keep_every_object_countable():
    for i in range(40):
        objects = sample("count_hard", "train", i).truth["objects"]
        for a in range(len(objects)):
            for b in range(a + 1, len(objects)):
                p, q = objects[a]["box"], objects[b]["box"]
                ix = max(0, min(p[2], q[2]) - max(p[0], q[0]))
                iy = max(0, min(p[3], q[3]) - max(p[1], q[1]))
                if objects[a]["colour"] == objects[b]["colour"]:
                    assert ix * iy == 0  # same colours would merge into one blob
                else:
                    smaller = min((p[2] - p[0]) * (p[3] - p[1]), (q[2] - q[0]) * (q[3] - q[1]))
                    assert ix * iy <= 0.3 * smaller  # a quarter, plus 0-1000 rounding


def test_count_hard_counts_what_the_prompt_names():
    seen = set()
    for i in range(60):
        s = sample("count_hard", "test", i)
        objects = s.truth["objects"]
        word = re.match(r"How many (\w+)", s.prompt).group(1)
        if word == "objects":
            want, seen_by = len(objects), "all"
        elif word in PLURAL.values():
            want, seen_by = sum(PLURAL[o["shape"]] == word for o in objects), "shape"
        elif word in TEXTURES:
            want, seen_by = sum(o["texture"] == word for o in objects), "texture"
        else:
            want, seen_by = sum(o["colour"] == word for o in objects), "colour"
        assert s.truth["count"] == want and s.target == f"<|begin_of_box|>{want}<|end_of_box|>"
        seen.add(seen_by)
        assert 1 <= want <= 10
    assert seen == {"all", "shape", "texture", "colour"}


def test_ground_all_lists_every_object_of_the_colour():
    for i in range(20):
        s = sample("ground_all", "test", i)
        colour = re.search(r"every (\w+) object", s.prompt).group(1)
        assert s.truth["boxes"] == sorted(o["box"] for o in s.truth["objects"] if o["colour"] == colour)
        assert scoring.boxes_f1(s.target, s.truth["boxes"]) == 1.0


def test_boxes_f1_on_hand_made_answers():
    truth = [[100, 100, 300, 300], [500, 500, 700, 700]]
    assert scoring.boxes_f1("<|begin_of_box|>[[500,500,700,700],[100,100,300,300]]<|end_of_box|>", truth) == 1.0
    assert scoring.boxes_f1("(100, 100, 300, 300) and (510, 500, 700, 690)", truth) == 1.0
    assert scoring.boxes_f1("[[100,100,300,300]]", truth) == pytest.approx(2 / 3)  # one missing
    assert scoring.boxes_f1("[[100,100,300,300],[100,100,300,300]]", truth) == 0.5  # a duplicate matches once
    assert scoring.boxes_f1("[[100,100,300,300],[500,500,700,700],[0,0,50,50]]", truth) == pytest.approx(0.8)
    assert scoring.boxes_f1("[[200,200,400,400],[600,600,800,800]]", truth) == 0.0  # IoU 1/7 each
    for junk in ("", "no boxes", "[[100,100,300", "<|begin_of_box|>[]<|end_of_box|>"):
        assert scoring.boxes_f1(junk, truth) == 0.0
    assert scoring.boxes_f1("none", []) == 1.0 and scoring.boxes_f1("[1,2,3,4]", []) == 0.0


def test_pie_slices_cover_their_share_of_the_disc():
    for i in range(20):
        s = sample("chart_pie", "test", i)
        data = s.truth["data"]
        assert json.loads(s.target) == data and sum(data.values()) == 100
        assert all(v % 5 == 0 and v >= 10 for v in data.values())
        disc = np.asarray(s.image)[:, :100]  # the pie; the legend is to its right
        counts = {k: np.all(disc == COLOURS[c], axis=-1).sum() for k, c in s.truth["colours"].items()}
        total = sum(counts.values())
        for label, share in data.items():
            assert abs(100 * counts[label] / total - share) < 3, (i, label, counts, data)
        # and the slices close the circle: in a ring around the centre (52, 56) of the r = 46 pie, only the white
        # slice borders and the letters are not slice colours
        ys, xs = np.mgrid[0:disc.shape[0], 0:disc.shape[1]]
        ring = (np.hypot(xs - 52, ys - 56) > 14) & (np.hypot(xs - 52, ys - 56) < 41)
        covered = np.zeros(disc.shape[:2], dtype=bool)
        for c in s.truth["colours"].values():
            covered |= np.all(disc == COLOURS[c], axis=-1)
        assert covered[ring].mean() > 0.88, i


def test_video_frames_change_exactly_at_the_event_seconds():
    for task in ("video_events", "video_disappear"):
        for i in range(15):
            s = sample(task, "train", i)
            events = s.truth["events"]
            assert [e[0] for e in events] == sorted({e[0] for e in events})  # distinct seconds, in order
            frames = [np.asarray(f) for f in s.frames]
            changes = [f / FPS for f in range(1, len(frames)) if not np.array_equal(frames[f], frames[f - 1])]
            assert changes == [e[0] for e in events], (task, i)
            assert len(frames) == (events[-1][0] + 1) * FPS


def test_video_events_target_lists_times_in_order():
    s = next(s for s in (sample("video_events", "test", i) for i in range(20)) if len(s.truth["events"]) >= 3)
    score, reward = TASKS["video_events"].score, TASKS["video_events"].reward
    parts = s.target.split(", ")
    assert all(re.fullmatch(r"\d+s: \w+ \w+ (appears|disappears)", p) for p in parts)
    swapped = ", ".join([parts[1], parts[0], *parts[2:]])
    assert score(swapped, s) == 0.0 and 0 < reward(swapped, s) < 1


def test_geometry_rectangle_measures_what_the_trace_says():
    kinds = set()
    for i in range(30):
        s = sample("geometry", "test", i)
        pixels = np.asarray(s.image)
        fill = np.zeros(pixels.shape[:2], dtype=bool)
        for rgb in COLOURS.values():
            fill |= np.all(pixels == rgb, axis=-1)
        ys, xs = np.nonzero(fill)
        w, h = s.truth["width"], s.truth["height"]
        assert (round((xs.max() - xs.min() + 2) / CELL), round((ys.max() - ys.min() + 2) / CELL)) == (w, h)
        kind = "area" if "area" in s.prompt else "perimeter"
        kinds.add(kind)
        assert s.truth["answer"] == (w * h if kind == "area" else 2 * (w + h))
        answer = f"<|begin_of_box|>{s.truth['answer']}<|end_of_box|>"
        assert s.target.startswith("<think>") and s.target.endswith(answer)
    assert kinds == {"area", "perimeter"}


def test_pattern_is_determined_by_the_row():
    for i in range(40):
        s = sample("pattern", "test", i)
        row = s.truth["row"]
        period = next(p for p in (2, 3) if all(row[k] == row[k % p] for k in range(len(row))))
        assert len(row) >= 2 * period and len(set(row[:period])) == period
        assert s.truth["answer"] == row[len(row) - period]


def test_noise_windows_are_deterministic_and_cover_large_images():
    a = noise(np.random.default_rng(5), 300, 520)
    assert a.shape == (300, 520, 3) and a.dtype == np.float32
    assert np.array_equal(a, noise(np.random.default_rng(5), 300, 520))
    assert 0.9 < float(a.std()) < 1.1


@pytest.mark.parametrize("task", ["ocr", "ocr_line"])
def test_rotated_text_is_never_clipped(task):
    for i in range(80):
        pixels = np.asarray(sample(task, "train", i).image).astype(int)
        ink = (pixels < 120).all(axis=-1)  # ink is darker than 90 per channel; paper and its noise far lighter
        assert ink.any()
        assert not (ink[0].any() or ink[-1].any() or ink[:, 0].any() or ink[:, -1].any()), i
    with pytest.raises(ValueError):  # a view of the shared bank: writing into it would change later samples
        noise(np.random.default_rng(5), 8, 8)[0, 0, 0] = 1.0
