"""Structured output through `glmv serve` with the bundled nano model: response_format json_schema / json_object
(plain and streamed, thinking on and off), the openai client's parse() with a pydantic model, vLLM's
structured_outputs and guided_* fields, and bad constraints refused with 400."""

from __future__ import annotations

import io
import json
import re
from typing import Literal

import httpx
import jsonschema
import openai
import pytest
from pydantic import BaseModel, Field

from glmv.model_path import BUNDLED
from glmv.testing.media_urls import image_part
from glmv.testing.server import serve_process
from glmv.world import sample

pytestmark = pytest.mark.skipif(not (BUNDLED / "config.json").is_file(), reason="no bundled model in this copy")

MODEL = "nano"  # the bundled checkpoint directory's name
SCHEMA = {
    "type": "object", "additionalProperties": False, "required": ["kind", "values", "title"],
    "properties": {"kind": {"enum": ["bar", "pie", "line"]},
                   "values": {"type": "array", "minItems": 1, "maxItems": 6,
                              "items": {"type": "integer", "minimum": 0, "maximum": 20}},
                   "title": {"type": "string", "maxLength": 16},
                   "note": {"anyOf": [{"type": "string", "pattern": "^[a-z ]{0,12}$"}, {"type": "null"}]}}}
RESPONSE_FORMAT = {"type": "json_schema", "json_schema": {"name": "chart", "schema": SCHEMA, "strict": True}}


@pytest.fixture(scope="module")
def server():
    with serve_process(BUNDLED, "--max-batch", "16") as s:  # the bundled model, as `glmv serve` loads it alone
        yield s


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0, timeout=300)


def chart_question() -> list[dict]:
    """A chart from the procedural world's test split, asked about as its chart_json task does."""
    s = sample("chart_json", "test", 0)
    png = io.BytesIO()
    s.image.save(png, format="PNG")
    return [{"role": "user", "content": [image_part(png.getvalue()), {"type": "text", "text": "Convert the chart to JSON."}]}]


def thinking(on: bool) -> dict:
    return {"chat_template_kwargs": {"enable_thinking": on}}


@pytest.mark.parametrize("think", [False, True])
def test_json_schema_answers_all_validate(client, think):
    """20 sampled answers (n=10, two seeds) to a chart question: every one parses and validates."""
    contents, thought = [], 0
    for seed in (1, 2):
        out = client.chat.completions.create(model=MODEL, messages=chart_question(), response_format=RESPONSE_FORMAT,
                                             n=10, temperature=1.0, seed=seed, max_tokens=400, extra_body=thinking(think))
        for c in out.choices:
            assert c.finish_reason == "stop" and c.json_valid is True
            contents.append(c.message.content)
            thought += c.message.reasoning_content is not None
    for content in contents:
        jsonschema.validate(json.loads(content), SCHEMA)
    assert len(contents) == 20 and len(set(contents)) > 5
    # thinking on: the model (trained to) opens <think> first, and the grammar waits for </think>
    assert thought == 0 if not think else thought >= 15


@pytest.mark.parametrize("think", [False, True])
def test_streamed_json_equals_plain_and_validates(client, think):
    kwargs = dict(model=MODEL, messages=chart_question(), response_format=RESPONSE_FORMAT, temperature=0,
                  max_tokens=400, extra_body=thinking(think))
    plain = client.chat.completions.create(**kwargs)
    content, finish, valid = "", None, None
    for chunk in client.chat.completions.create(stream=True, **kwargs):
        for c in chunk.choices:
            content += c.delta.content or ""
            finish = c.finish_reason or finish
            valid = getattr(c, "json_valid", valid)
    assert content == plain.choices[0].message.content and finish == "stop" and valid is True
    jsonschema.validate(json.loads(content), SCHEMA)


