"""Tool calling over the OpenAI API, with the official openai client.

The tiny random model cannot write a tool call, so most tests run the app in-process and replace each request's
detokenizer with a script: everything else (request parsing, tool rendering, the engine, reasoning and call
parsing, streaming, the response shapes) is the real path. The last tests check shapes against a real
`glmv serve` process with the tiny model's own answers."""

from __future__ import annotations

import json

import httpx
import openai
import pytest
from starlette.testclient import TestClient

from glmv import LLM
from glmv.serve.app import ServerConfig, create_app
from glmv.testing.scripted import ScriptedDetokenizer, pieces

MODEL = "tiny-glmv"
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                   "required": ["city"]}}}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}
END = "<END>"  # each script ends with this stop string, so the sample stops by itself


def glm_call(name: str, **arguments: str) -> str:
    pairs = "".join(f"\n<arg_key>{k}</arg_key>\n<arg_value>{v}</arg_value>" for k, v in arguments.items())
    return f"<tool_call>{name}{pairs}\n</tool_call>"


@pytest.fixture(scope="module")
def app(model_dir):
    llm = LLM(model_dir, progress=False)
    with TestClient(create_app(llm, ServerConfig())) as http:
        yield llm, http


@pytest.fixture
def client(app):
    return openai.OpenAI(base_url="http://testserver/v1", api_key="unused", http_client=app[1], max_retries=0)


@pytest.fixture
def script(app, monkeypatch):
    """script(answer) makes every following request 'generate' answer + END, in 3-character pieces; it returns
    the list the prepared requests go to (their prompt and tools can be inspected)."""
    llm, _ = app
    prepare, prepared = llm.prepare_chat, []

    def set_script(answer: str) -> list:
        def scripted(*args, **kwargs):
            requests = prepare(*args, **kwargs)
            for r in requests:
                r.detoks = [ScriptedDetokenizer(pieces(answer + END)) for _ in r.seqs]
            prepared.extend(requests)
            return requests

        monkeypatch.setattr(llm, "prepare_chat", scripted)
        return prepared

    return set_script


def ask(client, stream: bool = False, **kwargs):
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Weather in Paris for 3 days?"}],
            "tools": [WEATHER, TIME], "max_tokens": 200, "stop": [END], "extra_body": {"ignore_eos": True},
            **kwargs}
    return client.chat.completions.create(stream=stream, **body)


def collect(stream) -> tuple[str, str, list[dict], str | None]:
    """(content, reasoning, tool calls, finish_reason) of one streamed choice, checking OpenAI's delta shape:
    the first delta of a call has its id, type and name (arguments ""), later ones only arguments."""
    content, reasoning, calls, finish = "", "", [], None
    for chunk in stream:
        for c in chunk.choices:
            content += c.delta.content or ""
            reasoning += getattr(c.delta, "reasoning_content", None) or ""
            for d in c.delta.tool_calls or []:
                if d.index == len(calls):
                    assert d.id.startswith("call_") and d.type == "function" and d.function.arguments == ""
                    calls.append({"id": d.id, "name": d.function.name, "arguments": ""})
                else:
                    assert d.index == len(calls) - 1 and d.id is None and d.function.name is None
                    calls[d.index]["arguments"] += d.function.arguments
            finish = c.finish_reason or finish
    return content, reasoning, calls, finish


def plain_calls(message) -> list[dict]:
    return [{"id": c.id, "name": c.function.name, "arguments": c.function.arguments} for c in message.tool_calls]


def test_a_call_after_thinking_and_text(client, script):
    script("<think>They want the weather.</think>\nLet me check.\n" + glm_call("get_weather", city="Paris", days="3"))
    out = ask(client)
    choice = out.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "Let me check." and choice.message.reasoning_content == "They want the weather."
    [call] = choice.message.tool_calls
    assert call.type == "function" and call.id.startswith("call_") and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris", "days": 3}  # days typed by the schema

    content, reasoning, calls, finish = collect(ask(client, stream=True))
    assert (content, reasoning, finish) == ("Let me check.", "They want the weather.", "tool_calls")
    assert [(c["name"], c["arguments"]) for c in calls] == [("get_weather", call.function.arguments)]


