"""Training examples from the world: task mixing, chat formatting, loss masking, collation.

An example is the rendered prompt (user turn(s) with media, generation prompt) followed by the target the
model should write, ended by `<|user|>` (GLM ends an assistant turn by starting the next user turn; it is one
of the checkpoint's eos ids). Only target tokens carry loss: the prompt, the media placeholders and padding
are masked with -100.

Thinking format: with thinking on the prompt ends `<|assistant|>\n` and the target is
`<think>trace</think>\n` + answer; with it off the prompt ends `<|assistant|>\n<think></think>\n` (the user turn
carries `/nothink`) and the target is the answer alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from glmv.engine.outputs import parse_reasoning
from glmv.inputs.chat import normalize_messages
from glmv.inputs.image import ImageFeatures
from glmv.inputs.processor import Processor
from glmv.inputs.video import VideoFeatures
from glmv.train.recipe import Recipe

if TYPE_CHECKING:
    from glmv.world import Sample

IGNORE = -100
DEFAULT_TRACE = "Let me look at the image carefully."


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]
    images: list[ImageFeatures] = field(default_factory=list)
    videos: list[VideoFeatures] = field(default_factory=list)
    task: str = ""


def format_target(target: str, thinking: bool, trace: str | None = None) -> str:
    """The assistant text after the generation prompt, in the requested thinking mode."""
    reasoning, answer = parse_reasoning(target)
    if not thinking:
        return answer
    return f"<think>{reasoning or trace or DEFAULT_TRACE}</think>\n{answer}"


def encode_example(processor: Processor, messages: list[dict], target: str, thinking: bool,
                   trace: str | None = None, task: str = "") -> Example:
    """Tokenize one (messages, target) pair with loss only on the target and the end-of-turn token."""
    normalized, media = normalize_messages(messages)
    images, videos = processor.process_media(media)
    prompt = processor.render_chat(normalized, True, None, thinking)
    prompt_ids, _ = processor.encode_prompt(prompt, images, videos)
    tok = processor.tokenizer
    target_ids = tok.encode(format_target(target, thinking, trace)) + [tok.token_id("<|user|>")]
    return Example(prompt_ids + target_ids, [IGNORE] * len(prompt_ids) + target_ids, images, videos, task)


def collate(examples: list[Example], pad_id: int) -> dict[str, Any]:
    """Right-padded batch: input_ids/labels/attention_mask [B, L] and concatenated media rows + grids."""
    n = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), n), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), n), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), n), dtype=torch.long)
    for i, e in enumerate(examples):
        ids[i, : len(e.input_ids)] = torch.tensor(e.input_ids)
        labels[i, : len(e.labels)] = torch.tensor(e.labels)
        mask[i, : len(e.input_ids)] = 1
    images = [f for e in examples for f in e.images]
    videos = [f for e in examples for f in e.videos]
    return {
        "input_ids": ids, "labels": labels, "attention_mask": mask,
        "pixel_values": torch.cat([f.pixel_values for f in images]) if images else None,
        "image_grid_thw": torch.tensor([f.grid_thw for f in images]) if images else None,
        "pixel_values_videos": torch.cat([f.pixel_values for f in videos]) if videos else None,
        "video_grid_thw": torch.tensor([f.grid_thw for f in videos]) if videos else None,
    }


class Mixture:
    """Which (task, sample index) fills each slot of each step: weighted by task, a pure function of
    (seed, step), so a resumed run sees exactly the data an uninterrupted one would."""

    def __init__(self, weights: dict[str, float], seed: int = 0):
        total = sum(weights.values())
        self.tasks = sorted(weights)
        self.probs = np.array([weights[t] / total for t in self.tasks])
        self.seed = seed

    def draw(self, step: int, n: int, probs: np.ndarray | None = None) -> list[tuple[str, int]]:
        rng = np.random.default_rng([self.seed, step])
        picks = rng.choice(len(self.tasks), size=n, p=self.probs if probs is None else probs)
        return [(self.tasks[t], step * n + slot) for slot, t in enumerate(picks)]


def world_sample(recipe: Recipe, task: str, index: int) -> Sample:
    """The `index`-th training sample of `task`, in a random look and wording with the recipe's `variety`."""
    from glmv.world import sample

    return sample(task, "train", index, recipe.variety)
