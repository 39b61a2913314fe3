"""response_format json_object / json_schema, best effort: there is no constrained decoding yet.

The request gets a system instruction asking for JSON (with the schema, if one was given); the answer is then
parsed and each choice reports whether it was valid JSON (`json_valid`). Nothing forces the model to comply.
"""

from __future__ import annotations

import json
import re

from glmv.serve.protocol import ResponseFormat

_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)


def instruction(fmt: ResponseFormat | None) -> str | None:
    if fmt is None or fmt.type == "text":
        return None
    text = "Answer with one valid JSON object and nothing else."
    if fmt.type == "json_schema" and fmt.json_schema and fmt.json_schema.schema_:
        text += " It must follow this JSON schema: " + json.dumps(fmt.json_schema.schema_, ensure_ascii=False)
    return text


def with_instruction(messages: list[dict], fmt: ResponseFormat | None) -> list[dict]:
    """The messages with the JSON instruction added to the system message (one is created if there is none)."""
    text = instruction(fmt)
    if text is None:
        return messages
    if messages and messages[0].get("role") == "system" and isinstance(messages[0].get("content"), str):
        return [{**messages[0], "content": messages[0]["content"] + "\n\n" + text}, *messages[1:]]
    return [{"role": "system", "content": text}, *messages]


def is_json(content: str) -> bool:
    """Whether the answer is one JSON object (a ```json fence around it is tolerated: models write one)."""
    text = content.strip()
    fenced = _FENCE.match(text)
    try:
        return isinstance(json.loads(fenced.group(1) if fenced else text), dict)
    except ValueError:
        return False