def test_several_calls_and_no_text(client, script):
    script("\n" + glm_call("get_weather", city="Paris") + "\n" + glm_call("get_time") + "\n")
    message = ask(client).choices[0].message
    assert message.content is None and message.reasoning_content is None
    assert [(c["name"], json.loads(c["arguments"])) for c in plain_calls(message)] == [
        ("get_weather", {"city": "Paris"}), ("get_time", {})]
    assert len({c["id"] for c in plain_calls(message)}) == 2
    content, _, calls, finish = collect(ask(client, stream=True))
    assert content == "" and finish == "tool_calls"
    assert [(c["name"], c["arguments"]) for c in calls] == [(c["name"], c["arguments"]) for c in plain_calls(message)]


def test_malformed_or_cut_calls_stay_text(client, script):
    text = "Calling <tool_call>get weather\n</tool_call>"  # a space in the name: not a call
    script(text)
    choice = ask(client).choices[0]
    assert choice.message.content == text and not choice.message.tool_calls and choice.finish_reason == "stop"
    script(glm_call("get_weather", city="Paris") + " and more")
    choice = ask(client, max_tokens=2).choices[0]  # cut at 2 tokens (the script's rest comes with the flush)
    assert choice.finish_reason == "length" and len(choice.message.tool_calls) == 1  # a cut says so, calls or not


def test_tool_choice_none_renders_no_tools_and_parses_nothing(client, script):
    prepared = script(glm_call("get_time"))
    choice = ask(client, tool_choice="none").choices[0]
    assert choice.message.content == glm_call("get_time") and not choice.message.tool_calls
    assert choice.finish_reason == "stop"
    assert prepared[-1].tools is None and "get_weather" not in prepared[-1].prompt


def test_tool_choice_required_and_named_are_enforced_by_a_grammar(client, script):
    prepared = script(glm_call("get_time"))
    assert ask(client, tool_choice="auto").choices[0].finish_reason == "tool_calls"
    auto = prepared[-1]
    assert "get_weather" in auto.prompt and "get_time" in auto.prompt and auto.seqs[0].params.grammar is None
    ask(client, tool_choice="required")
    required = prepared[-1]
    assert required.prompt == auto.prompt  # the template's prompt, nothing added
    assert "call_0" in required.seqs[0].params.grammar and "call_1" in required.seqs[0].params.grammar
    ask(client, tool_choice={"type": "function", "function": {"name": "get_time"}})
    named = prepared[-1]
    assert '"name": "get_weather"' not in named.prompt and '"get_time"' in named.seqs[0].params.grammar
    assert "call_1" not in named.seqs[0].params.grammar
    with pytest.raises(openai.BadRequestError, match="not in 'tools'"):
        ask(client, tool_choice={"type": "function", "function": {"name": "launch"}})
    with pytest.raises(openai.BadRequestError, match="needs 'tools'"):
        ask(client, tools=openai.omit, tool_choice="required")
    with pytest.raises(openai.BadRequestError, match="cannot be combined"):
        ask(client, tool_choice="required", response_format={"type": "json_object"})


