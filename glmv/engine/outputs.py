"""Outputs shaped like vLLM's, and parsing of GLM-V's output conventions.

GLM-V answers as `<think>reasoning</think>answer`, final answers and grounding boxes inside
`<|begin_of_box|>…<|end_of_box|>`, boxes as [x1, y1, x2, y2] in thousandths of the image width/height.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
BOX_OPEN, BOX_CLOSE = "<|begin_of_box|>", "<|end_of_box|>"
_NUM = r"\s*(-?(?:\d+(?:\.\d*)?|\.\d+))\s*"
BOX_PATTERN = re.compile(r"[\[\(<]" + ",".join([_NUM] * 4) + r"[\]\)>]")


def _call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


@dataclass
class ToolCall:
    """One function call the model made, as OpenAI's `tool_calls` entries carry it (`arguments`: a JSON object
    as text)."""

    name: str
    arguments: str
    id: str = field(default_factory=_call_id)
    type: str = "function"

    def to_openai(self) -> dict:
        return {"id": self.id, "type": self.type, "function": {"name": self.name, "arguments": self.arguments}}


@dataclass
class CompletionOutput:
    """One sample of a request, as vLLM shapes it, plus GLM-V's reasoning / content / tool calls / boxed answer /
    boxes."""

    index: int
    text: str
    token_ids: list[int]
    finish_reason: str | None  # "stop" (eos, stop token or stop string), "length", "abort"; None while running
    stop_reason: int | str | None = None  # the stop token id or stop string that ended it; None for eos/length
    logprobs: list[dict[int, float]] | None = None  # per generated token: {token id: logprob}
    cumulative_logprob: float | None = None  # sum of the chosen tokens' logprobs; filled in from logprobs
    reasoning: str | None = None  # the <think> content; None when the model did not think
    content: str = ""  # the answer: the text outside the <think> block and outside tool calls
    tool_calls: list[ToolCall] = field(default_factory=list)  # parsed when the request had tools
    answer: str | None = None  # the last boxed answer, if any
    boxes: list[list[float]] = field(default_factory=list)  # in pixels of the image they refer to (see LLM)

    def __post_init__(self) -> None:
        if self.cumulative_logprob is None and self.logprobs:
            self.cumulative_logprob = sum(lp[t] for lp, t in zip(self.logprobs, self.token_ids))


@dataclass
class RequestOutput:
    """A request's samples, with the prompt and token usage (vLLM's shape)."""

    request_id: str
    prompt: str
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput]
    finished: bool = True
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0

    @property
    def usage(self) -> dict:
        """OpenAI's usage object; cached_tokens: prompt tokens whose keys/values came from the prefix cache."""
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "total_tokens": self.prompt_tokens + self.completion_tokens,
                "prompt_tokens_details": {"cached_tokens": self.cached_tokens}}


def opens_think(prompt: str) -> bool:
    """Whether a prompt leaves a <think> block open (some GLM templates start the answer inside it), so the
    completion starts inside the reasoning."""
    return prompt.rstrip().endswith(THINK_OPEN)


def held_prefix(text: str, tag: str) -> int:
    """Length of the longest tail of `text` that is a proper prefix of `tag`: what a stream parser holds back
    until the next delta says whether the tag follows."""
    return next((k for k in range(len(tag) - 1, 0, -1) if text.endswith(tag[:k])), 0)


def parse_reasoning(text: str, in_think: bool = False) -> tuple[str | None, str]:
    """Split a completion into (reasoning, content).

    reasoning: what lies between the first <think> and the first </think> after it, stripped; None when there is
    no <think> block; "" for an empty block (<think></think>: thinking was switched off); everything after
    <think> when the block is never closed (the content is then only what came before it).
    content: the text outside the block, with the leading whitespace of the completion and of the part after
    </think> removed (the model writes "\n" after </think>); later tags are left in the content as they are.
    in_think: the prompt already opened the block, so the text starts inside it.
    ReasoningStreamParser gives the same split, delta by delta.
    """
    if in_think:
        before, rest = "", THINK_OPEN + text
    else:
        open_at = text.find(THINK_OPEN)
        if open_at < 0:
            return None, text.lstrip()
        before, rest = text[:open_at], text[open_at:]
    rest = rest[len(THINK_OPEN) :]
    close_at = rest.find(THINK_CLOSE)
    if close_at < 0:
        return rest.strip(), before.lstrip()
    return rest[:close_at].strip(), before.lstrip() + rest[close_at + len(THINK_CLOSE) :].lstrip()


