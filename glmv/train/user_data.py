"""Your own training data: JSONL files of conversations, read into the examples the trainer consumes.

One conversation per line, in either of the two layouts fine-tuning tools use:

OpenAI chat (what `glmv serve` accepts; images and videos by path, http(s) URL or data: URL):
    {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "cat.png"}},
                                               {"type": "text", "text": "What is this?"}]},
                  {"role": "assistant", "content": "A cat."}]}

ShareGPT / LLaMA-Factory (`messages` or `conversations`, turns as `from`/`value` or `role`/`content`, media as
`<image>` / `<video>` placeholders in the text and `images` / `videos` lists in the same order):
    {"conversations": [{"from": "human", "value": "<image>What is this?"}, {"from": "gpt", "value": "A cat."}],
     "images": ["cat.png"], "system": "optional system prompt"}

Relative media paths are read from the JSONL file's directory. A video is a file / URL, or (ShareGPT) a list of
frame images. Every line is checked when the file is read (its JSON, its layout, roles, media references, that
local files exist); each error is an InputError naming the file, the line and what is wrong.

An assistant turn's reasoning is its `reasoning_content` field or a `<think>...</think>` block in its text.
Examples follow glmv.train.data: the rendered prompt, then the target with loss, in the thinking format
(`<think>reasoning</think>\nanswer`) or the `/nothink` one (the answer alone). Every assistant turn carries loss
on its answer and the `<|user|>` token that ends it; earlier turns appear as the chat template renders history
(reasoning dropped, so in the thinking format their empty `<think></think>` is left unlabelled), the last turn is
the target exactly as glmv.train.data.encode_example builds it.
"""

from __future__ import annotations

import json
import os
import re
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from glmv.engine.outputs import parse_reasoning
from glmv.errors import GlmvError, InputError
from glmv.inputs.chat import normalize_messages
from glmv.inputs.processor import Processor
from glmv.train.data import IGNORE, Example, format_target

ROLES = {"user": "user", "human": "user", "assistant": "assistant", "gpt": "assistant", "model": "assistant",
         "bot": "assistant", "system": "system", "developer": "system"}
UNSUPPORTED_ROLES = ("tool", "function", "function_call", "observation", "ipython")
PLACEHOLDER = re.compile(r"<(image|video)>")
URL_SCHEMES = ("http", "https", "data")


@dataclass(frozen=True)
class Conversation:
    """One training conversation: messages in glmv's shape (system / user / assistant; media parts
    {"type": "image", "image": source} / {"type": "video", "video": source}, sources resolved), ending with an
    assistant turn; `where` is "FILE:LINE" for errors."""

    messages: list[dict]
    where: str


