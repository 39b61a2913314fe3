"""Samples, deterministic seeding and the task registry of glmv's procedural world.

Every sample is a pure function of (task, split, index, variety): its RNG is seeded from the split's seed space,
the task name and the index, so the same arguments always give byte-identical media and text, and the train /
validation / test / heldout splits draw from disjoint seed streams. How a sample looks and how its question is
worded is its Style (glmv.world.style), drawn from a stream of its own.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from PIL import Image

from glmv.errors import InputError
from glmv.world.style import HELDOUT_STYLE, PLAIN, PLAIN_STYLE, Style, develop, develop_frames, varied_style

SPLITS = {"train": 0x7A11, "validation": 0x5E1F, "test": 0x7E57, "heldout": 0x4E1D}
# Extra seed words: choosing a sample's style and drawing its look each have a stream of their own, so neither
# shifts the draws that decide the sample's content.
STYLE_STREAM, LOOK_STREAM = 0x5717, 0x100C


@dataclass
class Sample:
    task: str
    split: str
    index: int
    prompt: str
    target: str  # exactly what the model should answer (GLM conventions: <think>, boxed answers)
    truth: dict[str, Any]  # structured ground truth the scorer uses
    image: Image.Image | None = None
    frames: list[Image.Image] = field(default_factory=list)  # a video, at `fps`
    fps: float = 2.0
    style: Style = PLAIN_STYLE  # how it was drawn and worded

    def user_content(self, text: str) -> list[dict]:
        """The sample's media and `text`, in the order its style puts them."""
        media: list[dict] = []
        if self.image is not None:
            media.append({"type": "image", "image": self.image})
        if self.frames:
            media.append({"type": "video", "video": [np.asarray(f) for f in self.frames], "fps": self.fps})
        question = [{"type": "text", "text": text}]
        return question + media if self.style.text_first else media + question

    def messages(self) -> list[dict]:
        """The user turn in the OpenAI/HF message shape glmv.Processor takes."""
        return [{"role": "user", "content": self.user_content(self.prompt)}]

    def train_messages(self) -> list[dict]:
        return self.messages() + [{"role": "assistant", "content": self.target}]


Generator = Callable[[np.random.Generator, Style], dict]  # (rng, style) -> prompt, target, truth, image/frames


@dataclass(frozen=True)
class Task:
    name: str
    family: str
    generate: Generator
    score: Callable[[str, Sample], float]  # 1.0 = right; used for evaluation
    reward: Callable[[str, Sample], float]  # in [0, 1], dense where possible; used by RL
    thinking: bool = False  # its targets carry a reasoning trace
    sample_type: type[Sample] = Sample  # a family whose samples need their own messages() (dialogue history)


TASKS: dict[str, Task] = {}


def register(name: str, family: str, score, reward=None, thinking: bool = False, sample_type: type[Sample] = Sample):
    """Decorator: add a generator to the registry under `name`."""
    def wrap(fn: Generator) -> Generator:
        TASKS[name] = Task(name, family, fn, score, reward or score, thinking, sample_type)
        return fn
    return wrap


def _seed(task: str, split: str, index: int) -> list[int]:
    if split not in SPLITS:
        raise InputError(f"unknown split {split!r}; use one of {sorted(SPLITS)}")
    return [SPLITS[split], zlib.crc32(task.encode()), index]


def rng_for(task: str, split: str, index: int) -> np.random.Generator:
    """The stream that decides a sample's content."""
    return np.random.default_rng(_seed(task, split, index))


def style_for(task: str, split: str, index: int, variety: float = 0.0) -> Style:
    """The style of a sample: held-out for the heldout split; else, with probability `variety`, a varied one
    (never held-out), otherwise plain. The coin is the style stream's first draw, so raising `variety` only
    adds varied samples: a sample varied at 0.3 looks the same at 1.0."""
    if split == "heldout":
        return HELDOUT_STYLE
    if variety <= 0:
        return PLAIN_STYLE  # no RNG made: plain samples cost what they always did
    rng = np.random.default_rng(_seed(task, split, index) + [STYLE_STREAM])
    return varied_style(rng) if rng.random() < variety else PLAIN_STYLE


def sample(task: str, split: str, index: int, variety: float = 0.0) -> Sample:
    """The `index`-th sample of `task` in `split` (deterministic). `variety` (0..1): the fraction of samples
    drawn in a random look and wording (a training recipe's knob); 0 gives the plain samples every split has
    always had. The heldout split ignores it: all its samples are held-out."""
    return sample_in_style(task, split, index, style_for(task, split, index, variety))


def sample_in_style(task: str, split: str, index: int, style: Style) -> Sample:
    """The `index`-th sample of `task` in `split`, drawn and worded in `style` (its content is the plain
    sample's unless the look changes the geometry). What the look draws at random (textures, angles) comes
    from the sample's look stream, whatever RNG `style` carries, so the same arguments give the same sample."""
    from glmv.world import tasks  # noqa: F401  (registers every task family)

    if task not in TASKS:
        raise InputError(f"unknown task {task!r}; known tasks: {', '.join(sorted(TASKS))}")
    t = TASKS[task]
    if style.rng is not None:
        style = replace(style, rng=None)  # the sample records its style, not an RNG it used up
    drawing = style if style.look == PLAIN else \
        replace(style, rng=np.random.default_rng(_seed(task, split, index) + [LOOK_STREAM]))
    fields = t.generate(rng_for(task, split, index), drawing)
    if style.look != PLAIN:
        if fields.get("image") is not None:
            fields["image"] = develop(fields["image"], style.look)
        fields["frames"] = develop_frames(fields.get("frames", []), style.look)
    return t.sample_type(task=task, split=split, index=index, style=style, **fields)
