"""Constrained decoding (structured output): one grammar per request, one matcher per row, one token mask per step.

llguidance does the grammar work (docs/capabilities.md, "Structured output", has the comparison with xgrammar that
chose it): it compiles JSON schemas, regexes, choices and Lark/GBNF grammars, and for each row computes the bitmask
of the tokens that keep the output a valid prefix. Once the grammar is complete only the tokenizer's eos tokens
remain (the checkpoint's eos ids, given when the vocabulary is built), so the row stops there.

GLM-V thinks first. A row's grammar applies to its answer, after `</think>`: while the row thinks its mask only
forbids the eos tokens (a constrained answer must come), and when the prompt leaves the choice to the model
(thinking on, or a raw prompt) the first token may open `<think>` or start the answer.
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from glmv.errors import InputError

log = logging.getLogger(__name__)

# One JSON layout, the one glmv's world data (and Python's json.dumps) writes: free whitespace would let a model
# pad its answer with endless newlines, a known failure of constrained decoding.
JSON_LAYOUT = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
KINDS = ("json_schema", "json_object", "regex", "choice", "grammar")
COMPILED_CACHE = 64  # compiled grammars kept per vocabulary (each is a matcher to copy, a few hundred KB at most)
# Compiling runs where the request arrives (the server's event loop) and costs ~1 ms per KB of schema; OpenAI's
# own limits (100 properties, 15,000 characters of names and values) sit far below this.
MAX_SPEC_CHARS = 64 * 1024
IDLE_CALLS = 32  # a row's matcher is dropped after this many sampler calls without it (it left the batch)


@dataclass(frozen=True)
class GrammarSpec:
    """What a request constrains its answer to: `kind` (one of KINDS) and its text (the key of the compiled-grammar
    cache: equal requests compile once). A schema keeps its key order: properties are written in the order given,
    as OpenAI does (a "reasoning" field before an "answer" one is there on purpose)."""

    kind: str
    text: str

    @staticmethod
    def of(kind: str, value: Any) -> "GrammarSpec":
        if kind == "json_schema":
            return GrammarSpec(kind, json.dumps(value, ensure_ascii=False))
        if kind == "choice":
            return GrammarSpec(kind, json.dumps(list(value), ensure_ascii=False))
        if kind == "json_object":
            return GrammarSpec(kind, "")
        return GrammarSpec(kind, value)

    def grammar(self) -> str:
        """The llguidance grammar (a JSON string) for this spec."""
        import llguidance

        if self.kind == "json_schema":
            # defaults, not overrides: a schema's own "x-guidance" options (e.g. whitespace) still win
            return llguidance.LLMatcher.grammar_from_json_schema(self.text, defaults=JSON_LAYOUT)
        if self.kind == "json_object":
            return llguidance.LLMatcher.grammar_from_json_schema('{"type": "object"}', defaults=JSON_LAYOUT)
        if self.kind == "choice":
            return llguidance.grammar_from("choice", json.loads(self.text))
        # "grammar" accepts Lark (llguidance's dialect) and GBNF (llama.cpp's, which vLLM's xgrammar backend takes)
        return llguidance.grammar_from("regex" if self.kind == "regex" else "grammar", self.text)


def check_spec(spec: GrammarSpec) -> None:
    """InputError when the grammar is too large or does not compile: a bad regex or Lark rule, an unsatisfiable or
    unsupported schema (llguidance refuses keywords it cannot enforce, e.g. uniqueItems, rather than ignore them)."""
    if len(spec.text) > MAX_SPEC_CHARS:
        raise InputError(f"{spec.kind} is too large for structured output: {len(spec.text)} characters, "
                         f"at most {MAX_SPEC_CHARS}")
    _compile_check(spec)


@lru_cache(maxsize=64)  # n samples and repeated requests check once; bounded by MAX_SPEC_CHARS per entry
def _compile_check(spec: GrammarSpec) -> None:
    import llguidance

    try:
        error = llguidance.LLMatcher.validate_grammar(spec.grammar())
    except ValueError as e:  # llguidance raises for malformed input before compiling (e.g. a GBNF it cannot read)
        error = str(e)
    if error:
        raise InputError(f"{spec.kind} cannot be used for structured output: {_one_line(error)}")


class GrammarVocab:
    """The tokenizer as the grammar library sees it (built once per checkpoint, on first use: ~1 s for a
    150K vocabulary), the eos ids allowed once a grammar is complete, the thinking tags, and compiled grammars."""

    def __init__(self, tokenizer_json: str, eos_token_ids: list[int], think_start: int | None = None,
                 think_end: int | None = None, assistant: int | None = None):
        self._json = tokenizer_json
        self.eos_token_ids = list(eos_token_ids)
        self.think_start, self.think_end, self.assistant = think_start, think_end, assistant
        self._compiled: OrderedDict[GrammarSpec, Any] = OrderedDict()

    @classmethod
    def from_pretrained(cls, path: str | Path, eos_token_ids: list[int]) -> "GrammarVocab":
        """The vocabulary of checkpoint `path` (its tokenizer.json, the file glmv's Tokenizer loads) with the
        eos ids the engine stops on."""
        text = (Path(path) / "tokenizer.json").read_text(encoding="utf-8")
        spec = json.loads(text)
        added = {t["content"]: t["id"] for t in spec.get("added_tokens", [])}
        return cls(_without_holes(spec) or text, eos_token_ids, added.get("<think>"), added.get("</think>"),
                   added.get("<|assistant|>"))

    @cached_property
    def tokenizer(self):  # llguidance.LLTokenizer
        import llguidance

        return llguidance.LLTokenizer(self._json, eos_token=self.eos_token_ids or None)

    @cached_property
    def executor(self):  # llguidance.LLExecutor: computes a batch's masks on its threads, without the GIL
        import llguidance

        return llguidance.LLExecutor()

    @property
    def mask_words(self) -> int:
        """int32 words of one row's bitmask."""
        return (self.tokenizer.vocab_size + 31) // 32

    def matcher(self, spec: GrammarSpec):
        """A fresh matcher for `spec`: a copy of the cached compiled one (compiling costs ms, copying ~10 us)."""
        import llguidance

        compiled = self._compiled.pop(spec, None)
        if compiled is None:
            compiled = llguidance.LLMatcher(self.tokenizer, spec.grammar())
            if compiled.is_error():
                raise InputError(f"{spec.kind} cannot be used for structured output: {_one_line(compiled.get_error())}")
        self._compiled[spec] = compiled
        if len(self._compiled) > COMPILED_CACHE:
            self._compiled.popitem(last=False)
        return compiled.deep_copy()


def _without_holes(spec: dict) -> str | None:
    """The tokenizer JSON with every unused id below the largest one filled by a special placeholder token, or
    None when there are none. llguidance sizes the vocabulary by counting entries, so ids past a hole would be out
    of its range; special tokens are never text, so no grammar can produce a placeholder."""
    vocab = (spec.get("model") or {}).get("vocab")
    if not isinstance(vocab, dict):
        return None
    used = set(vocab.values()) | {t["id"] for t in spec.get("added_tokens", [])}
    holes = sorted(set(range(max(used, default=-1) + 1)) - used)
    if not holes:
        return None
    for i in holes:
        name = f"<|glmv_unused_{i}|>"
        vocab[name] = i
        spec["added_tokens"].append({"id": i, "content": name, "single_word": False, "lstrip": False,
                                     "rstrip": False, "normalized": False, "special": True})
    return json.dumps(spec, ensure_ascii=False)


class GuidedRow(Protocol):
    params: Any  # SamplingParams: its `structured` spec
    prompt_ids: list[int]
    output_ids: list[int]


THINKING, MAYBE, ANSWER = "thinking", "maybe", "answer"


class _RowGrammar:
    """One row's matcher and where the row stands: thinking (no grammar yet), maybe (the next token may open
    `<think>`) or answer (the grammar applies). Fed the row's output tokens as they appear."""

    def __init__(self, row: GuidedRow, vocab: GrammarVocab):
        self.row = row  # a strong reference: while cached, id(row) cannot be reused by another object
        self.prompt_len = len(row.prompt_ids)
        self.matcher = vocab.matcher(row.params.structured)
        self.phase = _start_phase(row.prompt_ids, vocab)
        self.fed = 0
        self.idle = 0

    def fits(self, row: GuidedRow) -> bool:
        return self.row is row and self.prompt_len == len(row.prompt_ids) and self.fed <= len(row.output_ids)

    def update(self, vocab: GrammarVocab) -> None:
        for token in self.row.output_ids[self.fed :]:
            if self.phase == THINKING:
                self.phase = ANSWER if token == vocab.think_end else THINKING
            elif self.phase == MAYBE and token == vocab.think_start:
                self.phase = THINKING
            else:
                self.phase = ANSWER
                if not self.matcher.is_stopped():  # past the end only eos comes, and the engine stops on it
                    self.matcher.consume_token(token)
        self.fed = len(self.row.output_ids)


def _start_phase(prompt_ids: list[int], vocab: GrammarVocab) -> str:
    """From the prompt's last assistant turn: a closed think block (thinking off: `<think></think>`) means the
    answer starts now; an open one, that the model is thinking; none, that the model chooses. A prompt with no
    assistant turn (a raw /v1/completions text) is continued as it is: the answer starts now."""
    if None in (vocab.think_start, vocab.think_end, vocab.assistant) or vocab.assistant not in prompt_ids:
        return ANSWER
    start = len(prompt_ids) - prompt_ids[::-1].index(vocab.assistant)
    tags = [t for t in prompt_ids[start:] if t in (vocab.think_start, vocab.think_end)]
    if not tags:
        return MAYBE
    return ANSWER if tags[-1] == vocab.think_end else THINKING


class GuidedDecoding:
    """Per-row grammar state, kept across sampler calls and keyed by row identity (like sampling.PenaltyCache),
    and the masking of one step's logits."""

    def __init__(self, vocab: GrammarVocab | None):
        self.vocab = vocab
        self._rows: dict[int, _RowGrammar] = {}
        self._shifts: dict[torch.device, torch.Tensor] = {}

    def _states(self, rows: list[GuidedRow]) -> list[_RowGrammar]:
        if self.vocab is None:
            raise InputError("structured output needs the tokenizer's vocabulary, and this sampler was built "
                             "without one (Sampler(GrammarVocab.from_pretrained(path, eos_ids)))")
        for s in self._rows.values():
            s.idle += 1
        states = []
        for row in rows:
            s = self._rows.get(id(row))
            if s is None or not s.fits(row):
                s = self._rows[id(row)] = _RowGrammar(row, self.vocab)
            s.idle = 0
            s.update(self.vocab)
            states.append(s)
        # Rows that left (finished, aborted) are forgotten after a while; one that comes back is simply re-fed.
        self._rows = {k: s for k, s in self._rows.items() if s.idle <= IDLE_CALLS}
        return states

    def apply(self, logits: torch.Tensor, rows: list[GuidedRow], which: list[int]) -> torch.Tensor:
        """logits [B, V] -> a copy where rows `which` allow only what their grammar allows (the others untouched)."""
        vocab = self.vocab
        states = self._states([rows[i] for i in which])
        words = torch.full((len(which), vocab.mask_words), -1, dtype=torch.int32)  # all allowed
        bits = words.numpy().view(np.uint32)  # shares memory: set bits without int32 sign trouble
        answering = [(s.matcher, j) for j, s in enumerate(states) if s.phase != THINKING]
        if answering:
            vocab.executor.unsafe_compute_mask_ptr(answering, words.data_ptr(), vocab.mask_words * 4, len(which))
        for j, s in enumerate(states):
            if s.phase == THINKING:
                _set(bits[j], vocab.eos_token_ids, False)  # the answer must come, so the thinking cannot end the row
            elif s.matcher.is_error():  # not reachable through this sampler's own picks; end the row, say why
                log.error("structured output: grammar matcher failed (%s); ending the row", s.matcher.get_error())
                bits[j] = 0
                _set(bits[j], vocab.eos_token_ids, True)
            elif s.phase == MAYBE:
                _set(bits[j], [vocab.think_start], True)
            elif s.row.params.stop_token_ids and s.matcher.is_accepting():
                _set(bits[j], s.row.params.stop_token_ids, True)  # the row's own stop ids end it as well as eos
        allowed = self._unpack(words.to(logits.device), logits.shape[-1], [s.phase == THINKING for s in states])
        if len(which) == logits.shape[0]:  # every row constrained: no gather and scatter of the batch
            return logits.where(allowed, float("-inf"))
        index = torch.tensor(which, device=logits.device)
        return logits.index_copy(0, index, logits[index].where(allowed, float("-inf")))

    def _unpack(self, words: torch.Tensor, vocab_size: int, open_tail: list[bool]) -> torch.Tensor:
        """int32 bitmask [G, W] -> bool [G, V]. Ids past the tokenizer's vocabulary (a model's padded logits)
        are allowed only to thinking rows (`open_tail`), which nothing constrains but eos."""
        shifts = self._shifts.get(words.device)
        if shifts is None:
            shifts = self._shifts[words.device] = torch.arange(32, dtype=torch.int32, device=words.device)
        allowed = ((words[:, :, None] >> shifts) & 1).flatten(1).bool()  # [G, 32 W]
        if allowed.shape[1] >= vocab_size:
            return allowed[:, :vocab_size]
        tail = torch.tensor(open_tail, device=words.device)[:, None].expand(-1, vocab_size - allowed.shape[1])
        return torch.cat([allowed, tail], dim=1)


def _one_line(error: str) -> str:
    """llguidance's message on one line, without its caret-drawing lines, capped."""
    lines = [line.strip() for line in error.splitlines()]
    return " ".join(line for line in lines if line.strip("^ ")).strip()[:500]


def _set(row_bits: np.ndarray, ids: list[int], value: bool) -> None:
    """Set or clear the bits of `ids` in one row's bitmask (uint32 words); ids past it are ignored."""
    for t in ids:
        if 0 <= t < row_bits.shape[0] * 32:
            if value:
                row_bits[t >> 5] |= np.uint32(1 << (t & 31))
            else:
                row_bits[t >> 5] &= np.uint32(~(1 << (t & 31)) & 0xFFFFFFFF)
