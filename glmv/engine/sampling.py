"""Sampling parameters (vLLM's names and meanings) and the batched sampler.

Order of processing, as in vLLM/transformers: penalties -> temperature -> top-k -> top-p -> min-p -> sample.
Every row of a batch may have its own parameters; a row with a seed draws from its own generator, so its
tokens do not depend on what else is in the batch. Logprobs are vLLM's default: from the raw model logits
(log_softmax before any penalty, temperature or filter). Structured output (json_schema, json_object, regex, choice,
grammar) masks a row's logits to what its grammar allows before all of that (glmv.engine.guided). See
docs/sampling.md.
"""

from __future__ import annotations

import json
import math
import numbers
from dataclasses import dataclass, field
from typing import Protocol

import torch

from glmv.engine.guided import KINDS, GrammarSpec, GrammarVocab, GuidedDecoding, check_spec
from glmv.errors import InputError

GREEDY_BELOW = 1e-5  # temperatures under this are greedy, like vLLM
MAX_LOGPROBS = 20  # vLLM's default max_logprobs
INT64 = (-(2**63), 2**63 - 1)  # seeds: a signed 64-bit integer, as the OpenAI API documents
MAX_TOP_K = 2**31 - 1  # far above any vocabulary; bounds what the sampler puts in a tensor


def _real(x: object) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x)


