"""Variety and the heldout split: plain samples exactly as they were, every wording and renderer variant reachable
in training with variety, the held-out look and wordings never, and the heldout split behind `evaluate` and
`glmv eval --split heldout`."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import string
from functools import lru_cache

import numpy as np
import pytest

import glmv.world.evaluate as world_evaluate
from glmv.cli import main
from glmv.world import TASKS, sample
from glmv.world.core import sample_in_style, style_for
from glmv.world.draw import Painter, canvas
from glmv.world.evaluate import evaluate
from glmv.world.scenes import scene
from glmv.world.style import HELDOUT_LOOK, LOOKS, PLAIN, PLAIN_STYLE, Look, Style, held_out
from glmv.world.wordings import CLOSERS, HELDOUT_WORDING, N_WORDINGS, OPENERS, PLACES, WORDINGS

# Test-split samples 0-3 of every task, hashed (digest below) with the generators as they were before variety
# existed. The bundled model's accuracy floors (tests/test_bundled_model.py) are measured on these samples. A
# Pillow or numpy release that rasterises differently would change them too: then re-check the floors.
PLAIN_TEST = {
    "attribute": "93eee329e924ca12", "caption": "060734d944ae67ca", "chart_diff": "ab832dacd6c0246b",
    "chart_json": "221b0d2a1841735e", "chart_pie": "205ef25d3d8b6287", "chart_value": "b3be0820adc962b9",
    "color": "da9567b2c1d8bffb", "count": "8c5f502691249991", "count_hard": "2e1f735424b18a1c",
    "count_more": "566da4f807d1f4ff", "count_sum": "b070a863f6582c6b", "dialogue": "b558ac3b64b94693",
    "doc_form": "b3d748c5c1a9f3bd", "doc_receipt": "12f8caef289869dc", "doc_table": "d99a4d988baf9e54",
    "geometry": "168915cd4d503fa2", "ground": "974595a861709ff1", "ground_all": "cdb6d4c5d4cdc325",
    "gui_action": "0ae338c4225022d5", "ocr": "6c1b508751b616c8", "ocr_line": "42480e75e28276f1",
    "pattern": "accfa87548870a72", "point": "327aa253e116bb5f", "relation": "7fb2fee385ac054c",
    "retrieve_caption": "2108221334091dc7", "retrieve_image": "e8ca0e01e2b1d6bb", "shape": "e0bd353099347493",
    "video_count": "8f386dcf7de99e55", "video_disappear": "8c7d7f78fd0f7443", "video_events": "db1f542f6832ed2f",
    "video_motion": "d379e8558914bf0b", "video_order": "b24b433978f7d19c", "video_time": "3ba1a61796381133",
}
N_TRAIN, N_HELDOUT = 200, 40


def digest(samples) -> str:
    """Everything a model sees and is taught: message roles, part order, texts, pixels, and the target."""
    h = hashlib.sha256()
    for s in samples:
        for m in s.messages():
            h.update(m["role"].encode())
            parts = [{"type": "text", "text": m["content"]}] if isinstance(m["content"], str) else m["content"]
            for p in parts:
                h.update(p["type"].encode())
                if p["type"] == "text":
                    h.update(p["text"].encode())
                else:
                    for frame in [p["image"]] if p["type"] == "image" else p["video"]:
                        h.update(frame.tobytes())
        h.update(s.target.encode())
    return h.hexdigest()[:16]


def alternatives(options) -> str:
    return "(?:" + "|".join(re.escape(o) for o in options) + ")"


def template_regex(template: str) -> re.Pattern:
    """A wording as a pattern: its literal text with any slot values (and the numbered options that retrieval
    appends on the following lines), in any framing: an opener, a closer, any place phrase for its own."""
    place = re.compile("|".join(PLACES[1:]))
    parts = ["".join(re.escape(piece) if i % 2 == 0 else alternatives(PLACES[1:])
                     for i, piece in enumerate(re.split(f"({place.pattern})", text)))
             + ("(.+?)" if slot is not None else "") for text, slot, _, _ in string.Formatter().parse(template)]
    return re.compile(alternatives(OPENERS) + "".join(parts) + alternatives(CLOSERS) + r"(\n.*)?", re.S)


PATTERNS = {(key, w): template_regex(t) for key, ts in WORDINGS.items() for w, t in enumerate(ts)}


def wordings_of(text: str) -> set[int]:
    """The wording indices whose template (of any question) the text is."""
    return {w for (_, w), pattern in PATTERNS.items() if pattern.fullmatch(text)}


def user_texts(s) -> list[str]:
    return [p["text"] for m in s.messages() if m["role"] == "user" for p in m["content"] if p["type"] == "text"]


@lru_cache(maxsize=None)
def drawn(task: str, split: str, n: int, variety: float = 0.0) -> tuple[tuple, ...]:
    """(digest, style, user texts) of the first n samples; kept small so every test of a task shares one pass."""
    return tuple((digest([s]), s.style, tuple(user_texts(s)))
                 for s in (sample(task, split, i, variety) for i in range(n)))


@pytest.mark.parametrize("task", sorted(PLAIN_TEST))
def test_plain_test_split_is_unchanged(task):
    samples = [sample(task, "test", i) for i in range(4)]
    assert digest(samples) == PLAIN_TEST[task]
    assert all(s.style == PLAIN_STYLE for s in samples)


def test_wordings_table():
    for key, templates in WORDINGS.items():
        assert len(templates) == N_WORDINGS >= 6 and len(set(templates)) == N_WORDINGS, key
        slots = [{name for _, name, _, _ in string.Formatter().parse(t) if name} for t in templates]
        assert all(s == slots[0] for s in slots), (key, slots)  # every wording fills the same slots


@pytest.mark.parametrize("task", sorted(TASKS))
def test_heldout_split_is_disjoint_from_training(task):
    train, heldout = drawn(task, "train", N_TRAIN, 1.0), drawn(task, "heldout", N_HELDOUT)
    assert not {d for d, _, _ in train} & {d for d, _, _ in heldout}
    for _, style, texts in train:
        assert style.wording != HELDOUT_WORDING and not held_out(style.look)
        assert all(HELDOUT_WORDING not in wordings_of(t) for t in texts), texts
    for _, style, texts in heldout:
        assert style.look == HELDOUT_LOOK and style.wording == HELDOUT_WORDING
        assert all(HELDOUT_WORDING in wordings_of(t) for t in texts), texts


@pytest.mark.parametrize("task", sorted(TASKS))
def test_every_training_wording_is_reachable(task):
    """Each of the non-held-out wordings shows up in training with variety, and the prompt really is that
    wording (the generator asks through the style)."""
    seen = set()
    for _, style, texts in drawn(task, "train", N_TRAIN, 1.0):
        assert all(style.wording in wordings_of(t) for t in texts), (style.wording, texts)
        seen.add(style.wording)
    assert seen == set(range(N_WORDINGS)) - {HELDOUT_WORDING}


@pytest.mark.parametrize("task", sorted(TASKS))
def test_scorers_ignore_the_wording(task):
    """Targets score 1 in every look and wording, and a scorer never reads the prompt."""
    t = TASKS[task]
    for s in [sample(task, "train", i, 1.0) for i in range(6)] + [sample(task, "heldout", i) for i in range(3)]:
        assert t.score(s.target, s) == 1.0 and t.reward(s.target, s) == 1.0
        reworded = dataclasses.replace(s, prompt="An unrelated question?")
        assert t.score(s.target, reworded) == 1.0 and t.reward(s.target, reworded) == 1.0


def test_every_renderer_variant_is_reachable_and_the_heldout_combination_is_not():
    looks = [style_for("ground", "train", i, 1.0).look for i in range(3000)]
    for axis, variants in LOOKS.items():
        assert {getattr(look, axis) for look in looks} == set(variants), axis
    assert PLAIN == Look(**{axis: variants[0] for axis, variants in LOOKS.items()})  # the original look is a variant
    assert PLAIN_STYLE in {style_for("ground", "train", i, 0.5) for i in range(20)}  # and variety < 1 keeps it
    assert not any(held_out(look) for look in looks)
    assert any(look.background == HELDOUT_LOOK.background for look in looks)  # each half of it is seen alone
    assert any(look.blur == HELDOUT_LOOK.blur for look in looks)
    assert held_out(HELDOUT_LOOK) and not held_out(PLAIN)


@pytest.mark.parametrize("axis,variant", [(a, v) for a, vs in LOOKS.items() for v in vs[1:]])
def test_every_variant_changes_the_picture(axis, variant):
    """Each non-plain variant of each axis, alone, draws a scene differently from the plain look."""
    look = dataclasses.replace(PLAIN, **{axis: variant})
    changed = 0
    for i in range(4):
        plain, varied = sample("ground", "train", i), sample_in_style("ground", "train", i, Style(look))
        assert TASKS["ground"].score(varied.target, varied) == 1.0
        changed += plain.image.size != varied.image.size or plain.image.tobytes() != varied.image.tobytes()
    assert changed >= 3


def saturated_box(img) -> list[float]:
    """The 0-1000 box of the strongly coloured pixels (the shape's fill; backgrounds and noise are pale)."""
    a = np.asarray(img).astype(int)
    ys, xs = np.nonzero(a.max(axis=2) - a.min(axis=2) > 100)
    h, w = a.shape[:2]
    return [xs.min() / w * 1000, ys.min() / h * 1000, (xs.max() + 1) / w * 1000, (ys.max() + 1) / h * 1000]


@pytest.mark.parametrize("antialias", [False, True])
def test_turned_shapes_have_the_box_that_was_drawn(antialias):
    """A turned (and anti-aliased) shape's ground-truth box is where its pixels are, within a pixel or two."""
    look = dataclasses.replace(PLAIN, rotation=15.0, antialias=antialias, outline="none")
    turned = 0
    for i in range(16):
        style = Style(look, rng=np.random.default_rng(i))
        img, [o] = scene(np.random.default_rng(100 + i), style, 1)
        got = saturated_box(img)
        assert all(abs(g - b) <= 2.5 / min(img.size) * 1000 for g, b in zip(got, o["box"])), (o, got)
        turned += o["shape"] in ("square", "diamond", "triangle")
    assert turned >= 8


def test_antialiasing_blends_edges_and_leaves_the_rest_alone():
    red, box = (215, 40, 40), (30.5, 40.2, 70.5, 80.2)
    blends = {}
    for antialias in (False, True):
        img = canvas(np.random.default_rng(0), PLAIN_STYLE, 112, 112)
        before = np.asarray(img).copy()
        Painter(img, Style(dataclasses.replace(PLAIN, antialias=antialias))).shape("circle", box, red)
        after = np.asarray(img)
        outside = np.ones(before.shape[:2], bool)
        outside[38:84, 28:74] = False
        assert (after[outside] == before[outside]).all()
        changed = (after != before).any(axis=2)
        blends[antialias] = int((changed & (after != red).any(axis=2)).sum())  # neither paper nor red
    assert blends[False] == 0 and blends[True] > 40


def test_same_arguments_same_sample_and_variety_only_adds():
    for task in ("ground", "video_order", "doc_form", "dialogue"):
        for split, variety in (("train", 1.0), ("validation", 0.5), ("heldout", 0.0)):
            again = [sample(task, split, i, variety) for i in range(6)]
            assert drawn(task, split, 6, variety) == tuple((digest([s]), s.style, tuple(user_texts(s))) for s in again)
        some, full = drawn(task, "train", 30, 0.3), drawn(task, "train", 30, 1.0)
        varied = [(a, b) for a, b in zip(some, full) if a[1] != PLAIN_STYLE]
        assert 0 < len(varied) < 30 and all(a == b for a, b in varied)  # a sample varied at 0.3 is the same at 1.0
        plain = drawn(task, "train", 30)
        assert all(a == p for a, p in zip(some, plain) if a[1] == PLAIN_STYLE)


def test_question_position_follows_the_style():
    first = next(s for s in (sample("count", "train", i, 1.0) for i in range(50)) if s.style.text_first)
    assert [p["type"] for p in first.messages()[0]["content"]] == ["text", "image"]
    talk = next(s for s in (sample("dialogue", "train", i, 1.0) for i in range(50)) if s.style.text_first)
    assert [p["type"] for p in talk.messages()[0]["content"]] == ["text", "image"]
    video = next(s for s in (sample("video_count", "train", i, 1.0) for i in range(50)) if s.style.text_first)
    assert [p["type"] for p in video.messages()[0]["content"]] == ["text", "video"]
    assert [p["type"] for p in sample("count", "heldout", 0).messages()[0]["content"]] == ["image", "text"]


def test_evaluate_on_the_heldout_split():
    seen = []

    def answer(batch):
        seen.extend(batch)
        return [s.target for s in batch]

    results = evaluate(answer, ["color", "video_time"], split="heldout", limit=3, progress=False)
    assert results["split"] == "heldout" and results["score"] == 1.0
    assert len(seen) == 6 and all(s.split == "heldout" and s.style.wording == HELDOUT_WORDING for s in seen)


def test_cli_eval_split_heldout(monkeypatch, tmp_path):
    loads = []

    def backend(*args, **kwargs):  # stands in for loading a model: right on held-out samples only
        loads.append(args)
        return lambda batch: [s.target if s.split == "heldout" else "" for s in batch]

    monkeypatch.setattr(world_evaluate, "glmv_backend", backend)
    out = tmp_path / "results.json"
    assert main(["eval", "--split", "heldout", "--tasks", "color,ocr", "--limit", "2", "--out", str(out)]) == 0
    results = json.loads(out.read_text())
    assert results["split"] == "heldout" and results["score"] == 1.0
    assert main(["eval", "--split", "nope", "--tasks", "color"]) == 1
    assert len(loads) == 1  # the unknown split failed before a model would have loaded


@pytest.mark.parametrize("task", ["color", "count", "ocr"])
def test_framing_is_task_independent(task):
    """Every opener, closer and place phrase shows up with every task in training with variety (so none of
    them tells which task is asked), and the plain and held-out styles are never framed."""
    styles = [style for _, style, _ in drawn(task, "train", N_TRAIN, 1.0) if style != PLAIN_STYLE]
    assert {s.opener for s in styles} == set(OPENERS) and {s.closer for s in styles} == set(CLOSERS)
    assert {s.place for s in styles} == set(PLACES)
    assert all(not (s.opener or s.closer or s.place) for _, s, _ in drawn(task, "heldout", N_HELDOUT))
    assert all(
        o.strip() not in t for o in OPENERS[1:] + CLOSERS[1:] for t in
        (templates[HELDOUT_WORDING] for templates in WORDINGS.values()))
