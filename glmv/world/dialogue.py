"""Multi-turn dialogue over one scene of shapes: earlier questions and answers, then a last question.

Half of the last questions are follow-ups ("Where is it?") about the object of the previous turn, so they can
only be answered from the history. The earlier turns live in `truth["history"]` and DialogueSample.messages()
renders them as real user/assistant turns (the image rides on the first user turn).
"""

from __future__ import annotations

import numpy as np

from glmv.world import scoring
from glmv.world.core import Sample, register
from glmv.world.draw import boxed
from glmv.world.scenes import scene
from glmv.world.style import Style


class DialogueSample(Sample):
    def messages(self) -> list[dict]:
        history = self.truth["history"]
        questions = [q for q, _ in history] + [self.prompt]
        msgs = [{"role": "user", "content": self.user_content(questions[0])}]
        for (_, answer), question in zip(history, questions[1:]):
            msgs += [{"role": "assistant", "content": answer},
                     {"role": "user", "content": [{"type": "text", "text": question}]}]
        return msgs


def questions(objects: list[dict], style: Style) -> list[tuple[str, str, object, dict | None]]:
    """Every standalone question the scene answers unambiguously: (question, kind, answer, object or None).
    A scene of 2-3 distinct (colour, shape) pairs always has at least three."""
    pool: list[tuple[str, str, object, dict | None]] = [(style.ask("count"), "number", len(objects), None)]
    for o in objects:
        if sum(p["shape"] == o["shape"] for p in objects) == 1:
            pool.append((style.ask("color", shape=o["shape"]), "text", o["colour"], o))
        if sum(p["colour"] == o["colour"] for p in objects) == 1:
            pool.append((style.ask("shape_of", colour=o["colour"]), "text", o["shape"], o))
    return pool


def follow_up(rng: np.random.Generator, style: Style, o: dict) -> tuple[str, str, object]:
    pick = rng.integers(2)
    if pick == 0:
        return style.ask("where_it"), "box", o["box"]
    return style.ask("side_it"), "text", "left" if o["box"][0] + o["box"][2] < 1000 else "right"


def answer_target(kind: str, answer) -> str:
    return boxed(str(answer).replace(" ", "") if kind == "box" else str(answer))


def _score(out: str, s: Sample) -> float:
    kind, answer = s.truth["kind"], s.truth["answer"]
    if kind == "box":
        return float(scoring.box_iou(out, answer) >= 0.5)
    return scoring.numeric(out, answer) if kind == "number" else scoring.text_match(out, answer)


def _reward(out: str, s: Sample) -> float:
    return scoring.box_reward(out, s.truth["answer"]) if s.truth["kind"] == "box" else _score(out, s)


@register("dialogue", "dialogue", _score, _reward, sample_type=DialogueSample)
def dialogue(rng, style):
    img, objects = scene(rng, style, int(rng.integers(2, 4)))
    pool = questions(objects, style)
    asked = [pool[i] for i in rng.permutation(len(pool))[:int(rng.integers(2, 4))]]  # no question twice
    history = [[q, answer_target(kind, answer)] for q, kind, answer, _ in asked[:-1]]
    about = asked[-2][3]
    if about is not None and rng.integers(2):
        q, kind, answer = follow_up(rng, style, about)
    else:
        q, kind, answer, _ = asked[-1]
    return dict(image=img, prompt=q, target=answer_target(kind, answer),
                truth={"history": history, "kind": kind, "answer": answer, "objects": objects})
