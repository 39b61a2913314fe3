"""What clients do, against `glmv serve` with the bundled nano model: the official openai client resending a whole
conversation each turn (served from the prefix cache, its answer included) and forcing a tool call, streamed or
not; tool calling and structured output through litellm (as an OpenAI-compatible provider) and langchain-openai's
ChatOpenAI (bind_tools, with_structured_output). The model never learned tool calls: tool_choice naming the
function makes the grammar enforce a call, so what is checked is each client's round trip. Tests of a client that
is not installed are skipped."""

from __future__ import annotations

import io
import json

import jsonschema
import openai
import pytest
from pydantic import BaseModel, Field

from glmv.model_path import BUNDLED
from glmv.testing.media_urls import image_part
from glmv.testing.server import serve_process
from glmv.world import sample

pytestmark = pytest.mark.skipif(not (BUNDLED / "config.json").is_file(), reason="no bundled model in this copy")

MODEL = "nano"
PARAMS = {"type": "object", "required": ["city", "days"],
          "properties": {"city": {"type": "string", "maxLength": 12},
                         "days": {"type": "integer", "minimum": 1, "maximum": 9}}}
WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "The weather in a city.",
                                            "parameters": PARAMS}}
QUESTION = "What is the weather in Paris for the next 3 days?"
NO_THINKING = {"chat_template_kwargs": {"enable_thinking": False}}  # the nano model's greedy thinking runs long


class Forecast(BaseModel):
    city: str = Field(max_length=12)
    days: int = Field(ge=1, le=9)
    sunny: bool


BLOCK = 4  # small KV blocks, so that a short answer fills blocks of its own


@pytest.fixture(scope="module")
def server():
    with serve_process(BUNDLED, "--block-size", str(BLOCK)) as s:
        yield s


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0, timeout=300)


def test_a_resent_conversation_reuses_the_previous_turn_and_its_answer(client):
    """Turn 2 finds turn 1's prompt and answer in the prefix cache (all but the end token, which is sampled, never
    computed). With thinking off: GLM's template re-renders an earlier answer token for token, but drops earlier
    reasoning, so a thinking turn's answer is recomputed (vLLM has the same limit with this template)."""
    s = sample("color", "test", 0)
    png = io.BytesIO()
    s.image.save(png, format="PNG")
    messages = [{"role": "user", "content": [image_part(png.getvalue()), {"type": "text", "text": s.prompt}]}]
    first = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=32, temperature=0,
                                           extra_body=NO_THINKING)
    messages += [{"role": "assistant", "content": first.choices[0].message.content},
                 {"role": "user", "content": "And its shape?"}]
    second = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=8, temperature=0,
                                            extra_body=NO_THINKING)
    turn_one = first.usage.prompt_tokens + first.usage.completion_tokens - 1
    assert first.choices[0].finish_reason == "stop" and turn_one // BLOCK > first.usage.prompt_tokens // BLOCK
    assert second.usage.prompt_tokens_details.cached_tokens >= turn_one // BLOCK * BLOCK


@pytest.mark.parametrize("stream", [False, True])
def test_openai_client_named_tool_choice_returns_valid_arguments(client, stream):
    kwargs = {"model": MODEL, "messages": [{"role": "user", "content": QUESTION}], "tools": [WEATHER],
              "tool_choice": {"type": "function", "function": {"name": "get_weather"}}, "max_tokens": 160,
              "temperature": 0, "extra_body": NO_THINKING}
    if not stream:
        choice = client.chat.completions.create(**kwargs).choices[0]
        calls, finish = [(c.function.name, c.function.arguments) for c in choice.message.tool_calls], choice.finish_reason
    else:
        calls, finish = [], None
        for chunk in client.chat.completions.create(stream=True, **kwargs):
            for c in chunk.choices:
                for d in c.delta.tool_calls or []:
                    if d.function.name:
                        calls.append((d.function.name, ""))
                    calls[-1] = (calls[-1][0], calls[-1][1] + (d.function.arguments or ""))
                finish = c.finish_reason or finish
    assert finish == "tool_calls" and [name for name, _ in calls] == ["get_weather"]
    jsonschema.validate(json.loads(calls[0][1]), PARAMS)


def test_litellm_tool_call_and_json_schema(server, monkeypatch):
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network at import
    litellm = pytest.importorskip("litellm")
    common = {"model": f"openai/{MODEL}", "api_base": server.url + "/v1", "api_key": "none", "temperature": 0,
              "max_tokens": 160, "messages": [{"role": "user", "content": QUESTION}], "extra_body": NO_THINKING}
    out = litellm.completion(tools=[WEATHER], tool_choice={"type": "function", "function": {"name": "get_weather"}},
                             **common)
    call = out.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather" and out.choices[0].finish_reason == "tool_calls"
    jsonschema.validate(json.loads(call.function.arguments), PARAMS)
    schema = {"name": "forecast", "schema": Forecast.model_json_schema(), "strict": True}
    out = litellm.completion(response_format={"type": "json_schema", "json_schema": schema}, **common)
    Forecast.model_validate_json(out.choices[0].message.content)


def test_langchain_bind_tools_and_structured_output(server):
    langchain_openai = pytest.importorskip("langchain_openai")
    chat = langchain_openai.ChatOpenAI(base_url=server.url + "/v1", api_key="none", model=MODEL, temperature=0,
                                       max_tokens=160, max_retries=0, extra_body=NO_THINKING)
    message = chat.bind_tools([WEATHER], tool_choice="get_weather").invoke(QUESTION)
    assert [c["name"] for c in message.tool_calls] == ["get_weather"]
    jsonschema.validate(message.tool_calls[0]["args"], PARAMS)
    forecast = chat.with_structured_output(Forecast, method="json_schema").invoke(QUESTION)
    assert isinstance(forecast, Forecast)
    forecast = chat.with_structured_output(Forecast, method="function_calling").invoke(QUESTION)
    assert isinstance(forecast, Forecast)  # a tool named Forecast, forced with tool_choice


def test_clients_see_our_errors_as_theirs(server):
    langchain_openai = pytest.importorskip("langchain_openai")
    chat = langchain_openai.ChatOpenAI(base_url=server.url + "/v1", api_key="none", model="gpt-4o", max_retries=0)
    with pytest.raises(openai.NotFoundError):
        chat.invoke("hi")
