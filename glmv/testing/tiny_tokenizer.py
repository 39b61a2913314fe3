"""A tiny byte-level BPE tokenizer with every GLM-V special token, and small processor configs, for tests.

The special tokens sit at scattered, non-GLM ids in reverse order, so code that hard-codes GLM ids fails.
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer

from glmv.inputs.processor_config import write_processor_configs  # noqa: F401  (re-exported for tests)
from glmv.train.tokenizer import ALL_SPECIAL, build_bpe_tokenizer, write_tokenizer

TINY_VOCAB_SIZE = 512

_CORPUS = """The quick brown fox jumps over the lazy dog. What kind of dog is this? Describe this image in detail.
A red square, a blue circle and a green triangle are on a white background. How many objects are there?
There are 3 objects: 1 square, 1 circle and 1 triangle. The answer is 42. Count the cars in the picture.
Help me to locate the cat in the image and give me its bounding boxes. [[120, 340, 560, 780]]
Please describe the video. The man walks to the left, then turns around and waves at the camera.
What is written on the sign? It says "STOP". Read the chart and output JSON: {"year": 2024, "value": 3.5}
You are a helpful assistant. Think step by step, then give the final answer. seconds minutes hours
0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 30 40 50 60 70 80 90 100 0.5 1.0 2.0 12.0 seconds
click(start_box='[100,200]') type(content='hello world') scroll down up left right yes no true false null
The weather in Paris is sunny and warm today, with a light breeze from the west in the afternoon.
"""


def _special_ids() -> dict[str, int]:
    # Reverse order, every 16th id from 30: nothing near GLM's 151329.. and not in GLM's order.
    return {name: 30 + 16 * k for k, name in enumerate(reversed(ALL_SPECIAL))}


def build_tiny_tokenizer() -> tuple[Tokenizer, dict[str, int]]:
    """The tokenizer object and its {special token: id} map (deterministic)."""
    return build_bpe_tokenizer(_CORPUS.splitlines(), TINY_VOCAB_SIZE, _special_ids())


def make_tiny_tokenizer(path: str | Path) -> dict[str, int]:
    """Write tokenizer.json + tokenizer_config.json into ``path``; return {token: id} for all GLM special tokens."""
    tok, special = build_tiny_tokenizer()
    write_tokenizer(tok, special, path)
    return special
