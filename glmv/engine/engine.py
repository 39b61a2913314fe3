"""The generation loop: batched prefill, then decode steps until every sequence stops.

One `Engine` owns the model, its KV cache layout and the vision cache. `run(seqs)` takes prepared sequences
(prompt ids + media embeddings + sampling params), prefills them together (left-padded), and yields per step
the tokens each sequence produced; finished sequences leave the batch (their cache rows are dropped).
Multi-turn reuse (`prefill_from`) lets a conversation keep its cache and prefill only new tokens.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from glmv.engine.sampling import Sampler, SamplingParams
from glmv.engine.vision_cache import VisionCache
from glmv.errors import ContextLengthError, InputError
from glmv.model.cache import KVCache
from glmv.model.glm4v import GlmvForConditionalGeneration, check_media_slots
from glmv.model.positions import continuation_positions, rope_index

log = logging.getLogger(__name__)


@dataclass
class Sequence:
    """One sequence being generated (a request with n > 1 becomes n sequences)."""

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
    budget: int = 0  # tokens it may generate (max_tokens capped by the context), set at prefill
    _generator: torch.Generator | None = field(default=None, repr=False)

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    def generator(self, device: torch.device | str = "cpu") -> torch.Generator | None:
        """This sequence's own RNG when its params have a seed (reproducible whatever the batch), else None."""
        if self.params.seed is None:
            return None
        if self._generator is None:
            # Wrapped to torch's unsigned 64-bit seed range, so seed + sample index never overflows.
            self._generator = torch.Generator(device).manual_seed((self.params.seed + self.seed_offset) % 2**64)
        return self._generator


@dataclass
class EngineStats:
    prefill_tokens: int = 0  # tokens run through the decoder as prompt (tests check reuse with this)
    decode_steps: int = 0


class Engine:
    def __init__(self, model: GlmvForConditionalGeneration, eos_token_ids: list[int], max_model_len: int | None = None):
        self.model = model
        self.eos_token_ids = list(eos_token_ids)
        self.max_model_len = max_model_len or model.config.text.max_position_embeddings
        self.vision = VisionCache(model)
        self.stats = EngineStats()
        self.sampler = Sampler()

    # --- helpers ------------------------------------------------------------------------------------------------
    def new_cache(self, batch: int, capacity: int) -> KVCache:
        t = self.model.config.text
        return KVCache(t.num_hidden_layers, batch, t.num_key_value_heads, t.head_dim, capacity, self.model.dtype, self.model.device)

    def check_length(self, seq: Sequence) -> int:
        """The number of tokens this sequence may still generate; ContextLengthError if the prompt cannot fit."""
        n = len(seq.prompt_ids)
        if n == 0:
            raise InputError("the prompt is empty: give at least one message or token")
        if n >= self.max_model_len:
            raise ContextLengthError(
                f"the prompt is {n} tokens, but the model's context is {self.max_model_len} tokens; "
                "shorten the prompt, send fewer or smaller images/videos, or lower their max_pixels"
            )
        return min(seq.params.max_tokens, self.max_model_len - n)

    def check(self, seq: Sequence) -> int:
        """check_length, plus the checks a prefill would fail on, run for this one sequence: its media
        placeholders (typed as the model types them) match its media and grids. A request that would fail is
        refused alone, before it joins a batch with others."""
        budget = self.check_length(seq)
        ids = torch.tensor([seq.prompt_ids])
        types = self.model.token_types(ids)
        check_media_slots(types, seq.image_embeds, seq.video_embeds)
        rope_index(types, _grid(seq.image_grids, "cpu"), _grid(seq.video_grids, "cpu"), None,
                   self.model.config.vision.spatial_merge_size)
        return budget

    def _stop(self, seq: Sequence, token: int, budget: int) -> None:
        p = seq.params
        stop_ids = p.stop_token_ids if p.stop_token_ids is not None else self.eos_token_ids
        if not p.ignore_eos and token in stop_ids and len(seq.output_ids) >= p.min_tokens:
            seq.finish_reason = "stop"
        elif len(seq.output_ids) >= budget:
            seq.finish_reason = "length"

    # --- the loop -----------------------------------------------------------------------------------------------
    @torch.inference_mode()
    def prefill(self, seqs: list[Sequence], cache: KVCache | None = None, prefix_len: int = 0) -> Batch:
        """Run the prompts of `seqs` (left-padded together) and return the batch, ready to sample.

        With `cache` (batch 1, holding the first `prefix_len` prompt tokens already), only the rest is prefilled.
        """
        budgets = [self.check_length(s) for s in seqs]
        device = self.model.device
        b = len(seqs)
        if cache is not None and b != 1:
            raise ValueError("prefix reuse runs one sequence at a time")
        lengths = [len(s.prompt_ids) for s in seqs]
        n = max(lengths)
        ids = torch.zeros((b, n), dtype=torch.long)
        mask = torch.zeros((b, n), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, n - lengths[i] :] = torch.tensor(s.prompt_ids)
            mask[i, n - lengths[i] :] = 1
        ids, mask = ids.to(device), mask.to(device)
        igrid = _grid([g for s in seqs for g in s.image_grids], device)
        vgrid = _grid([g for s in seqs for g in s.video_grids], device)
        types = self.model.token_types(ids)
        positions, deltas = rope_index(types, igrid, vgrid, mask, self.model.config.vision.spatial_merge_size)

        if cache is None:
            cache = self.new_cache(b, n + max(budgets))
        else:
            cache.grow(n + max(budgets))
        # With a reused prefix the cache already holds tokens [0, prefix_len); embeddings are needed only for
        # media whose placeholders lie in the new part.
        images = [e for s in seqs for e in s.image_embeds]
        videos = [e for s in seqs for e in s.video_embeds]
        new = slice(prefix_len, n)
        if prefix_len:
            images = _media_after(types[0], 1, prefix_len, images)
            videos = _media_after(types[0], 2, prefix_len, videos)
        out = self.model(
            ids[:, new], attention_mask=mask, mm_token_type_ids=types[:, new], position_ids=positions[:, :, new],
            cache=cache, image_embeds=images, video_embeds=videos, logits_to_keep=1,
        )
        self.stats.prefill_tokens += int(mask[:, new].sum())
        for s, budget in zip(seqs, budgets):
            s.budget = budget
        return Batch(list(seqs), cache, mask, deltas, mask.sum(1), out.logits[:, -1].float())

    def sample(self, batch: Batch) -> list[tuple[Sequence, int]]:
        """Pick each row's next token from the batch's logits; sets finish_reason on eos / stop ids / budget."""
        tokens, logprobs = self.sampler(batch.logits, batch.seqs)
        batch.tokens = tokens
        step = []
        for j, seq in enumerate(batch.seqs):
            token = int(tokens[j])
            seq.output_ids.append(token)
            if logprobs is not None:
                seq.logprobs.append(logprobs[j])
            self._stop(seq, token, seq.budget)
            step.append((seq, token))
        return step

    @torch.inference_mode()
    def advance(self, batch: Batch) -> bool:
        """Drop finished rows and feed the sampled tokens of the others; False when nothing is left."""
        keep = [j for j, seq in enumerate(batch.seqs) if not seq.finished]
        if not keep:
            batch.seqs = []
            return False
        if len(keep) < len(batch.seqs):
            batch.keep(keep)
        batch.mask = torch.cat([batch.mask, batch.mask.new_ones(len(batch.seqs), 1)], dim=1)
        pos = continuation_positions(batch.deltas, batch.real, 1)
        step_ids = batch.tokens.view(-1, 1).to(self.model.device)
        text = torch.zeros_like(step_ids)  # generated tokens are text, whatever their id
        out = self.model(step_ids, attention_mask=batch.mask, mm_token_type_ids=text, position_ids=pos, cache=batch.cache)
        batch.logits = out.logits[:, -1].float()
        batch.real = batch.real + 1
        self.stats.decode_steps += 1
        return True

    def run(self, seqs: list[Sequence], cache: KVCache | None = None, prefix_len: int = 0) -> Iterator[list[tuple[Sequence, int]]]:
        """Generate for `seqs` together; yields [(sequence, new token id), ...] after every step. The caller may
        set a sequence's finish_reason (stop string, cancellation) before resuming; its row is then dropped."""
        batch = self.prefill(seqs, cache, prefix_len)
        while True:
            yield self.sample(batch)
            if not self.advance(batch):
                return


