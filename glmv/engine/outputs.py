"""Outputs shaped like vLLM's, and parsing of GLM-V's output conventions.

GLM-V answers as `<think>reasoning</think>answer`, final answers and grounding boxes inside
`<|begin_of_box|>…<|end_of_box|>`, boxes as [x1, y1, x2, y2] in thousandths of the image width/height.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
BOX_OPEN, BOX_CLOSE = "<|begin_of_box|>", "<|end_of_box|>"
_NUM = r"\s*(-?\d+(?:\.\d+)?)\s*"
_BOX = re.compile(r"[\[\(<]" + ",".join([_NUM] * 4) + r"[\]\)>]")


@dataclass
class CompletionOutput:
    index: int
    text: str
    token_ids: list[int]
    finish_reason: str | None  # "stop" (eos, stop token or stop string), "length", "abort"
    logprobs: list[dict[int, float]] | None = None
    reasoning: str | None = None  # the <think> content; None when the model did not think
    answer: str | None = None  # the last boxed answer, if any
    boxes: list[list[float]] = field(default_factory=list)  # in pixels of the first image when there is one


@dataclass
class RequestOutput:
    request_id: str
    prompt: str
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput]
    finished: bool = True
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def usage(self) -> dict[str, int]:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "total_tokens": self.prompt_tokens + self.completion_tokens}


def parse_reasoning(text: str) -> tuple[str | None, str]:
    """Split `text` into (reasoning, content). No think tags: (None, text). An unclosed <think>: everything after
    it is reasoning and the content is empty. A lone </think> (the prompt opened the block): what precedes it is
    reasoning. Empty <think></think> gives reasoning "" (thinking was switched off)."""
    open_at = text.find(THINK_OPEN)
    close_at = text.find(THINK_CLOSE, open_at + len(THINK_OPEN) if open_at >= 0 else 0)
    if open_at < 0 and close_at < 0:
        return None, text.strip()
    if open_at < 0:
        return text[:close_at].strip(), text[close_at + len(THINK_CLOSE) :].strip()
    before = text[:open_at]
    if close_at < 0:
        return text[open_at + len(THINK_OPEN) :].strip(), before.strip()
    reasoning = text[open_at + len(THINK_OPEN) : close_at]
    return reasoning.strip(), (before + text[close_at + len(THINK_CLOSE) :]).strip()


def extract_answer(content: str) -> str | None:
    """The content of the last <|begin_of_box|>…<|end_of_box|> (an unclosed box runs to the end), or None."""
    start = content.rfind(BOX_OPEN)
    if start < 0:
        return None
    rest = content[start + len(BOX_OPEN) :]
    end = rest.find(BOX_CLOSE)
    return (rest if end < 0 else rest[:end]).strip()


def _number(s: str) -> float | int:
    v = float(s)
    return int(v) if v.is_integer() else v


def parse_boxes(text: str) -> list[list[float]]:
    """Every [x1,y1,x2,y2] in the text, whatever the brackets: [..], [[..]], [[..],[..]], (..), <..>."""
    return [[_number(g) for g in m.groups()] for m in _BOX.finditer(text)]


def boxes_to_pixels(boxes: list[list[float]], width: int, height: int) -> list[list[int]]:
    """Boxes in thousandths of the image (GLM-V's convention) -> pixel boxes of a width x height image."""
    out = []
    for x1, y1, x2, y2 in boxes:
        xs = [min(max(round(v / 1000 * width), 0), width) for v in (x1, x2)]
        ys = [min(max(round(v / 1000 * height), 0), height) for v in (y1, y2)]
        out.append([xs[0], ys[0], xs[1], ys[1]])
    return out


class ReasoningStreamParser:
    """Split streamed text into (reasoning, content) deltas; the tags may arrive split across deltas."""

    def __init__(self, in_think: bool = False):
        self.in_think = in_think  # True when the prompt itself opened <think>
        self.pending = ""

    def feed(self, delta: str, final: bool = False) -> tuple[str, str]:
        """-> (reasoning delta, content delta); with `final`, nothing is held back."""
        self.pending += delta
        parts: dict[bool, list[str]] = {True: [], False: []}
        while True:
            tag = THINK_CLOSE if self.in_think else THINK_OPEN
            at = self.pending.find(tag)
            if at < 0:
                break
            parts[self.in_think].append(self.pending[:at])
            self.pending = self.pending[at + len(tag) :]
            self.in_think = not self.in_think
        # hold back a tail that could be the beginning of the next tag
        keep = 0 if final else next((k for k in range(len(tag) - 1, 0, -1) if self.pending.endswith(tag[:k])), 0)
        parts[self.in_think].append(self.pending[: len(self.pending) - keep])
        self.pending = self.pending[len(self.pending) - keep :]
        return "".join(parts[True]), "".join(parts[False])
