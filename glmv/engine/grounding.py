"""Grounding and counting: GLM-V's boxes as typed results in pixels, and overlays that draw them.

GLM-V writes a box as [x1, y1, x2, y2] in thousandths of the image's width and height, usually inside
`<|begin_of_box|>…<|end_of_box|>`, one box or a list of them, in whatever brackets (glmv.engine.outputs).

Which image a box refers to, when the prompt has several: the last one (the image just before the question,
as CompletionOutput.boxes assumes), unless the answer names one before the box — "Image 2", "image 2:",
"picture 2", "the second image", "the last image". A reference holds for every box after it until the next
one; a reference to an image the prompt does not have is ignored. Indices in results count from 0.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from PIL import Image, ImageDraw, ImageFont

from glmv.engine.outputs import (
    BOX_CLOSE,
    BOX_OPEN,
    BOX_PATTERN,
    THINK_CLOSE,
    boxes_to_pixels,
    extract_answer,
    parse_number,
    parse_reasoning,
)
from glmv.errors import InputError

if TYPE_CHECKING:
    from glmv.engine.sampling import SamplingParams

# GLM-V's own grounding request (GLM-V README); counting asks for the boxes too, so the count can be checked.
GROUND_PROMPT = "Help me to locate {phrase} in the image and give me its bounding boxes."
COUNT_PROMPT = "How many {phrase} are there in the image? Locate each one with its bounding box, then give the number."

ORDINALS = ("first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth")
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
                "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty")
_IMAGE_REFERENCE = re.compile(r"\b(?:image|picture|img)\s*#?\s*(\d+)\b"  # "Image 2", "picture #2"
                              r"|\b(?:the\s+)?(" + "|".join(ORDINALS + ("last",)) + r")\s+(?:image|picture)\b",
                              re.IGNORECASE)
_COUNT = re.compile(r"\b(\d+|" + "|".join(NUMBER_WORDS) + r")\b", re.IGNORECASE)
_BOX_SPAN = re.compile(re.escape(BOX_OPEN) + r"(.*?)(?:" + re.escape(BOX_CLOSE) + r"|$)", re.DOTALL)

# Saturated colours that stand out on photos and on the world's pale backgrounds; box k gets colour k mod 8.
BOX_COLOURS = ((255, 0, 255), (0, 200, 255), (255, 140, 0), (0, 200, 0), (230, 0, 0), (40, 80, 255),
               (255, 215, 0), (140, 0, 220))


@dataclass
class Box:
    """One box of an answer: `box_1000` as the model wrote it in thousandths (corners ordered, clipped to
    0..1000), `pixels` (left, top, right, bottom) in the image it refers to (None when its size is unknown)."""

    label: str | None
    box_1000: tuple[float, float, float, float]
    pixels: tuple[int, int, int, int] | None
    image_index: int


@dataclass
class Grounding:
    """Where `phrase` is: its boxes, the model's full text and its boxed answer (None when it boxed nothing)."""

    phrase: str
    boxes: list[Box] = field(default_factory=list)
    text: str = ""
    answer: str | None = None


@dataclass
class Count:
    """How many `phrase` there are (None when the answer says no number and has no boxes), with the boxes."""

    phrase: str
    count: int | None
    boxes: list[Box] = field(default_factory=list)
    text: str = ""


def answer_content(text: str) -> str:
    """The answer of a completion: what follows its reasoning. A completion whose prompt opened <think> has a
    </think> but no <think>: the answer is then what follows the last </think>."""
    _, content = parse_reasoning(text)
    return content.rsplit(THINK_CLOSE, 1)[-1]


def _image_references(answer: str, n_images: int) -> list[tuple[int, int]]:
    """(position, 0-based image index) of each reference to an image the prompt has."""
    refs = []
    for m in _IMAGE_REFERENCE.finditer(answer):
        number, ordinal = m.group(1), m.group(2)
        if ordinal:
            ordinal = ordinal.lower()
            index = n_images - 1 if ordinal == "last" else ORDINALS.index(ordinal)
        else:
            index = int(number) - 1
        if 0 <= index < n_images:
            refs.append((m.start(), index))
    return refs


def _box_matches(answer: str) -> list[re.Match]:
    """The boxes of an answer. When some are inside box tokens, only those: the model often describes its boxes
    in the text and then boxes the same ones as its final answer."""
    found = list(BOX_PATTERN.finditer(answer))
    spans = [m.span(1) for m in _BOX_SPAN.finditer(answer)]
    boxed = [m for m in found if any(start <= m.start() and m.end() <= end for start, end in spans)]
    return boxed or found


def _ordered_clipped(values: Sequence[str]) -> tuple[float, float, float, float]:
    x1, y1, x2, y2 = (min(max(parse_number(v), 0), 1000) for v in values)
    return min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)