def read_jsonl(path: str | Path, check_files: bool = True) -> list[Conversation]:
    """Every conversation of a JSONL file (blank lines skipped). check_files: local media must exist now."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read training data {path}: {e}") from None
    out = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            out.append(parse_line(line, f"{path}:{number}", path.parent, check_files))
    if not out:
        raise InputError(f"{path}: no conversations (one JSON object per line)")
    return out


def parse_line(line: str, where: str, base_dir: Path, check_files: bool = True) -> Conversation:
    try:
        record = json.loads(line)
    except (json.JSONDecodeError, RecursionError) as e:
        raise InputError(f"{where}: not valid JSON ({e})") from None
    try:
        return Conversation(parse_record(record, base_dir, check_files), where)
    except InputError as e:
        raise InputError(f"{where}: {e}") from None


def parse_record(record: Any, base_dir: Path, check_files: bool = True) -> list[dict]:
    """One JSON record (either layout) -> glmv messages; InputError saying what is wrong."""
    if not isinstance(record, dict):
        raise InputError(f"a line must be a JSON object with 'messages' or 'conversations', got "
                         f"{type(record).__name__}")
    keys = [k for k in ("messages", "conversations") if k in record]
    if len(keys) != 1:
        raise InputError("a line needs exactly one of 'messages' (OpenAI / ShareGPT) or 'conversations' "
                         f"(ShareGPT), found {keys or sorted(record)}")
    if record.get("tools"):
        raise InputError("'tools' (function calling) is not supported in training data yet")
    turns = record[keys[0]]
    if not isinstance(turns, list) or not turns:
        raise InputError(f"'{keys[0]}' must be a non-empty list of turns")
    lists = {kind: _media_list(record, kind) for kind in ("image", "video")}
    media = {kind: iter(items or []) for kind, items in lists.items()}
    used = {"image": 0, "video": 0}
    messages = [_turn(turn, i, media, used, lists, base_dir, check_files) for i, turn in enumerate(turns)]
    for kind, items in lists.items():
        if items is not None and used[kind] != len(items):
            raise InputError(f"the text has {used[kind]} <{kind}> placeholders but '{kind}s' lists {len(items)} "
                             f"{kind}s (one placeholder per {kind}, in order)")
    normalize_messages(messages)  # the checks every request gets (content types, fps, ...)
    system = record.get("system")
    if system is not None:
        if not isinstance(system, str):
            raise InputError(f"'system' must be a string, got {type(system).__name__}")
        if system.strip() and not any(m["role"] == "system" for m in messages):
            messages.insert(0, {"role": "system", "content": system})
    _check_order(messages)
    return messages


def _media_list(record: dict, kind: str) -> list | None:
    items = record.get(f"{kind}s")
    if items is None:
        return None
    if not isinstance(items, list):
        raise InputError(f"'{kind}s' must be a list of paths or URLs, got {type(items).__name__}")
    return items


def _turn(turn: Any, i: int, media: dict, used: dict, lists: dict, base_dir: Path, check_files: bool) -> dict:
    where = f"message {i}"
    if not isinstance(turn, dict):
        raise InputError(f"{where}: must be an object with role/content or from/value")
    if "role" in turn or "content" in turn:
        role, content = turn.get("role"), turn.get("content")
    elif "from" in turn or "value" in turn:
        role, content = turn.get("from"), turn.get("value")
    else:
        raise InputError(f"{where}: needs 'role' and 'content' (or ShareGPT's 'from' and 'value'), has {sorted(turn)}")
    if not isinstance(role, str) or role.lower() not in ROLES:
        hint = " (tool / function turns are not supported in training data yet)" \
            if isinstance(role, str) and role.lower() in UNSUPPORTED_ROLES else ""
        raise InputError(f"{where}: unknown role {role!r}{hint}; use user / human, assistant / gpt or system")
    role = ROLES[role.lower()]
    if turn.get("tool_calls"):
        raise InputError(f"{where}: tool_calls are not supported in training data yet")
    message: dict = {"role": role}
    if role == "assistant":
        message["content"] = _assistant_text(turn, content, where)
        return message
    if isinstance(content, str):
        message["content"] = _expand_placeholders(content, where, media, used, lists, base_dir, check_files)
    elif isinstance(content, list):
        message["content"] = [_part(p, f"{where}, part {j}", lists, base_dir, check_files)
                              for j, p in enumerate(content)]
    else:
        raise InputError(f"{where} ({role}): content must be a string or a list of parts, got "
                         f"{type(content).__name__}")
    return message


def _assistant_text(turn: dict, content: Any, where: str) -> str:
    """The assistant's text, with its reasoning as a leading <think> block when it has any."""
    if isinstance(content, list):
        texts = []
        for j, p in enumerate(content):
            if isinstance(p, str):
                texts.append(p)
            elif isinstance(p, dict) and p.get("type", "text") == "text" and isinstance(p.get("text"), str):
                texts.append(p["text"])
            else:
                raise InputError(f"{where}, part {j} (assistant): an answer is text only")
        content = "".join(texts)
    if not isinstance(content, str):
        raise InputError(f"{where} (assistant): content must be a string, got {type(content).__name__}")
    if PLACEHOLDER.search(content):
        raise InputError(f"{where} (assistant): an answer cannot hold <image> / <video>; media go in user turns")
    reasoning = turn.get("reasoning_content")
    if reasoning is not None:
        if not isinstance(reasoning, str):
            raise InputError(f"{where} (assistant): reasoning_content must be a string")
        if "<think>" in content:
            raise InputError(f"{where} (assistant): give the reasoning as reasoning_content or as a <think> block, "
                             "not both")
        content = f"<think>{reasoning}</think>\n{content}"
    if not parse_reasoning(content)[1].strip():
        raise InputError(f"{where} (assistant): the answer is empty")
    return content