def extract_answer(content: str) -> str | None:
    """The content of the last <|begin_of_box|>…<|end_of_box|> (an unclosed box runs to the end), or None."""
    start = content.rfind(BOX_OPEN)
    if start < 0:
        return None
    rest = content[start + len(BOX_OPEN) :]
    end = rest.find(BOX_CLOSE)
    return (rest if end < 0 else rest[:end]).strip()


def parse_number(s: str) -> float | int:
    v = float(s)
    return int(v) if v.is_integer() else v


def parse_boxes(text: str) -> list[list[float]]:
    """Every [x1,y1,x2,y2] in the text, whatever the brackets: [..], [[..]], [[..],[..]], (..), <..>."""
    return [[parse_number(g) for g in m.groups()] for m in BOX_PATTERN.finditer(text)]


def boxes_to_pixels(boxes: list[list[float]], width: int, height: int) -> list[list[int]]:
    """Boxes in thousandths of the image (GLM-V's convention) -> pixel boxes [left, top, right, bottom] of a
    width x height image, clamped to it, corners ordered whichever way the model wrote them."""
    out = []
    for x1, y1, x2, y2 in boxes:
        xs = sorted(min(max(round(v / 1000 * width), 0), width) for v in (x1, x2))
        ys = sorted(min(max(round(v / 1000 * height), 0), height) for v in (y1, y2))
        out.append([xs[0], ys[0], xs[1], ys[1]])
    return out


class ReasoningStreamParser:
    """parse_reasoning for streamed text: feed() the deltas, get (reasoning delta, content delta) back.

    A tag split across deltas is recognised: text that could be the start of the next tag is held back until
    the following delta (or `final`) decides. The concatenated deltas equal parse_reasoning(full text,
    in_think), with reasoning None shown as "".
    """

    def __init__(self, in_think: bool = False):
        self.state = "think" if in_think else "before"  # "before" -> "think" -> "after"
        self.pending = ""  # raw text that may be the start of a tag
        self.reasoning_ws = ""  # trailing whitespace of the reasoning so far: dropped if the block ends here
        self.strip_reasoning = True  # the next reasoning text starts the block: drop its leading whitespace
        self.strip_content = True  # the next content text starts the completion or follows </think>

    def feed(self, delta: str, final: bool = False) -> tuple[str, str]:
        """-> (reasoning delta, content delta); with `final` (no more text will come), nothing is held back."""
        text, self.pending = self.pending + delta, ""
        reasoning, content = [], []
        while self.state != "after":
            tag = THINK_CLOSE if self.state == "think" else THINK_OPEN
            at = text.find(tag)
            if at < 0:
                keep = 0 if final else held_prefix(text, tag)
                text, self.pending = text[: len(text) - keep], text[len(text) - keep :]
                break
            if self.state == "think":
                reasoning.append(self._reasoning(text[:at]))
                self.reasoning_ws, self.strip_content, self.state = "", True, "after"
            else:
                content.append(self._content(text[:at]))
                self.state = "think"
            text = text[at + len(tag) :]
        (reasoning if self.state == "think" else content).append(
            self._reasoning(text) if self.state == "think" else self._content(text))
        return "".join(reasoning), "".join(content)

    def _reasoning(self, text: str) -> str:
        if self.strip_reasoning:
            text = text.lstrip()
            self.strip_reasoning = not text
        text = self.reasoning_ws + text
        body = text.rstrip()
        self.reasoning_ws = text[len(body) :]
        return body

    def _content(self, text: str) -> str:
        if self.strip_content:
            text = text.lstrip()
            self.strip_content = not text
        return text
