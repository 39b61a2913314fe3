"""Scorers on hand-made right, wrong and malformed answers."""

from __future__ import annotations

import pytest

from glmv.world import scoring


def test_answer_text_prefers_the_box_after_reasoning():
    assert scoring.answer_text("<think>it is 3</think>The answer is <|begin_of_box|>4<|end_of_box|>") == "4"
    assert scoring.answer_text("plain answer ") == "plain answer"


@pytest.mark.parametrize("out,expected,score", [
    ("<|begin_of_box|>Red<|end_of_box|>", "red", 1.0), ("red.", "red", 1.0), ("blue", "red", 0.0), ("", "red", 0.0),
])
def test_text_match(out, expected, score):
    assert scoring.text_match(out, expected) == score


def test_exact_is_case_sensitive():
    assert scoring.exact("<|begin_of_box|>WOLF<|end_of_box|>", "WOLF") == 1.0
    assert scoring.exact("<|begin_of_box|>wolf<|end_of_box|>", "WOLF") == 0.0


def test_numeric_with_tolerance_and_garbage():
    assert scoring.numeric("<|begin_of_box|>5<|end_of_box|>", 5) == 1.0
    assert scoring.numeric("about 6", 5, tolerance=1) == 1.0
    assert scoring.numeric("seven", 7) == 0.0


def test_box_iou_any_bracket_style():
    truth = [100, 100, 300, 300]
    assert scoring.box_iou("<|begin_of_box|>[100,100,300,300]<|end_of_box|>", truth) == 1.0
    assert scoring.box_iou("[[100, 100, 300, 300]]", truth) == 1.0
    assert scoring.box_iou("(200,100,400,300)", truth) == pytest.approx(1 / 3)
    assert scoring.box_iou("no box", truth) == 0.0


def test_box_reward_ranks_misses_and_refuses_malformed_boxes():
    truth = [100, 100, 300, 300]
    assert scoring.box_reward("<|begin_of_box|>[100,100,300,300]<|end_of_box|>", truth) == 1.0
    near, far = scoring.box_reward("[320,320,400,400]", truth), scoring.box_reward("[800,800,900,900]", truth)
    assert scoring.BOX_FORMAT < far < near < 0.6  # both miss (IoU 0), the nearer earns more
    assert scoring.box_reward("[150,150,350,350]", truth) > scoring.box_iou("[150,150,350,350]", truth)
    # a box broken by a stray box token is not read, and earns less than any well-formed box
    assert scoring.box_reward("<|begin_of_box|>[8,8,8,8<|begin_of_box|>6]<|end_of_box|>", truth) == 0.0
    assert scoring.box_reward("no box", truth) == 0.0


def test_json_f1_field_level_and_malformed():
    truth = {"A": 3, "B": 7, "C": 5}
    assert scoring.json_f1('```json\n{"A": 3, "B": 7, "C": 5}\n```', truth) == 1.0
    assert scoring.json_f1('{"A": 3, "B": 7}', truth) == pytest.approx(0.8)  # P=1, R=2/3
    assert scoring.json_f1('{"A": 3, "B": 7, "C": 5, "D": 1}', truth) == pytest.approx(6 / 7)
    assert scoring.json_f1('{"A": 3, "B": ', truth) == 0.0
    assert scoring.json_f1("no json here", truth) == 0.0


def test_order_match_and_partial_reward():
    order = ["red circle", "blue square", "green star"]
    assert scoring.order_match("red circle, blue square, green star", order) == 1.0
    assert scoring.order_match("blue square, red circle, green star", order) == 0.0
    assert scoring.order_reward("blue square, red circle, green star", order) == pytest.approx(1 / 3)
    assert scoring.order_reward("", order) == 0.0


def test_char_similarity():
    assert scoring.char_similarity("<|begin_of_box|>apple<|end_of_box|>", "apple") == 1.0
    assert scoring.char_similarity("appel", "apple") == pytest.approx(0.6)