def test_tool_results_round_trip_through_the_template(client, script):
    prepared = script("It is 21 degrees in Paris.")
    call = {"id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": json.dumps({"city": "Paris", "days": 3})}}
    messages = [{"role": "user", "content": "Weather in Paris?"},
                {"role": "assistant", "content": None, "tool_calls": [call]},
                {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 21}'}]
    choice = ask(client, messages=messages).choices[0]
    assert choice.message.content == "It is 21 degrees in Paris." and choice.finish_reason == "stop"
    prompt = prepared[-1].prompt
    assert ("<tool_call>get_weather\n<arg_key>city</arg_key>\n<arg_value>Paris</arg_value>\n<arg_key>days</arg_key>"
            "\n<arg_value>3</arg_value>\n</tool_call>") in prompt
    assert prompt.endswith('<|observation|>\n<tool_response>\n{"temp": 21}\n</tool_response><|assistant|>\n')


@pytest.mark.parametrize("answer, reasoning", [("Hi", None), ("<think></think>\nHi", None),
                                               ("<think>\nhm\n</think>\nHi", "hm")])
def test_reasoning_content_is_null_when_the_model_did_not_think(client, script, answer, reasoning):
    script(answer)
    message = ask(client).choices[0].message
    assert (message.content, message.reasoning_content) == ("Hi", reasoning)
    assert collect(ask(client, stream=True))[:2] == ("Hi", reasoning or "")


# --- against a real `glmv serve`: the tiny model's own (random) answers -----------------------------------------


@pytest.fixture(scope="module")
def served(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=server.api_key, max_retries=0, timeout=120)


@pytest.mark.parametrize("tool_choice", [openai.omit, "auto", "none", "required",
                                         {"type": "function", "function": {"name": "get_time"}}])
def test_real_server_accepts_tools_and_answers_in_shape(served, tool_choice):
    kwargs = {"model": MODEL, "messages": [{"role": "user", "content": "Time?"}], "tools": [WEATHER, TIME],
              "tool_choice": tool_choice, "max_tokens": 6, "temperature": 0}
    choice = served.chat.completions.create(**kwargs).choices[0]
    assert choice.finish_reason in ("stop", "length", "tool_calls")
    assert choice.message.content is not None or choice.message.tool_calls
    content, _, calls, finish = collect(served.chat.completions.create(stream=True, **kwargs))
    assert finish == choice.finish_reason and content == (choice.message.content or "")


BOUNDED = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "required": ["city", "days"],
    "properties": {"city": {"type": "string", "maxLength": 12}, "days": {"type": "integer", "minimum": 1, "maximum": 14},
                   "units": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                   "detail": {"type": "object", "properties": {"hourly": {"type": "boolean"}}, "required": ["hourly"],
                              "additionalProperties": False}}}}}


@pytest.mark.parametrize("tool_choice", ["required", {"type": "function", "function": {"name": "get_weather"}}])
def test_real_server_enforces_tool_choice(served, tool_choice):
    """The tiny random model never learned tool calls: whatever it writes, the grammar makes it a call whose
    arguments validate against the schema, streamed or not, with thinking on or off."""
    jsonschema = pytest.importorskip("jsonschema")
    for seed, thinking in ((0, False), (1, True), (2, False)):
        kwargs = {"model": MODEL, "messages": [{"role": "user", "content": "Weather in Paris?"}],
                  "tools": [BOUNDED, TIME], "tool_choice": tool_choice, "max_tokens": 300, "temperature": 1.0,
                  "seed": seed, "extra_body": {"chat_template_kwargs": {"enable_thinking": thinking}}}
        choice = served.chat.completions.create(**kwargs).choices[0]
        assert choice.finish_reason == "tool_calls", choice
        for call in choice.message.tool_calls:
            assert call.function.name in ("get_weather", "get_time")
            if call.function.name == "get_weather" or isinstance(tool_choice, dict):
                jsonschema.validate(json.loads(call.function.arguments), BOUNDED["function"]["parameters"])
        _, _, calls, finish = collect(served.chat.completions.create(stream=True, **kwargs))
        assert finish == "tool_calls"
        assert [(c["name"], json.loads(c["arguments"])) for c in calls] == [
            (c.function.name, json.loads(c.function.arguments)) for c in choice.message.tool_calls]


def test_real_server_refuses_malformed_tools(server):
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    for tools in ([{"type": "function"}], [{"type": "retrieval", "function": {"name": "f"}}],
                  [{"type": "function", "function": {"name": 5}}]):
        r = httpx.post(server.url + "/v1/chat/completions", json={**body, "tools": tools}, headers=server.headers)
        assert r.status_code == 400 and r.json()["error"]["param"].startswith("tools"), r.text
