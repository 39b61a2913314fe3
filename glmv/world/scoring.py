"""Scorers and rewards for the world's tasks. Every scorer takes raw model output (reasoning, box tokens,
code fences and all) and never raises: malformed output scores 0."""

from __future__ import annotations

import json
import re

from glmv.agent.actions import Box
from glmv.agent.parse import parse_action
from glmv.engine.grounding import find_boxes
from glmv.engine.outputs import extract_answer, parse_reasoning
from glmv.errors import InputError


def answer_text(output: str) -> str:
    """The answer part of an output: the last boxed answer if any, else the content after any reasoning."""
    _, content = parse_reasoning(output)
    boxed = extract_answer(content)
    return (boxed if boxed is not None else content).strip()


def normalise(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def exact(output: str, expected: str) -> float:
    return float(answer_text(output) == expected)


def text_match(output: str, expected: str) -> float:
    """Case, punctuation and spacing insensitive."""
    return float(normalise(answer_text(output)) == normalise(expected))


def char_similarity(output: str, expected: str) -> float:
    """1 - normalised edit distance: a dense reward for OCR-like answers."""
    a, b = normalise(answer_text(output)), normalise(expected)
    if not a and not b:
        return 1.0
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return max(0.0, 1 - prev[-1] / max(len(a), len(b)))


def number(output: str) -> float | None:
    found = re.findall(r"-?\d+(?:\.\d+)?", answer_text(output))
    return float(found[-1]) if found else None


def numeric(output: str, expected: float, tolerance: float = 0.0) -> float:
    value = number(output)
    return float(value is not None and abs(value - expected) <= tolerance + 1e-9)


def _overlap(a: list[float], b: list[float]) -> tuple[float, float]:
    """(intersection, union) areas of two [x1, y1, x2, y2] boxes."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter, (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter


def iou(a: list[float], b: list[float]) -> float:
    inter, union = _overlap(a, b)
    return inter / union if union > 0 else 0.0


def _first_box(output: str) -> list[float] | None:
    """The answer's first box, read as LLM.ground reads them (glmv.engine.grounding.find_boxes): any bracket
    style, those inside box tokens when there are some, the reasoning left out, corners ordered, clipped to
    0..1000; None when there is no well-formed one."""
    boxes = find_boxes(output)
    return boxes[0].box_1000 if boxes else None


def box_iou(output: str, expected: list[float]) -> float:
    """IoU of the first box of the answer with the expected one (0 without one)."""
    box = _first_box(output)
    return 0.0 if box is None else iou(box, expected)


BOX_FORMAT = 0.25  # the share of a box reward earned by a well-formed box


def box_reward(output: str, expected: list[float]) -> float:
    """A dense RL reward for one box: FORMAT + (1 - FORMAT) * (GIoU + 1) / 2 of the first box read, 0 when no
    well-formed box is read. Plain IoU is 0 for every box that misses, so a group of misses has no advantage to
    learn from (the stop-24 policy answered a constant [8,8,8,8]); GIoU (Rezatofighi et al., 2019) still ranks a
    miss by how far off it is, and the format share keeps a malformed answer well below any box (without it, a
    far box earned ~0.1 against 0 and RL left 11 of 30 thinking answers malformed, stop 25)."""
    a, b = _first_box(output), expected
    if a is None:
        return 0.0
    inter, union = _overlap(a, b)
    hull = (max(a[2], b[2]) - min(a[0], b[0])) * (max(a[3], b[3]) - min(a[1], b[1]))
    giou = (inter / union if union > 0 else 0.0) - ((hull - union) / hull if hull > 0 else 0.0)
    return BOX_FORMAT + (1 - BOX_FORMAT) * (giou + 1) / 2


def boxes_f1(output: str, expected: list[list[float]], threshold: float = 0.5) -> float:
    """F1 of the output's boxes against the expected set: each expected box matches at most one output box
    with IoU >= threshold (greedy, best pairs first), so extra, missing and misplaced boxes all cost."""
    got = [b.box_1000 for b in find_boxes(output)]  # read as box_iou reads them
    if not got or not expected:
        return float(not got and not expected)
    pairs = sorted(((iou(g, e), i, j) for i, g in enumerate(got) for j, e in enumerate(expected)), reverse=True)
    used_g, used_e = set(), set()
    for value, i, j in pairs:
        if value < threshold:
            break
        if i not in used_g and j not in used_e:
            used_g.add(i)
            used_e.add(j)
    hits = len(used_e)
    return 2 * hits / (len(got) + len(expected))


def parse_json(output: str) -> dict | list | None:
    """The first JSON object/array in the output (code fences and surrounding text tolerated)."""
    text = answer_text(output)
    start = min((i for i in (text.find("{"), text.find("[")) if i >= 0), default=-1)
    if start < 0:
        return None
    try:
        value, _ = json.JSONDecoder().raw_decode(text[start:])
        return value
    except json.JSONDecodeError:
        return None


def _flatten(value, prefix: str = "") -> set[tuple[str, str]]:
    if isinstance(value, dict):
        return {kv for k, v in value.items() for kv in _flatten(v, f"{prefix}{k}.")}
    if isinstance(value, list):
        return {kv for i, v in enumerate(value) for kv in _flatten(v, f"{prefix}{i}.")}
    return {(prefix.rstrip("."), json.dumps(value))}


def json_f1(output: str, expected: dict | list) -> float:
    """Field-level F1: (path, value) pairs of the parsed output against those of the expected JSON."""
    got = parse_json(output)
    if got is None:
        return 0.0
    a, b = _flatten(got), _flatten(expected)
    hits = len(a & b)
    if not hits:
        return 0.0
    precision, recall = hits / len(a), hits / len(b)
    return 2 * precision * recall / (precision + recall)


def sequence_items(output: str) -> list[str]:
    return [normalise(x) for x in re.split(r",|;|\bthen\b|\n", answer_text(output)) if normalise(x)]


def order_match(output: str, expected: list[str]) -> float:
    """1 when the listed items are exactly the expected ones in the expected order."""
    return float(sequence_items(output) == [normalise(x) for x in expected])


def order_reward(output: str, expected: list[str]) -> float:
    """Fraction of positions that hold the right item (partial credit for RL)."""
    got, want = sequence_items(output), [normalise(x) for x in expected]
    return sum(g == w for g, w in zip(got, want)) / max(len(want), len(got), 1)


def action_iou(output: str, expected: dict) -> float:
    """A GUI-agent action in the mobile JSON space ({"action_type", "box_2d": [[x1,y1,x2,y2]], "text"?}, read by
    glmv.agent.parse_action) against the expected one: the IoU of the boxes when the action type (and any typed
    text) is right, else 0."""
    try:
        got = parse_action(output, space="mobile")
    except InputError:
        return 0.0
    box = getattr(got, "target", None)
    if got.name != expected["action_type"] or not isinstance(box, Box):
        return 0.0
    if "text" in expected and normalise(getattr(got, "text", "")) != normalise(expected["text"]):
        return 0.0
    return iou(box.as_list(), expected["box_2d"][0])


def action_match(output: str, expected: dict) -> float:
    return float(action_iou(output, expected) >= 0.5)


def choice_letter(output: str) -> str | None:
    """The option letter of a multiple-choice answer: "B", "(B)", "B.", "B) cat", "Answer: B"."""
    text = answer_text(output).strip()
    found = re.match(r"^\(?([A-Z])\b", text) or re.search(r"[Aa]nswer(?: is)?\s*:?\s*\(?([A-Z])\b", text)
    return found.group(1).upper() if found else None


def letter_match(output: str, expected: str) -> float:
    return float(choice_letter(output) == expected)
