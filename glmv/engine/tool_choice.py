"""tool_choice: which tools a request renders, and for "required" / a named function, the grammar that makes the
answer exactly GLM's tool-call blocks (enforced by constrained decoding, glmv/engine/guided.py).

The grammar follows what GLM-4.5/4.6's chat template writes for an assistant's calls (and the model was trained
to write):

    <tool_call>NAME
    <arg_key>KEY</arg_key>
    <arg_value>VALUE</arg_value>
    </tool_call>

with the keys of the tool's parameter schema in its order (required ones always, optional ones may be left out;
`"properties": {}` means no arguments, a schema without "properties" takes any keys), string values as plain text without "<", other values as JSON
valid against the property's schema (llguidance's %json, in the one JSON layout of guided.py); a string's
minLength / maxLength bound its text. The tags are the
tokenizer's added tokens when it has them (GLM-4.5V's does), else text. "required": one call or more, of any of
the tools; a named function: exactly one call of it (vLLM forces one call too). Thinking still comes first:
the grammar applies after </think>.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from glmv.engine.guided import JSON_LAYOUT
from glmv.engine.sampling import SamplingParams
from glmv.engine.tool_calls import function_of
from glmv.errors import InputError

TAGS = ("<tool_call>", "</tool_call>", "<arg_key>", "</arg_key>", "<arg_value>", "</arg_value>")
_JSON_KINDS = {"integer", "number", "boolean", "object", "array", "null"}


def plan_tools(tools: list[dict] | None, tool_choice: str | dict | None, added_tokens: set[str] = frozenset(),
               ) -> tuple[list[dict] | None, str | None]:
    """(the tools to render into the prompt, a Lark grammar the answer must follow or None).

    tool_choice: "auto" (the default: every tool rendered, the model decides), "none" (no tools rendered, so
    no call is made or parsed: vLLM's way), "required", or {"type": "function", "function": {"name": ...}}
    (only that tool rendered). added_tokens: the tokenizer's added tokens (the tags are tokens when present)."""
    choice = tool_choice or "auto"
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        if not isinstance(name, str):
            raise InputError("a named tool_choice is {'type': 'function', 'function': {'name': ...}}")
    elif choice not in ("none", "auto", "required"):
        raise InputError(f"tool_choice must be 'none', 'auto', 'required' or a named function, got {choice!r}")
    if not tools and choice not in ("none", "auto"):
        raise InputError("tool_choice 'required' or a named function needs 'tools'")
    if not tools or choice == "none":
        return None, None
    if choice == "auto":
        return tools, None
    if choice == "required":
        return tools, tool_call_grammar(tools, added_tokens, at_least_one=True)
    named = [t for t in tools if function_of(t).get("name") == name]
    if not named:
        raise InputError(f"tool_choice names the function {name!r}, which is not in 'tools'")
    return named[:1], tool_call_grammar(named[:1], added_tokens, at_least_one=False)


def tool_call_grammar(tools: list[dict], added_tokens: set[str] = frozenset(), at_least_one: bool = True) -> str:
    """A Lark grammar (llguidance's dialect) for an answer made of calls to `tools`: one or more calls of any
    of them (at_least_one), or exactly one call of the only tool."""
    tag = {t: t if t in added_tokens else _literal(t) for t in TAGS}
    rules, calls = [], []
    for i, tool in enumerate(tools):
        function = function_of(tool)
        name = function.get("name")
        if not isinstance(name, str) or not name:
            raise InputError(f"tool {i} has no function name")
        params = function.get("parameters") if isinstance(function.get("parameters"), dict) else {}
        properties = params.get("properties")
        required = set(params.get("required") or ())
        defs = {k: params[k] for k in ("$defs", "definitions") if isinstance(params.get(k), dict)}
        pairs = []
        if isinstance(properties, dict):  # the declared keys only ({}: a function without arguments)
            for k, (key, schema) in enumerate(properties.items()):
                rule = f"arg_{i}_{k}"
                rules.append(f"{rule}: {tag['<arg_key>']} {_literal(key)} {tag['</arg_key>']} \"\\n\" "
                             f"{tag['<arg_value>']} {_value(schema, defs)} {tag['</arg_value>']} \"\\n\"")
                pairs.append(rule if key in required else f"{rule}?")
        else:  # no "properties" at all: any keys, any text
            rules.append(f"arg_{i}_any: {tag['<arg_key>']} /[A-Za-z0-9_.\\-]+/ {tag['</arg_key>']} \"\\n\" "
                         f"{tag['<arg_value>']} /[^<]*/ {tag['</arg_value>']} \"\\n\"")
            pairs.append(f"arg_{i}_any*")
        rules.append(f"call_{i}: {tag['<tool_call>']} {_literal(name)} \"\\n\" {' '.join(pairs)} {tag['</tool_call>']}")
        calls.append(f"call_{i}")
    call = " | ".join(calls)
    start = f"start: call (\"\\n\"? call)*" if at_least_one else "start: call"
    return "\n".join([start, f"call: {call}", *rules])


def _literal(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def _value(schema: Any, defs: dict) -> str:
    """A value as GLM writes it: a string as plain text (an enum of strings as one of them), anything else as
    JSON valid against the schema; `defs`: the parameters' $defs, which a property's $ref points into (pydantic
    writes nested models so)."""
    schema = schema if isinstance(schema, dict) else {}
    kind = schema.get("type")
    kinds = {kind} if isinstance(kind, str) else set(kind) if isinstance(kind, list) else set()
    if "string" in kinds or (kinds and not kinds & _JSON_KINDS):
        enum = schema.get("enum")
        if isinstance(enum, list) and enum and all(isinstance(v, str) for v in enum):
            return "(" + " | ".join(_literal(v) for v in enum) + ")"
        low, high = schema.get("minLength", 0), schema.get("maxLength")
        if not isinstance(low, int) or not (high is None or isinstance(high, int)) or low < 0 or (high or low) < low:
            raise InputError(f"bad minLength/maxLength in a tool's parameter schema: {schema}")
        return f"/[^<]{{{low},{'' if high is None else high}}}/"
    return "%json " + json.dumps({**schema, **defs, "x-guidance": JSON_LAYOUT}, ensure_ascii=False)


def with_tool_grammar(params: SamplingParams, grammar: str | None) -> SamplingParams:
    """`params` constrained to the tool-call grammar; asking for structured output as well is refused (the answer
    cannot be both)."""
    if grammar is None:
        return params
    if params.structured is not None:
        raise InputError("tool_choice 'required' or a named function fixes the answer's format: it cannot be "
                         "combined with response_format or other structured output")
    return replace(params, grammar=grammar)
