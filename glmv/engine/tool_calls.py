"""GLM-4.5/4.6 tool calls: the blocks the model writes, parsed into OpenAI-shaped calls, whole or as text streams.

The model writes each call as

    <tool_call>get_weather
    <arg_key>city</arg_key>
    <arg_value>Paris</arg_value>
    <arg_key>days</arg_key>
    <arg_value>3</arg_value>
    </tool_call>

possibly several, possibly after some text. Values are text; the tool's JSON schema says which are numbers,
booleans, objects or arrays (parsed as JSON) and which are strings (kept as written). Without a schema a value
that parses as JSON is taken as JSON, else as a string (vLLM's glm45 parser does the same).

A block that does not follow this grammar, or is never closed, is not a call: it stays in the content as the
model wrote it, so nothing the model said is lost.
"""

from __future__ import annotations

import json
import re
from typing import Any

from glmv.engine.outputs import ReasoningStreamParser, ToolCall, held_prefix, parse_reasoning

TOOL_OPEN, TOOL_CLOSE = "<tool_call>", "</tool_call>"
ARG_KEY = "<arg_key>"
# A key cannot run past its </arg_key> (else a malformed pair would swallow the next one); a value ends at the
# first </arg_value>.
_ARG = re.compile(r"\s*<arg_key>((?:(?!</arg_key>).)*)</arg_key>\s*<arg_value>(.*?)</arg_value>", re.DOTALL)
_NON_STRING = ("integer", "number", "boolean", "object", "array", "null")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # NaN / Infinity: Python reads them, JSON clients cannot


def _json(text: str) -> Any:
    """The JSON value of `text`; ValueError if it is not one (RecursionError: nesting past the stack)."""
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def function_of(tool: Any) -> dict:
    """The function definition of an OpenAI tool ({"type": "function", "function": {...}}, or the bare
    definition); {} when it is neither."""
    function = tool.get("function", tool) if isinstance(tool, dict) else None
    return function if isinstance(function, dict) else {}


def _schema_types(tools: list[dict] | None, name: str, key: str) -> list[str] | None:
    """The JSON types the schema of tool `name` allows for argument `key`; None when it does not say."""
    for tool in tools or ():
        function = function_of(tool)
        if function.get("name") == name:
            parameters = function.get("parameters")
            properties = parameters.get("properties") if isinstance(parameters, dict) else None
            schema = properties.get(key) if isinstance(properties, dict) else None
            kind = schema.get("type") if isinstance(schema, dict) else None
            if isinstance(kind, str):
                return [kind]
            return [k for k in kind if isinstance(k, str)] if isinstance(kind, list) else None
    return None


def typed_value(value: str, types: list[str] | None) -> Any:
    """A value as the schema types it: a string when the schema allows strings (any text is one), JSON when it
    allows only other types or says nothing; text that does not parse stays a string (the client's own
    validation then sees what the model wrote)."""
    if types is not None and ("string" in types or not any(t in _NON_STRING for t in types)):
        return value
    try:
        return _json(value)
    except ValueError:
        return value


def parse_call(body: str, tools: list[dict] | None = None) -> ToolCall | None:
    """The call between <tool_call> and </tool_call>: the name, then key/value pairs and nothing else; None
    when the body does not follow that grammar."""
    at = body.find(ARG_KEY)
    name = (body if at < 0 else body[:at]).strip()
    if not name or "<" in name or any(c.isspace() for c in name):
        return None
    arguments, pos = {}, len(body) if at < 0 else at
    while (m := _ARG.match(body, pos)) is not None:
        key = m.group(1).strip()
        arguments[key] = typed_value(m.group(2).strip(), _schema_types(tools, name, key))
        pos = m.end()
    if body[pos:].strip():
        return None
    return ToolCall(name, json.dumps(arguments, ensure_ascii=False))


class ToolCallStreamParser:
    """Tool calls out of streamed content: feed() the content deltas, get (content delta, finished calls) back.

    Content is the text outside the calls. Whitespace just before a call is dropped (the model writes "\\n"
    there), and so are the content's leading whitespace and, once a call was made, its trailing whitespace: an
    answer without calls keeps its text as parse_reasoning gave it (which already starts at a non-space).
    Text that could be the start of <tool_call>, and a call until its </tool_call>, are held back.
    `feed(text, final=True)` in one go is the non-streamed parse; any split of the text gives the same result.
    """

    def __init__(self, tools: list[dict] | None = None):
        self.tools = tools
        self.pending = ""  # raw text not yet decided: a possible <tool_call> prefix, or an open call
        self.space = ""  # trailing whitespace of the content so far: dropped if a call (or the end after one) follows
        self.started = False  # some content was emitted (leading whitespace is dropped until then)
        self.calls = 0  # calls parsed so far

    def feed(self, delta: str, final: bool = False) -> tuple[str, list[ToolCall]]:
        text, self.pending = self.pending + delta, ""
        content, calls = [], []
        while True:
            at = text.find(TOOL_OPEN)
            if at < 0:
                keep = 0 if final else held_prefix(text, TOOL_OPEN)
                content.append(self._content(text[: len(text) - keep]))
                self.pending = text[len(text) - keep :]
                break
            content.append(self._content(text[:at]))
            end = text.find(TOOL_CLOSE, at)
            if end < 0:  # an open call: wait for its end; one never closed stays content
                if final:
                    content.append(self._content(text[at:]))
                else:
                    self.pending = text[at:]
                break
            call = parse_call(text[at + len(TOOL_OPEN) : end], self.tools)
            if call is None:
                content.append(self._content(text[at : end + len(TOOL_CLOSE)]))
            else:
                calls.append(call)
                self.calls += 1
                self.space = ""
            text = text[end + len(TOOL_CLOSE) :]
        if final and not self.calls:
            content.append(self.space)
        return "".join(content), calls

    def _content(self, text: str) -> str:
        """Text outside calls, minus leading whitespace of the content and the trailing whitespace held back."""
        if not self.started:
            text = text.lstrip()
            self.started = bool(text)
        text = self.space + text
        body = text.rstrip()
        self.space = text[len(body) :]
        return body


def parse_tool_calls(content: str, tools: list[dict] | None = None) -> tuple[str, list[ToolCall]]:
    """(content outside the calls, the calls) of a whole answer; ToolCallStreamParser's rules."""
    return ToolCallStreamParser(tools).feed(content, final=True)


class AnswerStreamParser:
    """A completion's reasoning, content and tool calls as it streams: ReasoningStreamParser, then, when the
    request has tools, ToolCallStreamParser over the content (a <tool_call> inside the thinking is thinking).
    feed() -> (reasoning delta, content delta, finished calls); the pieces add up to parse_answer's."""

    def __init__(self, in_think: bool = False, tools: list[dict] | None = None):
        self.thinking = ReasoningStreamParser(in_think)
        self.tool_calls = ToolCallStreamParser(tools) if tools else None

    def feed(self, delta: str, final: bool = False) -> tuple[str, str, list[ToolCall]]:
        reasoning, content = self.thinking.feed(delta, final)
        if self.tool_calls is None:
            return reasoning, content, []
        content, calls = self.tool_calls.feed(content, final)
        return reasoning, content, calls


def parse_answer(text: str, in_think: bool = False,
                 tools: list[dict] | None = None) -> tuple[str | None, str, list[ToolCall]]:
    """(reasoning, content, tool calls) of a whole completion: parse_reasoning, then parse_tool_calls on the
    content when the request has tools."""
    reasoning, content = parse_reasoning(text, in_think)
    if not tools:
        return reasoning, content, []
    content, calls = parse_tool_calls(content, tools)
    return reasoning, content, calls
