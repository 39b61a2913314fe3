"""Incremental detokenization for streaming.

Byte-level BPE tokens can end in the middle of a UTF-8 character; decoding them alone gives U+FFFD. Like
vLLM/TGI, keep two offsets into the ids: `prefix` starts a short decoding window (context for decoders that
look at neighbours) and `read` marks the tokens whose text is out. Text is emitted only when decoding
[prefix, end) gives more than decoding [prefix, read) and does not end in U+FFFD, so the deltas concatenate
to decode(generated ids) and never hold half a character.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

REPLACEMENT = "\ufffd"
PROMPT_CONTEXT = 5  # prompt tokens kept as decoding context for the first generated tokens (vLLM's value)


class Decoder(Protocol):
    """tokenizers.Tokenizer and glmv.inputs.tokenizer.Tokenizer both decode this way."""

    def decode(self, ids: list[int], skip_special_tokens: bool = ...) -> str: ...


class IncrementalDetokenizer:
    def __init__(self, tokenizer: Decoder, prompt_ids: Iterable[int] = (), skip_special_tokens: bool = True):
        self.tokenizer = tokenizer
        self.skip = skip_special_tokens
        # The window starts on the prompt's last tokens, which are never emitted themselves.
        self.ids: list[int] = [int(i) for i in prompt_ids][-PROMPT_CONTEXT:]
        self.prefix = 0  # start of the decoding window
        self.read = len(self.ids)  # tokens before this one have been emitted (or are prompt context)
        self.text = ""  # everything emitted so far

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=self.skip)

    def add(self, token_id: int) -> str:
        """Append one generated token; return the newly complete text (possibly empty)."""
        self.ids.append(int(token_id))
        before = self._decode(self.ids[self.prefix : self.read])
        now = self._decode(self.ids[self.prefix :])
        if len(now) > len(before) and not now.endswith(REPLACEMENT):
            self.prefix, self.read = self.read, len(self.ids)
            return self._emit(now[len(before) :])
        return ""

    def flush(self) -> str:
        """What is still held back, at the end of generation (an incomplete character decodes as U+FFFD)."""
        before = self._decode(self.ids[self.prefix : self.read])
        now = self._decode(self.ids[self.prefix :])
        self.prefix = self.read = len(self.ids)
        return self._emit(now[len(before) :])

    def _emit(self, delta: str) -> str:
        self.text += delta
        return delta