def test_json_object_and_no_prompt_change(client):
    base = client.chat.completions.create(model=MODEL, messages=chart_question(), max_tokens=1, extra_body=thinking(False))
    out = client.chat.completions.create(model=MODEL, messages=chart_question(), response_format={"type": "json_object"},
                                         n=4, seed=0, temperature=1.0, max_tokens=300, extra_body=thinking(False))
    assert out.usage.prompt_tokens == base.usage.prompt_tokens  # enforced by the sampler, not asked for in the prompt
    for c in out.choices:
        assert isinstance(json.loads(c.message.content), dict) and c.json_valid is True


class Chart(BaseModel):
    kind: Literal["bar", "pie", "line"]
    values: list[int] = Field(min_length=1, max_length=6)
    title: str = Field(max_length=16)
    unit: str | None = Field(default=None, max_length=8)


def test_openai_parse_with_a_pydantic_model(client):
    parse = client.beta.chat.completions.parse if hasattr(client.beta, "chat") else client.chat.completions.parse
    for think in (False, True):
        out = parse(model=MODEL, messages=chart_question(), response_format=Chart, max_tokens=400, temperature=0,
                    extra_body=thinking(think))
        chart = out.choices[0].message.parsed
        assert isinstance(chart, Chart) and 1 <= len(chart.values) <= 6


def test_vllm_structured_outputs_and_guided_fields(server):
    def ask(**extra) -> dict:
        body = {"model": MODEL, "messages": chart_question(), "max_tokens": 60, "temperature": 1.0, "seed": 3, "n": 4,
                **thinking(False), **extra}
        r = httpx.post(server.url + "/v1/chat/completions", json=body, timeout=300)
        assert r.status_code == 200, r.text
        return r.json()

    def contents(body: dict) -> list[str]:
        return [c["message"]["content"] for c in body["choices"]]

    assert set(contents(ask(structured_outputs={"choice": ["bar", "pie chart"]}))) <= {"bar", "pie chart"}
    assert all(re.fullmatch(r"[A-E]=\d{1,2}", t) for t in contents(ask(guided_regex=r"[A-E]=\d{1,2}")))
    assert all(t in ("yes", "no") for t in contents(ask(guided_choice=["yes", "no"])))
    assert all(re.fullmatch(r"\d{1,3} bars", t) for t in contents(ask(structured_outputs={"grammar": 'start: /[0-9]{1,3}/ " bars"'})))
    assert all(re.fullmatch(r"(yes|no)!", t) for t in contents(ask(guided_grammar='root ::= ("yes" | "no") "!"')))
    for t in contents(ask(guided_json=SCHEMA, max_tokens=300)) + contents(ask(structured_outputs={"json": json.dumps(SCHEMA)}, max_tokens=300)):
        jsonschema.validate(json.loads(t), SCHEMA)
    # /v1/completions takes the vLLM fields too
    r = httpx.post(server.url + "/v1/completions", json={"model": MODEL, "prompt": "The answer is", "max_tokens": 10,
                                                         "guided_choice": ["A", "B"], "n": 3, "seed": 1}, timeout=300)
    assert r.status_code == 200 and {c["text"] for c in r.json()["choices"]} <= {"A", "B"}


@pytest.mark.parametrize("extra,message", [
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nope"}}}}, "nope"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "array", "uniqueItems": True}}}}, "uniqueItems"),
    ({"guided_regex": "(unclosed"}, "regex"),
    ({"guided_choice": []}, "choice"),
    ({"structured_outputs": {"grammar": "start: undefined_rule"}}, "grammar"),
    ({"guided_json": "{not json"}, "json_schema is not valid JSON"),
    ({"guided_regex": "a", "response_format": {"type": "json_object"}}, "use one"),
    ({"structured_outputs": {"regex": "a", "choice": ["b"]}}, "at most one"),
    ({"guided_choice": "yes"}, "guided_choice"),  # a string, not a list: the field's type
])
def test_bad_constraints_are_400(server, extra, message):
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5, **extra}
    r = httpx.post(server.url + "/v1/chat/completions", json=body, timeout=60)
    assert r.status_code == 400 and message in r.json()["error"]["message"], r.text
    ok = httpx.post(server.url + "/v1/chat/completions", json={**body, **{k: None for k in extra}}, timeout=60)
    assert ok.status_code == 200  # the server is unharmed
