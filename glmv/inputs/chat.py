"""Chat template: find it in the checkpoint (or use the built-in GLM-4.5V one), normalise messages, render.

Rendering matches transformers: jinja2 ImmutableSandboxedEnvironment with trim_blocks/lstrip_blocks, loop
controls, a ``tojson`` that does not HTML-escape, ``raise_exception`` and ``strftime_now``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

from glmv.errors import CheckpointError, InputError
from glmv.inputs.tokenizer import read_json

BUILTIN_TEMPLATE = Path(__file__).with_name("chat_template.jinja")


def load_chat_template(path: str | Path) -> str | None:
    """The checkpoint's template: chat_template.jinja, else chat_template.json, else tokenizer_config.json."""
    path = Path(path)
    if (path / "chat_template.jinja").is_file():
        return (path / "chat_template.jinja").read_text(encoding="utf-8")
    for name in ("chat_template.json", "tokenizer_config.json"):
        template = read_json(path / name).get("chat_template")
        if isinstance(template, list):  # [{"name": "default", "template": ...}, ...]
            template = next((t.get("template") for t in template if t.get("name") == "default"), None)
        if isinstance(template, str):
            return template
    return None


def _raise_exception(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


def _tojson(x: Any, ensure_ascii: bool = False, indent: int | None = None, separators: Any = None,
            sort_keys: bool = False) -> str:
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


class ChatTemplate:
    """A compiled template; ``render`` passes the variables transformers passes."""

    def __init__(self, source: str | None = None, special_tokens: dict[str, str] | None = None):
        self.source = source if source is not None else BUILTIN_TEMPLATE.read_text(encoding="utf-8")
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
        env.filters["tojson"] = _tojson
        env.globals["raise_exception"] = _raise_exception
        env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
        try:
            self._template = env.from_string(self.source)
        except jinja2.TemplateSyntaxError as e:
            raise CheckpointError(f"chat template does not compile ({e})") from None
        self.special_tokens = dict(special_tokens or {})

    def render(self, messages: list[dict], add_generation_prompt: bool = True, tools: list[dict] | None = None,
               enable_thinking: bool | None = None, **kwargs: Any) -> str:
        """Render normalised messages. ``enable_thinking=None`` leaves the variable undefined (template default)."""
        variables = {**self.special_tokens, **kwargs}
        if enable_thinking is not None:
            variables["enable_thinking"] = enable_thinking
        try:
            return self._template.render(messages=messages, tools=tools or None, documents=None,
                                         add_generation_prompt=add_generation_prompt, **variables)
        except jinja2.TemplateError as e:
            raise InputError(f"chat template rejected the messages: {e}") from None


@dataclass(frozen=True)
class MediaRef:
    """One image or video found in the messages, in order of appearance."""

    kind: str  # "image" or "video"
    source: Any  # path, URL, bytes, PIL image, array, tensor, or a list of frames (video)
    where: str  # e.g. "message 0, part 2 (image)"
    fps: float | None = None  # for a video given as a list of frames


_MEDIA_TYPES = {"image": "image", "image_url": "image", "video": "video", "video_url": "video"}


def _media_source(part: dict, kind: str, where: str) -> Any:
    ptype = part.get("type")
    if ptype in ("image_url", "video_url"):
        value = part.get(ptype)
        value = value.get("url") if isinstance(value, dict) else value
    else:
        value = part.get(kind, part.get("url", part.get("path")))
    if value is None or (isinstance(value, str) and not value):
        raise InputError(f"{where}: no {kind} given")
    return value


def normalize_messages(messages: Any) -> tuple[list[dict], list[MediaRef]]:
    """Validate OpenAI/HF-shaped messages; return copies for the template (media parts reduced to
    ``{"type": "image"|"video"}``, tool-call arguments parsed from JSON strings) and the media in order."""
    if not isinstance(messages, (list, tuple)) or not messages:
        raise InputError("messages must be a non-empty list")
    out, media = [], []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise InputError(f"message {i}: must be an object with a 'role'")
        message = dict(message)
        content = message.get("content")
        if isinstance(content, (list, tuple)):
            parts = []
            for j, part in enumerate(content):
                if isinstance(part, str):
                    part = {"type": "text", "text": part}
                if not isinstance(part, dict):
                    raise InputError(f"message {i}, part {j}: must be an object")
                ptype = part.get("type") or next((k for k in ("text", "image", "video") if k in part), None)
                if ptype == "text":
                    if not isinstance(part.get("text"), str):
                        raise InputError(f"message {i}, part {j} (text): 'text' must be a string")
                    parts.append({"type": "text", "text": part["text"]})
                elif ptype in _MEDIA_TYPES:
                    kind = _MEDIA_TYPES[ptype]
                    where = f"message {i}, part {j} ({kind})"
                    fps = part.get("fps")
                    media.append(MediaRef(kind, _media_source({**part, "type": ptype}, kind, where), where,
                                          float(fps) if fps is not None else None))
                    parts.append({"type": kind})
                else:
                    raise InputError(f"message {i}, part {j}: unsupported content type {ptype!r}")
            message["content"] = parts
        elif content is not None and not isinstance(content, str):
            raise InputError(f"message {i}: content must be a string or a list of parts")
        if message.get("tool_calls"):
            message["tool_calls"] = [_parse_tool_call(tc, i) for tc in message["tool_calls"]]
        out.append(message)
    return out, media


def _parse_tool_call(call: Any, i: int) -> dict:
    """OpenAI sends ``function.arguments`` as a JSON string; templates iterate it as a mapping."""
    if not isinstance(call, dict):
        raise InputError(f"message {i}: tool_calls entries must be objects")
    function = dict(call.get("function") or call)
    arguments = function.get("arguments")
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError:
            raise InputError(f"message {i}: tool call arguments are not valid JSON") from None
    function["arguments"] = arguments
    return {**call, "function": function}
