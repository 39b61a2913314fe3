"""Sampling parameters (vLLM's names and meanings) and the batched sampler.

Order of processing, as in vLLM/transformers: penalties -> temperature -> top-k -> top-p -> min-p -> sample.
Every row of a batch may have its own parameters; a row with a seed draws from its own generator, so its
tokens do not depend on what else is in the batch. Logprobs are vLLM's default: from the raw model logits
(log_softmax before any processing).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from glmv.errors import InputError

if TYPE_CHECKING:
    from glmv.engine.engine import Sequence

GREEDY_BELOW = 1e-5  # temperatures under this are greedy, like vLLM


@dataclass
class SamplingParams:
    n: int = 1
    temperature: float = 1.0  # 0 = greedy
    top_p: float = 1.0
    top_k: int = 0  # 0 or -1 = off
    min_p: float = 0.0
    repetition_penalty: float = 1.0  # >1 discourages tokens already in prompt or output (CTRL rule)
    presence_penalty: float = 0.0  # OpenAI rule, over generated tokens: logit -= presence * [count > 0]
    frequency_penalty: float = 0.0  # ... and -= frequency * count
    seed: int | None = None
    max_tokens: int = 256
    min_tokens: int = 0
    stop: list[str] = field(default_factory=list)
    stop_token_ids: list[int] | None = None  # None: the checkpoint's eos ids
    ignore_eos: bool = False
    logprobs: int | None = None  # also return this many top logprobs per generated token
    skip_special_tokens: bool = True
    include_stop_str_in_output: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        self.stop = list(self.stop or [])
        if self.top_k == -1:
            self.top_k = 0
        checks = [
            (isinstance(self.n, int) and self.n >= 1, f"n must be an integer >= 1, got {self.n!r}"),
            (self.temperature >= 0, f"temperature must be >= 0, got {self.temperature}"),
            (0 < self.top_p <= 1, f"top_p must be in (0, 1], got {self.top_p}"),
            (isinstance(self.top_k, int) and self.top_k >= 0, f"top_k must be -1, 0 or a positive integer, got {self.top_k!r}"),
            (0 <= self.min_p <= 1, f"min_p must be in [0, 1], got {self.min_p}"),
            (self.repetition_penalty > 0, f"repetition_penalty must be > 0, got {self.repetition_penalty}"),
            (-2 <= self.presence_penalty <= 2, f"presence_penalty must be in [-2, 2], got {self.presence_penalty}"),
            (-2 <= self.frequency_penalty <= 2, f"frequency_penalty must be in [-2, 2], got {self.frequency_penalty}"),
            (isinstance(self.max_tokens, int) and self.max_tokens >= 1, f"max_tokens must be >= 1, got {self.max_tokens!r}"),
            (0 <= self.min_tokens <= self.max_tokens, f"min_tokens must be in [0, max_tokens], got {self.min_tokens}"),
            (self.logprobs is None or 0 <= self.logprobs <= 20, f"logprobs must be between 0 and 20, got {self.logprobs}"),
            (all(isinstance(s, str) and s for s in self.stop), "stop must be a non-empty string or a list of them"),
            (self.seed is None or isinstance(self.seed, int), f"seed must be an integer, got {self.seed!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise InputError(message)

    @property
    def greedy(self) -> bool:
        return self.temperature < GREEDY_BELOW


def apply_penalties(logits: torch.Tensor, seqs: list["Sequence"]) -> torch.Tensor:
    """logits [B, V] -> penalised copy; rows without penalties are untouched."""
    logits = logits.clone()
    for row, seq in enumerate(seqs):
        p = seq.params
        if p.repetition_penalty != 1.0:
            seen = torch.tensor(seq.prompt_ids + seq.output_ids, device=logits.device).unique()
            vals = logits[row, seen]
            logits[row, seen] = torch.where(vals > 0, vals / p.repetition_penalty, vals * p.repetition_penalty)
        if (p.presence_penalty or p.frequency_penalty) and seq.output_ids:
            ids, counts = torch.tensor(seq.output_ids, device=logits.device).unique(return_counts=True)
            logits[row, ids] -= p.presence_penalty + p.frequency_penalty * counts.to(logits.dtype)
    return logits


def filter_logits(logits: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor, min_p: torch.Tensor) -> torch.Tensor:
    """Mask to -inf what top-k [B], top-p [B] and min-p [B] exclude (0 / 1.0 / 0.0 = off for that row)."""
    vocab = logits.shape[-1]
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    rank = torch.arange(vocab, device=logits.device)[None]
    k = torch.where(top_k > 0, top_k, vocab)[:, None]
    drop = rank >= k
    probs = sorted_logits.masked_fill(drop, float("-inf")).softmax(-1)
    # top-p: drop a token once the mass before it already reaches top_p (the first token always stays)
    drop |= (probs.cumsum(-1) - probs) >= top_p[:, None]
    drop |= probs < min_p[:, None] * probs[:, :1]
    drop[:, 0] = False
    return logits.scatter(-1, order, sorted_logits.masked_fill(drop, float("-inf")))


class Sampler:
    def __call__(self, logits: torch.Tensor, seqs: list["Sequence"]) -> tuple[torch.Tensor, list[dict[int, float]] | None]:
        """logits [B, V] (fp32, the last position of each row) -> (next tokens [B], per-row logprob dicts or None)."""
        params = [s.params for s in seqs]
        raw = logits
        if any(p.repetition_penalty != 1.0 or p.presence_penalty or p.frequency_penalty for p in params):
            logits = apply_penalties(logits, seqs)
        tokens = logits.argmax(-1)
        sampled = [i for i, p in enumerate(params) if not p.greedy]
        if sampled:
            dev = logits.device
            sub = logits[sampled] / torch.tensor([params[i].temperature for i in sampled], device=dev)[:, None]
            sub = filter_logits(
                sub,
                torch.tensor([params[i].top_k for i in sampled], device=dev),
                torch.tensor([params[i].top_p for i in sampled], device=dev),
                torch.tensor([params[i].min_p for i in sampled], device=dev),
            )
            probs = sub.softmax(-1)
            for j, i in enumerate(sampled):
                tokens[i] = torch.multinomial(probs[j], 1, generator=seqs[i].generator(dev)).item()
        logprobs = None
        if any(p.logprobs is not None for p in params):
            lp = raw.log_softmax(-1)
            logprobs = []
            for i, p in enumerate(params):
                entry = {int(tokens[i]): float(lp[i, tokens[i]])}
                if p.logprobs:
                    top = lp[i].topk(p.logprobs)
                    entry.update({int(t): float(v) for v, t in zip(top.values, top.indices)})
                logprobs.append(entry)
        return tokens, logprobs
