"""Samples, deterministic seeding and the task registry of glmv's procedural world.

Every sample is a pure function of (task, split, index): its RNG is seeded from the split's seed space, the
task name and the index, so the same triple always gives byte-identical media and text, and the train /
validation / test splits draw from disjoint seed streams.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from glmv.errors import InputError

SPLITS = {"train": 0x7A11, "validation": 0x5E1F, "test": 0x7E57}


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

    def messages(self) -> list[dict]:
        """The user turn in the OpenAI/HF message shape glmv.Processor takes."""
        content: list[dict] = []
        if self.image is not None:
            content.append({"type": "image", "image": self.image})
        if self.frames:
            content.append({"type": "video", "video": [np.asarray(f) for f in self.frames], "fps": self.fps})
        content.append({"type": "text", "text": self.prompt})
        return [{"role": "user", "content": content}]

    def train_messages(self) -> list[dict]:
        return self.messages() + [{"role": "assistant", "content": self.target}]


Generator = Callable[[np.random.Generator], dict]  # rng -> Sample fields (prompt, target, truth, image/frames)


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


def rng_for(task: str, split: str, index: int) -> np.random.Generator:
    if split not in SPLITS:
        raise InputError(f"unknown split {split!r}; use one of {sorted(SPLITS)}")
    return np.random.default_rng([SPLITS[split], zlib.crc32(task.encode()), index])


def sample(task: str, split: str, index: int) -> Sample:
    """The `index`-th sample of `task` in `split` (deterministic)."""
    from glmv.world import tasks  # noqa: F401  (registers every task family)

    if task not in TASKS:
        raise InputError(f"unknown task {task!r}; known tasks: {', '.join(sorted(TASKS))}")
    t = TASKS[task]
    return t.sample_type(task=task, split=split, index=index, **t.generate(rng_for(task, split, index)))