def _expand_placeholders(text: str, where: str, media: dict, used: dict, lists: dict, base_dir: Path,
                         check_files: bool) -> str | list[dict]:
    """ShareGPT text with <image> / <video> placeholders -> text and media parts in order."""
    pieces = PLACEHOLDER.split(text)  # text, kind, text, kind, ..., text
    if len(pieces) == 1:
        return text
    parts: list[dict] = []
    for k, piece in enumerate(pieces):
        if k % 2 == 0:
            if piece:
                parts.append({"type": "text", "text": piece})
            continue
        if lists[piece] is None:
            raise InputError(f"{where}: has a <{piece}> placeholder but the line has no '{piece}s' list")
        source = next(media[piece], None)
        if source is None:
            raise InputError(f"{where}: more <{piece}> placeholders than the {len(lists[piece])} entries of "
                             f"'{piece}s'")
        used[piece] += 1
        label = f"{piece}s[{used[piece] - 1}]"
        if piece == "video" and isinstance(source, list):  # a video given as its frames
            if not source:
                raise InputError(f"{label}: an empty frame list")
            source = [resolve_source(f, f"{label} frame {n}", base_dir, check_files) for n, f in enumerate(source)]
        else:
            source = resolve_source(source, label, base_dir, check_files)
        parts.append({"type": piece, piece: source})
    return parts


def _part(part: Any, where: str, lists: dict, base_dir: Path, check_files: bool) -> dict:
    """An OpenAI / HF content part with its media source resolved; text parts pass through."""
    if isinstance(part, str):
        part = {"type": "text", "text": part}
    if not isinstance(part, dict):
        raise InputError(f"{where}: must be an object")
    ptype = part.get("type") or next((k for k in ("text", "image", "video") if k in part), None)
    if ptype not in ("image_url", "video_url", "image", "video"):
        if ptype == "text" and isinstance(part.get("text"), str) and PLACEHOLDER.search(part["text"]):
            raise InputError(f"{where}: <image> / <video> placeholders belong in string contents (ShareGPT "
                             "layout); in content parts give an image_url / video_url part")
        return part  # normalize_messages checks it
    kind = "image" if ptype.startswith("image") else "video"
    if lists[kind] is not None:
        raise InputError(f"{where}: an {kind} part and a '{kind}s' list in the same line; use one of the two")
    if ptype.endswith("_url"):
        value = part.get(ptype)
        value = value.get("url") if isinstance(value, dict) else value
    else:
        value = part.get(kind, part.get("url", part.get("path")))
    if not isinstance(value, str) or not value:
        raise InputError(f"{where} ({kind}): give the {kind} as a path or URL string")
    out = {"type": kind, kind: resolve_source(value, f"{where} ({kind})", base_dir, check_files)}
    if "fps" in part:
        out["fps"] = part["fps"]
    return out


def resolve_source(value: Any, where: str, base_dir: Path, check_files: bool = True) -> str:
    """A media reference as the server takes it: http(s) and data: URLs as they are (fetched with glmv.inputs'
    guards when used), file:// URLs and paths as an absolute path (relative ones from `base_dir`)."""
    if not isinstance(value, str) or not value:
        raise InputError(f"{where}: a media reference must be a non-empty path or URL string, got {value!r}")
    scheme = value.split(":", 1)[0].lower() if ":" in value[:10] else ""
    if scheme in URL_SCHEMES:
        return value
    if scheme == "file":
        path = Path(urllib.parse.unquote(urllib.parse.urlsplit(value).path))
    elif len(scheme) > 1:
        raise InputError(f"{where}: unsupported URL scheme {scheme!r} (use a path, file://, http(s):// or data:)")
    else:
        path = Path(value).expanduser()
        path = path if path.is_absolute() else base_dir / path
    if check_files and not path.is_file():
        raise InputError(f"{where}: no such file {str(path)!r}" +
                         ("" if Path(value).is_absolute() else f" (relative paths are read from {base_dir})"))
    return os.path.abspath(path)


