"""Chat template: find it in the checkpoint (or use the built-in GLM-4.5V one), normalise messages, render.

Rendering matches transformers: jinja2 ImmutableSandboxedEnvironment with trim_blocks/lstrip_blocks, loop
controls, a ``tojson`` that does not HTML-escape, ``raise_exception`` and ``strftime_now``.
"""

from __future__ import annotations

import json
import numbers
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
        if isinstance(value, dict):  # the OpenAI shape {"url": ...}; the bare value is a source or a frame list
            value = value.get("url")
            if value is not None and not isinstance(value, str):
                raise InputError(f"{where}: {ptype}.url must be a string (an http(s), data: or file URL), "
                                 f"got {type(value).__name__}")
    else:
        value = part.get(kind, part.get("url", part.get("path")))
    if value is None or (isinstance(value, str) and not value):
        raise InputError(f"{where}: no {kind} given")
    return value


# Frame rate of a video given as a frame list: positive (its duration is frames / fps) and at most 240, the fastest
# common camera (slow-motion phone video). The sampling rules keep at most 3 frames a second, so a list shot faster
# already loses nearly every frame; larger values are mistakes or probes (1e300, inf).
MAX_FPS = 240.0
# Optional message fields that are text when present (checkpoint templates may add them to the prompt).
_STRING_FIELDS = ("name", "reasoning_content", "tool_call_id")


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
        if message["role"] == "developer":  # OpenAI's newer name for the system role; GLM templates know "system"
            message["role"] = "system"
        for key in _STRING_FIELDS:
            if message.get(key) is not None and not isinstance(message[key], str):
                raise InputError(f"message {i}: {key!r} must be a string, got {type(message[key]).__name__}")
        content = message.get("content")
        if isinstance(content, (list, tuple)):
            message["content"] = [_normalize_part(part, f"message {i}, part {j}", media)
                                  for j, part in enumerate(content)]
        elif content is not None and not isinstance(content, str):
            raise InputError(f"message {i}: content must be a string or a list of parts")
        tool_calls = message.get("tool_calls")
        if tool_calls is not None:
            if not isinstance(tool_calls, (list, tuple)):
                raise InputError(f"message {i}: 'tool_calls' must be a list, got {type(tool_calls).__name__}")
            message["tool_calls"] = [_parse_tool_call(call, f"message {i}, tool call {k}")
                                     for k, call in enumerate(tool_calls)]
        out.append(message)
    return out, media


def _normalize_part(part: Any, where: str, media: list[MediaRef]) -> dict:
    """One content part for the template; a media part is appended to ``media`` and reduced to its type."""
    if isinstance(part, str):
        part = {"type": "text", "text": part}
    if not isinstance(part, dict):
        raise InputError(f"{where}: must be an object")
    ptype = part.get("type") or next((k for k in ("text", "image", "video") if k in part), None)
    if ptype == "text":
        if not isinstance(part.get("text"), str):
            raise InputError(f"{where} (text): 'text' must be a string")
        return {"type": "text", "text": part["text"]}
    if isinstance(ptype, str) and ptype in _MEDIA_TYPES:
        kind = _MEDIA_TYPES[ptype]
        where = f"{where} ({kind})"
        fps = _fps(part.get("fps"), where)
        media.append(MediaRef(kind, _media_source({**part, "type": ptype}, kind, where), where, fps))
        return {"type": kind}
    raise InputError(f"{where}: unsupported content type {_shown(ptype)} (use text, image, image_url, video or "
                     f"video_url)")


def _fps(value: Any, where: str) -> float | None:
    # Compared before float() so a huge integer is refused rather than overflowing; bool is not a rate.
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value <= MAX_FPS:
        raise InputError(f"{where}: fps must be a number in (0, {MAX_FPS:g}], got {_shown(value)}")
    return float(value)


def _parse_tool_call(call: Any, where: str) -> dict:
    """OpenAI sends ``function.arguments`` as a JSON string; templates iterate it as a mapping and add the name to
    text, so both are checked here (the flat HF shape ``{"name", "arguments"}`` is accepted too)."""
    if not isinstance(call, dict):
        raise InputError(f"{where}: must be an object")
    function = call.get("function")
    function = call if function is None else function
    if not isinstance(function, dict):
        raise InputError(f"{where}: 'function' must be an object with a 'name', got {type(function).__name__}")
    if not isinstance(function.get("name"), str):
        raise InputError(f"{where}: the function's 'name' must be a string")
    arguments = function.get("arguments")
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except (ValueError, RecursionError):  # JSONDecodeError, a 5000-digit number, nesting past the stack
            raise InputError(f"{where}: arguments are not valid JSON") from None
    if arguments is not None and not isinstance(arguments, dict):
        raise InputError(f"{where}: arguments must be a JSON object, got {type(arguments).__name__}")
    return {**call, "function": {**function, "arguments": arguments}}


def _shown(value: Any) -> str:
    """A value for an error message, cut short: clients can send megabytes."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