def _integer(x: object) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


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
    stop_token_ids: list[int] | None = None  # None: the engine uses the checkpoint's eos ids
    ignore_eos: bool = False
    logprobs: int | None = None  # also return this many top logprobs per generated token
    skip_special_tokens: bool = True
    include_stop_str_in_output: bool = False
    # Structured output, at most one of these: the answer (after any thinking) follows the grammar.
    json_schema: dict | str | None = None  # a JSON schema, or its JSON text
    json_object: bool = False  # any JSON object
    regex: str | None = None
    choice: list[str] | None = None  # exactly one of these strings
    grammar: str | None = None  # a Lark grammar (llguidance's dialect) or a GBNF one (llama.cpp's)

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        self.stop = list(self.stop) if isinstance(self.stop, (list, tuple)) else self.stop
        if isinstance(self.stop_token_ids, tuple):
            self.stop_token_ids = list(self.stop_token_ids)
        if self.top_k == -1:
            self.top_k = 0
        # Each check runs only if the ones before it passed, so a comparison never meets a non-number.
        checks = [
            (_integer(self.n) and self.n >= 1, f"n must be an integer >= 1, got {self.n!r}"),
            (_real(self.temperature) and self.temperature >= 0, f"temperature must be >= 0, got {self.temperature!r}"),
            (_real(self.top_p) and 0 < self.top_p <= 1, f"top_p must be in (0, 1], got {self.top_p!r}"),
            (_integer(self.top_k) and 0 <= self.top_k <= MAX_TOP_K,
             f"top_k must be -1, 0 or an integer in [1, {MAX_TOP_K}], got {self.top_k!r}"),
            (_real(self.min_p) and 0 <= self.min_p <= 1, f"min_p must be in [0, 1], got {self.min_p!r}"),
            (_real(self.repetition_penalty) and self.repetition_penalty > 0,
             f"repetition_penalty must be > 0, got {self.repetition_penalty!r}"),
            (_real(self.presence_penalty) and -2 <= self.presence_penalty <= 2,
             f"presence_penalty must be in [-2, 2], got {self.presence_penalty!r}"),
            (_real(self.frequency_penalty) and -2 <= self.frequency_penalty <= 2,
             f"frequency_penalty must be in [-2, 2], got {self.frequency_penalty!r}"),
            (self.seed is None or (_integer(self.seed) and INT64[0] <= self.seed <= INT64[1]),
             f"seed must be an integer in [{INT64[0]}, {INT64[1]}] or None, got {self.seed!r}"),
            (_integer(self.max_tokens) and self.max_tokens >= 1, f"max_tokens must be >= 1, got {self.max_tokens!r}"),
            (_integer(self.min_tokens) and 0 <= self.min_tokens <= self.max_tokens,
             f"min_tokens must be an integer in [0, max_tokens={self.max_tokens}], got {self.min_tokens!r}"),
            (isinstance(self.stop, list) and all(isinstance(s, str) and s for s in self.stop),
             f"stop must be a non-empty string or a list of them, got {self.stop!r}"),
            (self.stop_token_ids is None or (isinstance(self.stop_token_ids, list)
                                             and all(_integer(t) and t >= 0 for t in self.stop_token_ids)),
             f"stop_token_ids must be a list of token ids (integers >= 0), got {self.stop_token_ids!r}"),
            (self.logprobs is None or (_integer(self.logprobs) and 0 <= self.logprobs <= MAX_LOGPROBS),
             f"logprobs must be an integer between 0 and {MAX_LOGPROBS}, got {self.logprobs!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise InputError(message)
        self._check_structured()

    def _check_structured(self) -> None:
        """Normalise the structured-output fields and compile their grammar once (cached), so that a bad schema,
        regex or grammar is refused here, at the boundary, and not in the middle of a batch."""
        if isinstance(self.json_schema, str):
            try:
                self.json_schema = json.loads(self.json_schema)
            except ValueError as e:
                raise InputError(f"json_schema is not valid JSON ({e})") from None
        if isinstance(self.choice, tuple):
            self.choice = list(self.choice)
        checks = [
            (self.json_schema is None or isinstance(self.json_schema, dict),
             f"json_schema must be a JSON object (a dict or its JSON text), got {type(self.json_schema).__name__}"),
            (isinstance(self.json_object, bool), f"json_object must be true or false, got {self.json_object!r}"),
            (self.regex is None or (isinstance(self.regex, str) and self.regex != ""),
             f"regex must be a non-empty string, got {self.regex!r}"),
            (self.choice is None or (isinstance(self.choice, list) and self.choice
                                     and all(isinstance(c, str) for c in self.choice)),
             f"choice must be a non-empty list of strings, got {self.choice!r}"),
            (self.grammar is None or (isinstance(self.grammar, str) and self.grammar.strip() != ""),
             f"grammar must be a non-empty string, got {self.grammar!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise InputError(message)
        given = self._constraints()
        if len(given) > 1:
            raise InputError(f"give at most one of json_schema, json_object, regex, choice, grammar; got {given}")
        try:
            spec = self.structured
        except (TypeError, ValueError) as e:  # a dict json.dumps cannot write
            raise InputError(f"json_schema is not JSON ({e})") from None
        if spec is not None:
            check_spec(spec)

    @property
    def greedy(self) -> bool:
        return self.temperature < GREEDY_BELOW

    @property
    def penalised(self) -> bool:
        return self.repetition_penalty != 1.0 or self.presence_penalty != 0.0 or self.frequency_penalty != 0.0

    @property
    def filtered(self) -> bool:
        return self.top_k > 0 or self.top_p < 1.0 or self.min_p > 0.0

    def _constraints(self) -> list[str]:
        """The structured-output fields that are set (an empty schema {} is set: any JSON value)."""
        return [k for k in KINDS if getattr(self, k) is not None and getattr(self, k) is not False]

    @property
    def constrained(self) -> bool:
        return bool(self._constraints())

    @property
    def structured(self) -> GrammarSpec | None:
        """The grammar the answer must follow (None: unconstrained)."""
        given = self._constraints()
        return GrammarSpec.of(given[0], getattr(self, given[0])) if given else None


class RowState(Protocol):
    """What the sampler reads from one batch row (glmv.engine.engine.Sequence is one)."""

    params: SamplingParams
    prompt_ids: list[int]
    output_ids: list[int]

    def generator(self, device: torch.device | str = "cpu") -> torch.Generator | None: ...


@dataclass
class Row:
    """A minimal RowState, for sampling outside the engine (one prompt, B = 1, tests)."""

    params: SamplingParams
    prompt_ids: list[int] = field(default_factory=list)
    output_ids: list[int] = field(default_factory=list)
    _generator: torch.Generator | None = field(default=None, repr=False)

    def generator(self, device: torch.device | str = "cpu") -> torch.Generator | None:
        if self.params.seed is not None and self._generator is None:
            self._generator = torch.Generator(device).manual_seed(self.params.seed)
        return self._generator


class _TokenStats:
    """One row's token statistics, kept across steps so that a step only folds in the new output tokens."""

    def __init__(self, row: RowState, vocab: int, device: torch.device):
        self.row = row  # a strong reference: while cached, id(row) cannot be reused by another object
        self.prompt_len = len(row.prompt_ids)
        self.n_out = 0
        self.seen = torch.zeros(vocab, dtype=torch.bool, device=device)  # [V] in prompt or output
        self.counts = torch.zeros(vocab, dtype=torch.float32, device=device)  # [V] occurrences in the output
        if row.prompt_ids:
            self.seen[torch.tensor(row.prompt_ids, device=device)] = True

    def fits(self, row: RowState, vocab: int, device: torch.device) -> bool:
        return (self.row is row and self.prompt_len == len(row.prompt_ids) and self.n_out <= len(row.output_ids)
                and self.seen.shape[0] == vocab and self.seen.device == device)

    def update(self) -> None:
        new = self.row.output_ids[self.n_out :]
        if new:
            ids = torch.tensor(new, device=self.seen.device)
            self.seen[ids] = True
            self.counts.index_add_(0, ids, torch.ones(len(new), device=self.seen.device))
            self.n_out += len(new)


class PenaltyCache:
    """Token statistics of the rows sampled in the last step; rows that left the batch are forgotten."""

    def __init__(self) -> None:
        self._rows: dict[int, _TokenStats] = {}

    def stats(self, rows: list[RowState], vocab: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (seen [R, V] bool: token in prompt or output, counts [R, V] fp32: occurrences in the output)."""
        kept = {}
        for row in rows:
            s = self._rows.get(id(row))
            if s is None or not s.fits(row, vocab, device):
                s = _TokenStats(row, vocab, device)
            s.update()
            kept[id(row)] = s
        self._rows = kept
        return torch.stack([kept[id(r)].seen for r in rows]), torch.stack([kept[id(r)].counts for r in rows])


def apply_penalties(logits: torch.Tensor, rows: list[RowState], cache: PenaltyCache | None = None) -> torch.Tensor:
    """logits [B, V] -> penalised copy (the input itself when no row has a penalty).

    Repetition (HF/CTRL): over prompt + output tokens, a logit > 0 is divided by the penalty, else multiplied.
    Presence/frequency (OpenAI, vLLM): over output tokens only, logit -= presence * [count > 0] + frequency * count.
    """
    which = [i for i, r in enumerate(rows) if r.params.penalised]
    if not which:
        return logits
    seen, counts = (cache or PenaltyCache()).stats([rows[i] for i in which], logits.shape[-1], logits.device)
    coef = torch.tensor([[rows[i].params.repetition_penalty, rows[i].params.presence_penalty,
                          rows[i].params.frequency_penalty] for i in which], device=logits.device)  # [R, 3]
    rep, presence, frequency = coef[:, 0:1], coef[:, 1:2], coef[:, 2:3]  # each [R, 1]
    index = torch.tensor(which, device=logits.device)
    sub = logits[index]  # [R, V]
    sub = torch.where(seen, torch.where(sub > 0, sub / rep, sub * rep), sub)
    sub = sub - presence * (counts > 0) - frequency * counts
    return logits.index_copy(0, index, sub)


def filter_logits(logits: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor, min_p: torch.Tensor) -> torch.Tensor:
    """Mask to -inf what top-k [B], top-p [B] and min-p [B] exclude (0 / 1.0 / 0.0 = off for that row).

    Each filter sees the distribution left by the previous one (renormalised), as in transformers; the most
    likely token always survives.
    """
    vocab = logits.shape[-1]
    sorted_logits, order = logits.sort(dim=-1, descending=True)  # [B, V]
    rank = torch.arange(vocab, device=logits.device)[None]  # [1, V]
    drop = rank >= torch.where(top_k > 0, top_k, vocab)[:, None]  # [B, V]
    probs = sorted_logits.masked_fill(drop, float("-inf")).softmax(-1)
    # top-p: drop a token once the mass of the tokens before it already reaches top_p
    drop |= (probs.cumsum(-1) - probs) >= top_p[:, None]
    # min-p is relative to the top probability, so renormalising after top-p would not change it
    drop |= probs < min_p[:, None] * probs[:, :1]
    drop[:, 0] = False
    return logits.scatter(-1, order, sorted_logits.masked_fill(drop, float("-inf")))


class _BatchParams:
    """Per-row parameter tensors of one set of rows, built once and reused while the batch's rows stay the same."""

    def __init__(self, params: list[SamplingParams], device: torch.device):
        self.params = params  # strong references keep the ids in the cache key valid
        self.sampled = [i for i, p in enumerate(params) if not p.greedy]
        chosen = [params[i] for i in self.sampled]
        self.index = torch.tensor(self.sampled, dtype=torch.long, device=device)  # [S] rows that sample
        self.temperature = torch.tensor([p.temperature for p in chosen], device=device)[:, None]  # [S, 1]
        self.filtered = any(p.filtered for p in chosen)
        self.top_k = torch.tensor([p.top_k for p in chosen], device=device)  # [S]
        self.top_p = torch.tensor([p.top_p for p in chosen], device=device)  # [S]
        self.min_p = torch.tensor([p.min_p for p in chosen], device=device)  # [S]
        self.unseeded = any(p.seed is None for p in chosen)
        self.logprobs = [p.logprobs for p in params]
        self.want_logprobs = any(k is not None for k in self.logprobs)
        self.guided = [i for i, p in enumerate(params) if p.constrained]  # rows with a grammar


class Sampler:
    """Picks the next token of every row. Call once per decode step with that step's logits and rows:

        tokens, logprobs = sampler(logits, rows)   # logits [B, V] fp32, rows[i] describes row i

    It keeps per-row state between calls (parameter tensors, token counts for penalties, grammar matchers),
    keyed by row identity; rows may leave or join between calls. Use one Sampler per engine. Rows with structured
    output need `grammar_vocab` (GrammarVocab.from_pretrained(checkpoint, eos ids)).
    """

    def __init__(self, grammar_vocab: GrammarVocab | None = None) -> None:
        self.grammar_vocab = grammar_vocab
        self._penalties = PenaltyCache()
        self._guided = GuidedDecoding(grammar_vocab)
        self._batch: tuple[tuple, _BatchParams] | None = None

    def _params(self, rows: list[RowState], device: torch.device) -> _BatchParams:
        key = (device, *(id(r.params) for r in rows))
        if self._batch is None or self._batch[0] != key:
            self._batch = (key, _BatchParams([r.params for r in rows], device))
        return self._batch[1]

    def __call__(self, logits: torch.Tensor, rows: list[RowState]) -> tuple[torch.Tensor, list[dict[int, float]] | None]:
        """logits [B, V] (fp32, the last position of each row) -> (next tokens [B] long, logprobs).

        logprobs is None when no row asked for them; otherwise one dict per row, {token id: logprob}, holding
        the chosen token and the row's top-`logprobs` tokens (only the chosen one for rows with logprobs None
        or 0), from the raw logits (before the grammar mask too: the model's own view of the chosen token).
        """
        bp = self._params(rows, logits.device)
        raw = logits
        if bp.guided:
            logits = self._guided.apply(logits, rows, bp.guided)
        logits = apply_penalties(logits, rows, self._penalties)
        tokens = logits.argmax(-1)  # [B]; greedy rows keep this
        if bp.sampled:
            sub = logits[bp.index] / bp.temperature  # [S, V]
            if bp.filtered:
                sub = filter_logits(sub, bp.top_k, bp.top_p, bp.min_p)
            probs = sub.softmax(-1)  # [S, V]
            tokens[bp.index] = (probs / self._exponential(probs, [rows[i] for i in bp.sampled], bp.unseeded)).argmax(-1)
        return tokens, (_logprobs(raw, tokens, bp.logprobs) if bp.want_logprobs else None)

    @staticmethod
    def _exponential(probs: torch.Tensor, rows: list[RowState], unseeded: bool) -> torch.Tensor:
        """Exp(1) noise [S, V]: argmax(probs / noise) is a draw from probs (vLLM's trick: one kernel for the
        whole batch). Seeded rows fill their own row from their own generator."""
        noise = torch.empty_like(probs)
        if unseeded:
            noise.exponential_()
        for j, row in enumerate(rows):
            gen = row.generator(probs.device)
            if gen is not None:
                noise[j].exponential_(generator=gen)
        return noise.clamp_min_(torch.finfo(noise.dtype).tiny)  # a 0 would turn 0/0 into nan, which argmax picks


def _logprobs(raw: torch.Tensor, tokens: torch.Tensor, ks: list[int | None]) -> list[dict[int, float]]:
    """raw logits [B, V], chosen tokens [B], top-k per row -> [{token: logprob}] with the chosen token and top-k."""
    lp = raw.log_softmax(-1)  # [B, V]
    chosen = lp.gather(-1, tokens[:, None])[:, 0].tolist()
    ids = tokens.tolist()
    kmax = max(k or 0 for k in ks)
    top_v, top_i = lp.topk(kmax, dim=-1) if kmax else (lp[:, :0], lp[:, :0].long())  # [B, kmax]
    top_v, top_i = top_v.tolist(), top_i.tolist()
    out = []
    for i, k in enumerate(ks):
        entry = {ids[i]: chosen[i]}
        entry.update(zip(top_i[i][: k or 0], top_v[i][: k or 0]))
        out.append(entry)
    return out
