"""Thin wrapper over ``tokenizers.Tokenizer`` loaded from a checkpoint's tokenizer.json.

Special tokens are looked up by name in the tokenizer itself (ids differ between GLM-4.1V and GLM-4.5V/4.6V).

Client text is literal. A user who types ``<|user|>``, ``</think>`` or ``<|begin_of_video|>`` gets those characters,
never the control tokens (as with OpenAI's API): otherwise one could forge turns or make the model read an image
as video frames. ``escape`` marks the added-token text inside a client's message before the chat template runs;
``encode_chat`` encodes such marked text as plain characters and everything else as ``encode`` does.
"""

from __future__ import annotations

import json
import re
from functools import cached_property
from pathlib import Path
from typing import Any, Iterable

from tokenizers import Tokenizer as _HFTokenizer

from glmv.errors import CheckpointError, ContextLengthError

ESCAPE = "\ufdd0"  # a Unicode noncharacter (reserved for internal use): "the added token that follows is text"
# Added tokens a user may type on purpose: GLM-V's documented per-turn switch for thinking off.
USER_TOKENS = frozenset({"/nothink"})
COUNT_CHUNK = 1 << 16  # characters tokenized per call while counting a long text (each call holds the GIL)


def read_json(path: Path) -> dict:
    """A JSON object from ``path``, or {} when the file does not exist."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"cannot read {path} ({e})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} does not hold a JSON object")
    return data


def _token_name(value: Any) -> str | None:
    """tokenizer_config.json writes special tokens as strings or as AddedToken dicts ({"content": ...})."""
    if isinstance(value, dict):
        return value.get("content")
    return value if isinstance(value, str) else None


def _as_list(value: Any) -> list[int]:
    if value is None:
        return []
    return [int(v) for v in (value if isinstance(value, list) else [value])]


class Tokenizer:
    """Encode/decode plus the ids the rest of glmv needs (eos, pad, and any special token by name)."""

    def __init__(self, tokenizer: _HFTokenizer, config: dict | None = None, eos_token_ids: Iterable[int] = ()):
        self._tok = tokenizer
        self.config = config or {}
        self.special_tokens_map = {  # passed to chat templates, as transformers does
            key: name for key in ("bos_token", "eos_token", "unk_token", "pad_token")
            if (name := _token_name(self.config.get(key))) is not None
        }
        eos = list(eos_token_ids)
        if not eos and "eos_token" in self.special_tokens_map:
            eos = [self.token_id(self.special_tokens_map["eos_token"])]
        self.eos_token_ids: list[int] = eos
        pad = self.special_tokens_map.get("pad_token") or self.special_tokens_map.get("eos_token") or "<|endoftext|>"
        self.pad_token_id: int = self.token_id(pad)
        self._init_literal()

    def _init_literal(self) -> None:
        """What escape / encode_chat need: the added tokens, and a copy of the tokenizer that matches none of them
        (every added token made special, special tokens not parsed), so text encodes as its characters."""
        spec = json.loads(self._tok.to_str())
        added = sorted((t["content"] for t in spec.get("added_tokens", [])), key=len, reverse=True)
        self._added_ids = {t["content"]: t["id"] for t in spec.get("added_tokens", [])}
        for t in spec.get("added_tokens", []):
            t["special"] = True
        self._plain = _HFTokenizer.from_str(json.dumps(spec))
        self._plain.encode_special_tokens = True
        alternatives = "|".join(re.escape(t) for t in added) or "(?!)"
        guarded = "|".join(re.escape(t) for t in added if t not in USER_TOKENS) or "(?!)"
        self._guarded = re.compile(f"{ESCAPE}|{guarded}")
        # Left to right: an escaped escape character, an escaped added token, a real added token, a stray mark.
        self._pieces = re.compile(f"{ESCAPE}{ESCAPE}|{ESCAPE}(?:{alternatives})|{alternatives}|{ESCAPE}")

    @classmethod
    def from_pretrained(cls, path: str | Path) -> "Tokenizer":
        """Load ``tokenizer.json``; eos ids from generation_config.json, else config.json, else tokenizer_config."""
        path = Path(path)
        try:
            tok = _HFTokenizer.from_file(str(path / "tokenizer.json"))
        except Exception as e:  # tokenizers raises plain Exception subclasses for missing/corrupt files
            raise CheckpointError(f"cannot load {path / 'tokenizer.json'} ({e})") from None
        config = read_json(path / "tokenizer_config.json")
        model_config = read_json(path / "config.json")
        eos = (_as_list(read_json(path / "generation_config.json").get("eos_token_id"))
               or _as_list(model_config.get("eos_token_id"))
               or _as_list((model_config.get("text_config") or {}).get("eos_token_id")))
        return cls(tok, config, eos)

    @property
    def added_tokens(self) -> frozenset[str]:
        """The texts of the vocabulary's added tokens (special tokens such as <|user|>, <tool_call>)."""
        return frozenset(self._added_ids)

    def token_id(self, token: str) -> int:
        """Id of a token given by its text, e.g. ``"<|image|>"``; CheckpointError if the vocabulary lacks it."""
        token_id = self._tok.token_to_id(token)
        if token_id is None:
            raise CheckpointError(f"the tokenizer has no token {token!r}")
        return token_id

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``; no special tokens are added (chat templates write ``[gMASK]<sop>`` themselves)."""
        return self._tok.encode(text, add_special_tokens=False).ids

    def check_fits(self, text: str, limit: int) -> None:
        """ContextLengthError when `text` certainly encodes to more than `limit` tokens, found cheaply: a text
        longer than `limit` of the vocabulary's longest tokens is refused without tokenizing, and a long text is
        counted in chunks (the GIL is free between them, so the server stays responsive) that stop once the
        count is clearly over. A text that passes may still be a little over: the caller's exact check decides."""
        self.check_chars(len(text), limit)
        if len(text) <= COUNT_CHUNK:
            return
        count, at = 0, 0
        while at < len(text):
            end = _chunk_end(text, at + COUNT_CHUNK)
            count += len(self._tok.encode(text[at:end], add_special_tokens=False).ids)
            at = end
            # Chunk edges split at whitespace change a count by a token or so: refuse only when clearly over.
            if count > limit + limit // 8 + 64:
                raise ContextLengthError(f"the prompt is over {count} tokens (counted in its first {at} characters), "
                                         f"but the model's context is {limit} tokens; shorten it")

    def check_chars(self, n_chars: int, limit: int) -> None:
        """ContextLengthError when `n_chars` characters cannot fit in `limit` tokens, however they tokenize."""
        if n_chars > limit * self.max_token_chars:
            raise ContextLengthError(f"the prompt has {n_chars} characters, more than fit in the model's context "
                                     f"of {limit} tokens; shorten it")

    @cached_property
    def max_token_chars(self) -> int:
        """Characters the longest vocabulary entry can stand for: a byte-level token covers at most one
        character per symbol of its vocabulary string."""
        return max(len(t) for t in self._tok.get_vocab(with_added_tokens=True))

    def escape(self, text: str) -> str:
        """Client text -> the same text with every added token in it (and the escape mark itself) marked as
        literal for encode_chat. Tokens a user may type on purpose (USER_TOKENS) stay tokens."""
        return self._guarded.sub(lambda m: ESCAPE + m.group(0), text)

    def unescape(self, text: str) -> str:
        """A rendered prompt as the client wrote it: the marks of escape() removed."""
        return re.sub(f"{ESCAPE}(.?)", r"\1", text, flags=re.DOTALL) if ESCAPE in text else text

    def encode_chat(self, text: str) -> list[int]:
        """Token ids of a rendered chat prompt whose client text went through escape(): marked added-token text
        encodes as plain characters, unmarked added tokens as their ids. Without marks this is encode(text)."""
        if ESCAPE not in text:
            return self.encode(text)
        ids: list[int] = []
        literal: list[str] = []  # text since the last real added token: encoded in one piece, as encode() would
        at = 0
        for m in self._pieces.finditer(text):
            literal.append(text[at : m.start()])
            piece, at = m.group(0), m.end()
            if piece.startswith(ESCAPE):
                literal.append(piece[1:])  # the escaped character or token text; a stray mark adds nothing
                continue
            ids += self._plain.encode("".join(literal), add_special_tokens=False).ids if any(literal) else []
            literal = []
            ids.append(self._added_ids[piece])
        literal.append(text[at:])
        if any(literal):
            ids += self._plain.encode("".join(literal), add_special_tokens=False).ids
        return ids

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def id_to_token(self, token_id: int) -> str | None:
        return self._tok.id_to_token(int(token_id))

    @property
    def vocab_size(self) -> int:
        """Number of ids including added tokens."""
        return self._tok.get_vocab_size(with_added_tokens=True)


def _chunk_end(text: str, end: int) -> int:
    """`end`, moved back to just after the last whitespace within the 1 KiB before it (tokens rarely span it)."""
    if end >= len(text):
        return len(text)
    cut = max(text.rfind(" ", end - 1024, end), text.rfind("\n", end - 1024, end))
    return cut + 1 if cut > 0 else end
