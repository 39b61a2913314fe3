"""OpenAI response bodies built from glmv's RequestOutput / CompletionOutput (plain dicts: they go straight to
JSON, and building pydantic models for every streamed chunk would only cost time)."""

from __future__ import annotations

import json
import time
import uuid

from glmv.engine.outputs import CompletionOutput, ToolCall
from glmv.inputs.tokenizer import Tokenizer


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def now() -> int:
    return int(time.time())


def sse(obj: dict) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


SSE_DONE = "data: [DONE]\n\n"


def _token(tok: Tokenizer, token_id: int, logprob: float) -> dict:
    text = tok.decode([token_id])
    return {"token": text, "logprob": logprob, "bytes": list(text.encode())}


def chat_logprobs(tok: Tokenizer, entries: list[dict[int, float]], ids: list[int], top: int) -> dict:
    """{"content": [{token, logprob, bytes, top_logprobs}]} for the given generated tokens.

    Each engine entry holds the chosen token and the top tokens; the chosen one may lie outside the top, so
    the top list is re-derived by sorting rather than by position.
    """
    content = []
    for entry, token_id in zip(entries, ids):
        best = sorted(entry.items(), key=lambda kv: -kv[1])[:top]
        content.append({**_token(tok, token_id, entry[token_id]),
                        "top_logprobs": [_token(tok, i, lp) for i, lp in best]})
    return {"content": content}


def completion_logprobs(tok: Tokenizer, entries: list[dict[int, float]], ids: list[int], top: int,
                        offset: int = 0) -> dict:
    """The legacy /v1/completions shape: parallel lists, offsets counted in characters of the text."""
    tokens = [tok.decode([i]) for i in ids]
    offsets, at = [], offset
    for text in tokens:
        offsets.append(at)
        at += len(text)
    return {
        "tokens": tokens,
        "token_logprobs": [entry[i] for entry, i in zip(entries, ids)],
        "top_logprobs": [{tok.decode([i]): lp for i, lp in sorted(e.items(), key=lambda kv: -kv[1])[:top]}
                         for e in entries],
        "text_offset": offsets,
    }


def chat_message(c: CompletionOutput) -> dict:
    """The assistant message of a sample. reasoning_content is null when the model did not think (no block, or
    an empty one: a stream sends no reasoning then either); content is null only beside tool calls."""
    message = {"role": "assistant", "content": c.content or (None if c.tool_calls else ""),
               "reasoning_content": c.reasoning or None}
    if c.tool_calls:
        message["tool_calls"] = [call.to_openai() for call in c.tool_calls]
    return message


def chat_finish_reason(reason: str | None, called: bool) -> str | None:
    """OpenAI's "tool_calls" when a sample that made calls stopped by itself; a cut ("length") stays a cut."""
    return "tool_calls" if called and reason == "stop" else reason


def tool_call_deltas(call: ToolCall, index: int) -> list[dict]:
    """A finished call as OpenAI streams one: a delta naming it (id, type, name, empty arguments), then one with
    its arguments. Calls are sent whole, once their </tool_call> is seen: a block can still prove malformed
    (and stay text) until then."""
    return [{"tool_calls": [{"index": index, "id": call.id, "type": call.type,
                             "function": {"name": call.name, "arguments": ""}}]},
            {"tool_calls": [{"index": index, "function": {"arguments": call.arguments}}]}]
