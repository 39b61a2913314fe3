"""One sequence being generated (a request with n > 1 is n sequences), as the scheduler and block manager see it.

Its tokens are the prompt followed by what it generated. `num_computed` of them have keys/values in the paged
cache (its `block_table` lists the blocks that hold them, block i holding tokens [i*bs, (i+1)*bs)). A preempted
sequence gives its blocks back and recomputes everything from its tokens when it is scheduled again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

import torch

from glmv.engine.sampling import SamplingParams
from glmv.model.positions import IMAGE, VIDEO


class Status(Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass
class Layout:
    """What the runner needs to feed any slice of a prompt: token types, 3D positions, media rows."""

    types: torch.Tensor  # [L] TEXT / IMAGE / VIDEO per prompt token
    positions: torch.Tensor  # [3, L] rotary positions of the prompt
    delta: int  # a token at index t past the prompt has position t + delta on every axis
    image_rows: torch.Tensor | None  # [image tokens, hidden]: the prompt's image features, in order
    video_rows: torch.Tensor | None  # [video tokens, hidden]
    image_before: list[int]  # image_before[t]: image tokens among the first t prompt tokens (length L + 1)
    video_before: list[int]
    # [3, D] positions of the generated tokens fed back, for a model with its own decode schedule (GLM-Image's
    # prior: glmv/image/positions.py); None: index + delta
    decode_positions: torch.Tensor | None = None


@dataclass(eq=False)  # compared by identity: the scheduler looks sequences up in its queues
class Sequence:
    prompt_ids: list[int]
    params: SamplingParams
    image_embeds: list[torch.Tensor] = field(default_factory=list)
    image_grids: list[tuple[int, int, int]] = field(default_factory=list)
    video_embeds: list[torch.Tensor] = field(default_factory=list)
    video_grids: list[tuple[int, int, int]] = field(default_factory=list)
    output_ids: list[int] = field(default_factory=list)
    logprobs: list[dict[int, float]] = field(default_factory=list)
    finish_reason: str | None = None
    seed_offset: int = 0  # sample index within its request, so n samples with one seed differ
    budget: int = 0  # tokens it may generate (max_tokens capped by the context), set when checked
    lora: str | None = None  # the served adapter it runs with (glmv/lora/serving.py); None: the base model
    # --- engine state ---
    status: Status = Status.WAITING
    block_table: list[int] = field(default_factory=list)
    num_computed: int = 0  # tokens whose keys/values are in the cache
    num_cached_tokens: int = 0  # prompt tokens found in the prefix cache when it was (last) admitted
    layout: Layout | None = field(default=None, repr=False)
    leader: "Sequence | None" = field(default=None, repr=False)  # sample 1 of its request, for samples 2..n
    error: BaseException | None = None  # why the engine failed this sequence alone
    # (output ids so far, next-token logits [V]) -> logits to sample from, applied before the sampler: a rule
    # the request's tokens must follow (GLM-Image's prior: only codebook ids until its grids are full, then EOS)
    logits_processor: Callable[[list[int], torch.Tensor], torch.Tensor] | None = field(default=None, repr=False)
    _generator: torch.Generator | None = field(default=None, repr=False)

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    def tokens(self, start: int, end: int) -> list[int]:
        """Tokens [start, end) of prompt + output, without building the whole list (a decode step asks for one)."""
        n = len(self.prompt_ids)
        return self.prompt_ids[min(start, n) : min(end, n)] + self.output_ids[max(start - n, 0) : max(end - n, 0)]

    def __len__(self) -> int:
        return len(self.prompt_ids) + len(self.output_ids)

    def generator(self, device: torch.device | str = "cpu") -> torch.Generator | None:
        """This sequence's own RNG when its params have a seed (reproducible whatever the batch), else None."""
        if self.params.seed is None:
            return None
        if self._generator is None:
            # Wrapped to torch's unsigned 64-bit seed range, so seed + sample index never overflows.
            self._generator = torch.Generator(device).manual_seed((self.params.seed + self.seed_offset) % 2**64)
        return self._generator

    # --- slices the runner feeds ---------------------------------------------------------------------------
    def types(self, start: int, end: int) -> torch.Tensor:
        """Token types of tokens [start, end): generated tokens are text, whatever their id."""
        lay = self.layout
        n = len(self.prompt_ids)
        return torch.cat([lay.types[min(start, n) : min(end, n)], torch.zeros(max(0, end - max(start, n)), dtype=torch.long)])

    def positions(self, start: int, end: int) -> torch.Tensor:
        """Rotary positions [3, end - start] of tokens [start, end)."""
        lay = self.layout
        n = len(self.prompt_ids)
        if lay.decode_positions is not None:
            after = lay.decode_positions[:, max(start, n) - n : max(end, n) - n]
            return torch.cat([lay.positions[:, min(start, n) : min(end, n)], after], dim=1)
        after = torch.arange(max(start, n), max(end, n)) + lay.delta
        return torch.cat([lay.positions[:, min(start, n) : min(end, n)], after.expand(3, -1)], dim=1)

    def media_rows(self, kind: int, start: int, end: int) -> torch.Tensor | None:
        """The image (kind IMAGE) or video-frame (VIDEO) features of the placeholders among tokens [start, end)."""
        lay = self.layout
        rows, before = (lay.image_rows, lay.image_before) if kind == IMAGE else (lay.video_rows, lay.video_before)
        n = len(self.prompt_ids)
        a, b = before[min(start, n)], before[min(end, n)]
        return rows[a:b] if rows is not None and b > a else None

    def block_content(self, start: int, end: int) -> bytes:
        """What decides the keys/values of tokens [start, end) besides the tokens before them: their ids and
        the features of the media placeholders among them (same text, other image: other content)."""
        h = hashlib.blake2b(digest_size=16)
        h.update(torch.tensor(self.tokens(start, end), dtype=torch.int64).numpy().tobytes())
        for kind in (IMAGE, VIDEO):
            rows = self.media_rows(kind, start, end)
            if rows is not None:
                h.update(rows.detach().to("cpu").contiguous().view(torch.uint8).numpy().tobytes())
        return h.digest()
