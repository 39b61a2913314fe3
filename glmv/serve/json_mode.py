"""response_format json_object / json_schema: enforced by constrained decoding, reported per choice as `json_valid`.

protocol.ResponseFormat.params() turns the format into SamplingParams' json_object / json_schema, and the sampler
masks every token of the answer to what the grammar allows (glmv.engine.guided): the answer is JSON that validates
against the schema, whatever the model. Nothing is added to the prompt (as in vLLM; OpenAI also leaves the asking
to the client): on the bundled model any system hint halved chart-to-JSON F1 (0.12 -> 0.06 on 30 test samples)
and did not help colour answers. `json_valid` stays: an answer cut by max_tokens or a stop string is not JSON.
"""

from __future__ import annotations

import json

from glmv.serve.protocol import ResponseFormat


def wants_json(fmt: ResponseFormat | None) -> bool:
    return fmt is not None and fmt.type != "text"


def is_json(content: str) -> bool:
    """Whether the answer is one complete JSON value (the grammar decides which kind)."""
    try:
        json.loads(content)
        return True
    except ValueError:
        return False