def find_boxes(text: str, sizes: Sequence[tuple[int, int]] = (), label: str | None = None) -> list[Box]:
    """Every box in the answer of a completion (its reasoning left out; see _box_matches for box tokens), each
    mapped to the pixels of the image it refers to. sizes: (width, height) of the prompt's images in order;
    empty when unknown (then `pixels` is None and `image_index` 0)."""
    answer = answer_content(text)
    refs = _image_references(answer, len(sizes))
    boxes = []
    for m in _box_matches(answer):
        box = _ordered_clipped(m.groups())
        index = next((i for at, i in reversed(refs) if at < m.start()), len(sizes) - 1 if sizes else 0)
        pixels = tuple(boxes_to_pixels([list(box)], *sizes[index])[0]) if sizes else None
        boxes.append(Box(label, box, pixels, index))
    return boxes


def parse_count(text: str, boxes: Sequence[Box] | None = None) -> int | None:
    """The count an answer gives: the integer (or number word: "three") of its boxed answer, else the last one
    in its text, box coordinates and image references left out; else the number of its boxes; else None."""
    answer = answer_content(text)
    for part in (extract_answer(answer), answer):
        if part is None:
            continue
        words = _COUNT.findall(_IMAGE_REFERENCE.sub(" ", BOX_PATTERN.sub(" ", part)))
        if words:
            last = words[-1].lower()
            return int(last) if last.isdigit() else NUMBER_WORDS.index(last)
    return len(find_boxes(text) if boxes is None else boxes) or None


def _ask(llm, images: Any, prompt: str, phrase: str, sampling_params: SamplingParams | None,
         enable_thinking: bool | None) -> tuple[str, list[tuple[int, int]]]:
    """The model's answer to `prompt` about the image(s), and the images' sizes."""
    # Imported here: the parser above is also the world's box scorer, which must not pull in torch.
    from glmv.engine.sampling import SamplingParams
    from glmv.inputs.media import load_image

    if not phrase.strip():
        raise InputError("give a phrase to look for, e.g. 'the red circle'")
    if "{phrase}" not in prompt:
        raise InputError(f"the prompt must hold a {{phrase}} slot, got {prompt!r}")
    # Loaded here (within the model's limits) so the boxes map to the sizes the model was shown.
    loaded = [load_image(i, llm.processor.limits) for i in (images if isinstance(images, (list, tuple)) else [images])]
    content = [{"type": "image", "image": i} for i in loaded] + [{"type": "text", "text": prompt.format(phrase=phrase)}]
    params = sampling_params or SamplingParams(temperature=0, max_tokens=1024)  # greedy, room to think first
    out = llm.chat([{"role": "user", "content": content}], params, enable_thinking=enable_thinking)[0].outputs[0]
    return out.text, [i.size for i in loaded]


def ground(llm, image: Any, phrase: str, sampling_params: SamplingParams | None = None,
           enable_thinking: bool | None = None, prompt: str = GROUND_PROMPT) -> Grounding:
    """Ask the model where `phrase` is in the image (a path, URL, PIL image, array; a list for several images)
    with GLM-V's grounding wording; boxes come back in pixels of the image they refer to, labelled `phrase`."""
    text, sizes = _ask(llm, image, prompt, phrase, sampling_params, enable_thinking)
    return Grounding(phrase, find_boxes(text, sizes, phrase), text, extract_answer(answer_content(text)))


def count(llm, image: Any, phrase: str, sampling_params: SamplingParams | None = None,
          enable_thinking: bool | None = None, prompt: str = COUNT_PROMPT) -> Count:
    """Ask the model how many `phrase` (plural: "red circles") the image shows, and where they are."""
    text, sizes = _ask(llm, image, prompt, phrase, sampling_params, enable_thinking)
    boxes = find_boxes(text, sizes, phrase)
    return Count(phrase, parse_count(text, boxes), boxes, text)


def draw_boxes(image: Image.Image, boxes: Sequence[Sequence[int]],
               labels: Sequence[str | None] | None = None) -> Image.Image:
    """A copy of the image with each pixel box (left, top, right, bottom; right/bottom exclusive) outlined in
    its own colour, the outline inside the box, and its label (if any) on a tab of that colour above it (inside
    the top of the box when there is no room above)."""
    out = image.convert("RGB")  # a copy, whatever the mode
    draw = ImageDraw.Draw(out)
    width = max(2, min(out.size) // 150)
    font = ImageFont.load_default(size=max(10, min(out.size) // 30))
    labels = list(labels or [])
    for k, (left, top, right, bottom) in enumerate(boxes):
        label = labels[k] if k < len(labels) else None
        colour = BOX_COLOURS[k % len(BOX_COLOURS)]
        draw.rectangle((left, top, max(left, right - 1), max(top, bottom - 1)), outline=colour, width=width)
        if label:
            x0, y0, x1, y1 = draw.textbbox((0, 0), label, font=font)
            tab_h = y1 - y0 + 4
            y = top - tab_h if top >= tab_h else top + width
            draw.rectangle((left, y, left + x1 - x0 + 4, y + tab_h - 1), fill=colour)
            dark_text = 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2] > 140  # legible on yellow/cyan
            draw.text((left + 2 - x0, y + 2 - y0), label, fill=(0, 0, 0) if dark_text else (255, 255, 255), font=font)
    return out
