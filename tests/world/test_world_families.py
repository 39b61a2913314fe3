"""The document, GUI, dialogue and retrieval families: schemas, the GUI action scorer, dialogue history as real
turns, retrieval sets. (Determinism, split disjointness and self-scoring of every registered task, these
included, are in test_world_generators.py.)"""

from __future__ import annotations

import json

import numpy as np
import pytest

from glmv.world import TASKS, sample, scoring
from glmv.world.dialogue import DialogueSample
from glmv.world.retrieval import recall_at_1, retrieval_set

NEW = ("doc_receipt", "doc_form", "doc_table", "gui_action", "dialogue", "retrieve_caption", "retrieve_image")


@pytest.mark.parametrize("task", NEW)
def test_images_are_112_to_224_px(task):
    for i in range(10):
        w, h = sample(task, "train", i).image.size
        assert 112 <= w <= 224 and 112 <= h <= 224, (task, i, w, h)


def test_receipt_json_has_the_schema_and_adds_up():
    for i in range(10):
        s = sample("doc_receipt", "test", i)
        data = json.loads(s.target)
        assert data == s.truth["data"] and set(data) == {"store", "items", "total"}
        cents = sum(round(float(it["price"]) * 100) for it in data["items"])
        assert f"{cents // 100}.{cents % 100:02d}" == data["total"]


def test_form_and_table_targets_are_their_truth():
    form = sample("doc_form", "test", 3)
    assert json.loads(form.target) == form.truth["data"]
    assert all(k in form.prompt for k in form.truth["data"])
    table = sample("doc_table", "test", 3)
    rows = json.loads(table.target)
    assert rows == table.truth["data"] and all(set(r) == {"name", "qty", "price"} for r in rows)


def test_document_scores_are_field_level():
    s = sample("doc_receipt", "test", 0)
    wrong_total = dict(s.truth["data"], total="0.00")
    assert 0.5 < TASKS["doc_receipt"].score(json.dumps(wrong_total), s) < 1.0


def test_gui_target_is_the_glm_action_inside_box_tokens():
    kinds = set()
    for i in range(40):
        s = sample("gui_action", "test", i)
        assert s.target.startswith("<|begin_of_box|>{") and s.target.endswith("}<|end_of_box|>")
        action = json.loads(scoring.answer_text(s.target))
        assert action == s.truth["action"]
        (box,) = action["box_2d"]
        assert 0 <= box[0] < box[2] <= 999 and 0 <= box[1] < box[3] <= 999
        kinds.add(action["action_type"])
        labels = [e["label"] for e in s.truth["elements"]]
        assert len(labels) == len(set(labels))  # every instruction names exactly one element
    assert kinds == {"click", "input_text"}


def test_gui_scorer_needs_the_type_the_text_and_overlap():
    s = next(s for s in (sample("gui_action", "test", i) for i in range(50)) if "text" in s.truth["action"])
    x1, y1, x2, y2 = s.truth["action"]["box_2d"][0]
    score, reward = TASKS["gui_action"].score, TASKS["gui_action"].reward
    text = s.truth["action"]["text"]
    right = {"action_type": "input_text", "text": text, "box_2d": [[x1, y1, x2, y2]]}
    assert score(json.dumps(right), s) == 1.0  # no box tokens, spaces: still parsed
    assert score("Action: " + json.dumps({**right, "box_2d": [x1, y1, x2, y2]}), s) == 1.0  # a flat box too
    assert score(json.dumps({**right, "action_type": "click"}), s) == 0.0
    assert score(json.dumps({**right, "text": "nope"}), s) == 0.0
    half = {**right, "box_2d": [[x1, y1, x1 + (x2 - x1) / 2, y2]]}
    assert score(json.dumps(half), s) == 1.0 and reward(json.dumps(half), s) == pytest.approx(0.5, abs=0.01)
    shifted = {**right, "box_2d": [[x2, y1, 2 * x2 - x1, y2]]}
    assert score(json.dumps(shifted), s) == 0.0 and reward(json.dumps(shifted), s) == 0.0
    assert score(json.dumps({**right, "box_2d": "somewhere"}), s) == 0.0


def test_dialogue_history_becomes_real_turns():
    seen_follow_up = False
    for i in range(30):
        s = sample("dialogue", "test", i)
        assert isinstance(s, DialogueSample)
        msgs = s.messages()
        history = s.truth["history"]
        assert [m["role"] for m in msgs] == ["user", "assistant"] * len(history) + ["user"]
        assert msgs[0]["content"][0] == {"type": "image", "image": s.image}
        assert [m["content"] for m in msgs[1::2]] == [a for _, a in history]
        assert msgs[-1]["content"] == [{"type": "text", "text": s.prompt}]
        assert s.train_messages()[-1] == {"role": "assistant", "content": s.target}
        questions = [q for q, _ in history] + [s.prompt]
        assert len(set(questions)) == len(questions)
        seen_follow_up |= s.truth["kind"] == "box" or "it" in s.prompt.split()
    assert seen_follow_up


def test_retrieve_caption_has_one_true_caption():
    for i in range(10):
        s = sample("retrieve_caption", "test", i)
        captions = s.truth["captions"]
        assert len(set(captions)) == len(captions) >= 3
        assert "\n".join(f"{k}) {c}" for k, c in enumerate(captions, 1)) in s.prompt
    answers = {sample("retrieve_caption", "test", i).truth["answer"] for i in range(30)}
    assert answers == {1, 2, 3, 4} or answers == {1, 2, 3}  # the true caption's position is shuffled


def test_retrieval_set_is_deterministic_distinct_and_split_disjoint():
    images, captions = retrieval_set("test", 0, 6)
    assert len(images) == len(captions) == 6 and len(set(captions)) == 6
    again = retrieval_set("test", 0, 6)
    assert again[1] == captions and all(np.array_equal(a, b) for a, b in zip(images, again[0]))
    other = retrieval_set("train", 0, 6)
    assert not any(np.array_equal(a, b) for a in images for b in other[0] if a.size == b.size)


def test_recall_at_1():
    assert recall_at_1(np.eye(4)) == 1.0
    assert recall_at_1([[0, 1], [1, 0]]) == 0.0
    assert recall_at_1([[0.9, 0.1, 0.0], [0.8, 0.2, 0.0], [0.0, 0.1, 0.5]]) == pytest.approx(2 / 3)


@pytest.mark.parametrize("out,expected", [("B", "B"), ("(C)", "C"), ("<|begin_of_box|>D<|end_of_box|>", "D"),
                                          ("A. cat", "A"), ("The answer is: B", "B"), ("Bird", None), ("the answer is a cat", None), ("", None)])
def test_choice_letter(out, expected):
    assert scoring.choice_letter(out) == expected