@dataclass
class Batch:
    """Sequences decoding together: their KV cache rows, padding mask [B, T], rope deltas and real lengths [B],
    the logits of their next token [B, V] and, after sampling, the sampled tokens [B]."""

    seqs: list[Sequence]
    cache: KVCache
    mask: torch.Tensor
    deltas: torch.Tensor
    real: torch.Tensor
    logits: torch.Tensor
    tokens: torch.Tensor | None = None

    def keep(self, rows: list[int]) -> None:
        self.cache.select(rows)
        idx = torch.tensor(rows, dtype=torch.long, device=self.mask.device)
        self.seqs = [self.seqs[j] for j in rows]
        self.mask, self.deltas, self.real, self.logits = self.mask[idx], self.deltas[idx], self.real[idx], self.logits[idx]
        if self.tokens is not None:
            self.tokens = self.tokens[idx.to(self.tokens.device)]

    def merge(self, other: "Batch") -> None:
        """Add `other`'s rows (freshly prefilled, not yet sampled: call between advance() and sample()).
        Both caches are right-aligned to the longer one, the shorter padded on the left."""
        length = max(self.cache.length, other.cache.length)
        room = max([s.budget - len(s.output_ids) for s in self.seqs + other.seqs] + [1])
        self.cache = KVCache.concat([self.cache, other.cache], length, length + room)
        pad = lambda m: torch.cat([m.new_zeros(m.shape[0], length - m.shape[1]), m], dim=1)
        self.mask = torch.cat([pad(self.mask), pad(other.mask)])
        self.seqs = self.seqs + other.seqs
        self.deltas = torch.cat([self.deltas, other.deltas])
        self.real = torch.cat([self.real, other.real])
        self.logits = torch.cat([self.logits, other.logits])


def _grid(grids: list[tuple[int, int, int]], device: torch.device | str) -> torch.Tensor | None:
    return torch.tensor(grids, device=device) if grids else None


def _media_after(types: torch.Tensor, kind: int, start: int, embeds: list[torch.Tensor]) -> list[torch.Tensor]:
    """Embeddings of the media (of `kind`) whose placeholder runs lie at or after `start`; the reused prefix never
    ends inside a run (see session.reusable_prefix)."""
    before = int((types[:start] == kind).sum())
    out, seen = [], 0
    for e in embeds:
        if seen >= before:
            out.append(e)
        seen += e.shape[0]
    return out