def _check_order(messages: list[dict]) -> None:
    roles = [m["role"] for m in messages]
    if "user" not in roles:
        raise InputError("the conversation has no user turn")
    if roles[-1] != "assistant":
        raise InputError(f"the conversation must end with an assistant turn (the answer to learn), ends with "
                         f"{roles[-1]!r}")
    first_user = roles.index("user")
    if "assistant" in roles[:first_user]:
        raise InputError("an assistant turn comes before the first user turn")
    if any(r == "system" for r in roles[1:]):
        raise InputError("a system turn is only allowed first")


# --- encoding ---------------------------------------------------------------------------------------------------

def encode_conversation(processor: Processor, messages: list[dict], thinking: bool, task: str = "") -> Example:
    """Tokens and labels of a conversation ending with an assistant turn (see the module docstring). For one
    user turn and one answer this is exactly glmv.train.data.encode_example(processor, prompt, answer, thinking)."""
    normalized, media = normalize_messages(messages)
    images, videos = processor.process_media(media)
    assistant = [k for k, m in enumerate(normalized) if m["role"] == "assistant"]
    turns = [{"role": "assistant", "content": parse_reasoning(_text(m))[1]} if k in assistant[:-1] else m
             for k, m in enumerate(normalized)]

    def render(upto: int, generation: bool) -> str:
        return processor.render_chat(turns[:upto], generation, None, thinking)

    tok = processor.tokenizer
    end = tok.token_id("<|user|>")
    ids: list[int] = []
    labels: list[int] = []
    media_at = {"image": 0, "video": 0}
    label_next_end = False

    def add_prompt(text: str) -> None:
        nonlocal label_next_end
        raw = tok.encode_chat(text)
        n_img = raw.count(processor.media_tokens.image)
        n_vid = raw.count(processor.media_tokens.video)
        i, v = media_at["image"], media_at["video"]
        piece, _ = processor.encode_prompt(text, images[i:i + n_img], videos[v:v + n_vid])
        media_at["image"], media_at["video"] = i + n_img, v + n_vid
        piece_labels = [IGNORE] * len(piece)
        if label_next_end and piece and piece[0] == end:  # the <|user|> that ends the previous answer
            piece_labels[0] = end
        label_next_end = False
        ids.extend(piece)
        labels.extend(piece_labels)

    covered = ""
    for k in assistant[:-1]:
        prompt, full = render(k, True), render(k + 1, False)
        if not (prompt.startswith(covered) and full.startswith(prompt)):
            raise InputError("the chat template does not render this conversation turn by turn (a turn's prompt "
                             "is not a prefix of the next); train on single-turn lines with this checkpoint")
        add_prompt(prompt[len(covered):])
        written = full[len(prompt):]  # the answer as history shows it: "<think></think>\nanswer" when thinking
        close = written.rfind("</think>")
        skip = 0 if close < 0 else close + len("</think>") + (written[close + 8:close + 9] == "\n")
        if skip:
            ids.extend(tok.encode(written[:skip]))
            labels.extend([IGNORE] * (len(ids) - len(labels)))
        answer = tok.encode(written[skip:])
        ids.extend(answer)
        labels.extend(answer)
        label_next_end = True
        covered = full
    final = assistant[-1]
    prompt = render(final, True)
    if not prompt.startswith(covered):
        raise InputError("the chat template does not render this conversation turn by turn; train on single-turn "
                         "lines with this checkpoint")
    add_prompt(prompt[len(covered):])
    if media_at["image"] != len(images) or media_at["video"] != len(videos):
        raise InputError("media placeholders and media do not line up across the turns")
    target = tok.encode(format_target(_text(normalized[final]), thinking)) + [end]
    return Example(ids + target, labels + target, images, videos, task)


def _text(message: dict) -> str:
    content = message.get("content")
    if isinstance(content, list):
        content = "".join(p.get("text", "") for p in content if p.get("type") == "text")
    text = content or ""
    if message.get("reasoning_content"):
        text = f"<think>{message['reasoning_content']}</think>\n{text}"
    return text


def encode_line(processor: Processor, conversation: Conversation, thinking: bool, task: str = "") -> Example:
    """encode_conversation with errors (a corrupt image, a prompt the template refuses) naming the line."""
    try:
        return encode_conversation(processor, conversation.messages, thinking, task)
    except GlmvError as e:
        raise type(e)(f"{conversation.where}: {e}") from None
