"""Thin wrapper over ``tokenizers.Tokenizer`` loaded from a checkpoint's tokenizer.json.

Special tokens are looked up by name in the tokenizer itself (ids differ between GLM-4.1V and GLM-4.5V/4.6V).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

from tokenizers import Tokenizer as _HFTokenizer

from glmv.errors import CheckpointError


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

    def token_id(self, token: str) -> int:
        """Id of a token given by its text, e.g. ``"<|image|>"``; CheckpointError if the vocabulary lacks it."""
        token_id = self._tok.token_to_id(token)
        if token_id is None:
            raise CheckpointError(f"the tokenizer has no token {token!r}")
        return token_id

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``; no special tokens are added (chat templates write ``[gMASK]<sop>`` themselves)."""
        return self._tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def id_to_token(self, token_id: int) -> str | None:
        return self._tok.id_to_token(int(token_id))

    @property
    def vocab_size(self) -> int:
        """Number of ids including added tokens."""
        return self._tok.get_vocab_size(with_added_tokens=True)
