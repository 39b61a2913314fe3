"""A scripted answer for a real request: the tiny random model cannot write a tool call or a <think> block, so a
test swaps a request's detokenizers for scripts and runs everything else (engine, parsing, server) for real.

    request.detoks = [ScriptedDetokenizer(pieces("<think>hm</think>Hi")) for _ in request.seqs]
"""

from __future__ import annotations

import random
from collections.abc import Iterator


def pieces(text: str, size: int = 3) -> list[str]:
    """`text` cut every `size` characters: the deltas a streamed answer would arrive in."""
    return [text[i : i + size] for i in range(0, len(text), size)]


def random_cut_texts(pieces: list[str], count: int, max_pieces: int, seed: int = 0) -> Iterator[tuple[str, list[int]]]:
    """`count` texts made of up to `max_pieces` random pieces, each with up to 6 sorted cut points: the inputs of
    "a streamed parse equals the whole parse" tests."""
    rng = random.Random(seed)
    for _ in range(count):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, max_pieces)))
        yield text, sorted(rng.sample(range(len(text) + 1), min(len(text) + 1, rng.randint(0, 6))))


class ScriptedDetokenizer:
    """Stands in for a sample's detokenizer: whatever token comes, it 'decodes' to the next piece of the script;
    the end of generation (flush) releases the rest, so the sample's text is the whole script however it ends."""

    def __init__(self, script: list[str]):
        self.script = list(script)

    def add(self, token_id: int) -> str:
        return self.script.pop(0) if self.script else ""

    def flush(self) -> str:
        rest, self.script = "".join(self.script), []
        return rest
