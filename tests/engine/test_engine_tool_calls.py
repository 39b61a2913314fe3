"""GLM-4.5/4.6 tool calls parsed out of the answer: vLLM's glm45 parser test inputs, typing by schema, malformed
blocks kept as text, and the stream parser equal to the whole parse however the text is split."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from glmv import LLM, SamplingParams
from glmv.engine.outputs import ToolCall, opens_think
from glmv.engine.tool_calls import AnswerStreamParser, ToolCallStreamParser, parse_answer, parse_tool_calls
from glmv.testing.scripted import ScriptedDetokenizer, pieces, random_cut_texts
from glmv.testing.tiny_checkpoint import make_tiny_model_dir


def call(name: str, /, **arguments) -> tuple[str, dict]:
    return name, arguments


def shape(calls: list[ToolCall]) -> list[tuple[str, dict]]:
    """(name, arguments) of each call, with the checks every call must pass."""
    for c in calls:
        assert c.type == "function" and c.id.startswith("call_") and len(c.id) > len("call_")
        assert c.to_openai() == {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
    return [(c.name, json.loads(c.arguments)) for c in calls]


DALLAS = """<tool_call>get_current_weather
    <arg_key>city</arg_key>
    <arg_value>Dallas</arg_value>
    <arg_key>state</arg_key>
    <arg_value>TX</arg_value>
    <arg_key>unit</arg_key>
    <arg_value>fahrenheit</arg_value>
    </tool_call>"""
ORLANDO = DALLAS.replace("Dallas", "Orlando").replace("TX", "FL")
BEIJING = """<tool_call>get_weather
<arg_key>city</arg_key>
<arg_value>Beijing</arg_value>
<arg_key>date</arg_key>
<arg_value>2025-08-01</arg_value>
</tool_call>"""

# The inputs of vLLM's tests/tool_use/test_glm4_moe_tool_parser.py, with what glmv answers. Where vLLM keeps only
# the text before the first call, glmv keeps all the text outside calls (so a stream can send it as it comes).
CASES = {
    "single": (DALLAS, None, [call("get_current_weather", city="Dallas", state="TX", unit="fahrenheit")]),
    "multiple": (DALLAS + "\n    " + ORLANDO, None,
                 [call("get_current_weather", city="Dallas", state="TX", unit="fahrenheit"),
                  call("get_current_weather", city="Orlando", state="FL", unit="fahrenheit")]),
    "content_before": ("I'll help you check the weather. " + DALLAS.replace("Dallas", "Seattle").replace("TX", "WA")
                       .replace("fahrenheit", "celsius"), "I'll help you check the weather.",
                       [call("get_current_weather", city="Seattle", state="WA", unit="celsius")]),
    "value_with_space": (DALLAS.replace("Dallas", "New York").replace("TX", "NY"), None,
                         [call("get_current_weather", city="New York", state="NY", unit="fahrenheit")]),
    "content_glued": ("I will help you get the weather." + BEIJING, "I will help you get the weather.",
                      [call("get_weather", city="Beijing", date="2025-08-01")]),
    "chinese": ("我来帮您查询北京的天气。\n" + BEIJING.replace("Beijing", "北京"), "我来帮您查询北京的天气。",
                [call("get_weather", city="北京", date="2025-08-01")]),
    "no_arguments": ("<tool_call>get_current_time\n</tool_call>", None, [call("get_current_time")]),
    "mixed_content": ("I will help you get the weather info.\n\n" + BEIJING
                      + "\n\nmeaningwhile, I will also check the weather in Shanghai.\n\n"
                      + BEIJING.replace("Beijing", "Shanghai"),
                      "I will help you get the weather info.\n\n"
                      "meaningwhile, I will also check the weather in Shanghai.",
                      [call("get_weather", city="Beijing", date="2025-08-01"),
                       call("get_weather", city="Shanghai", date="2025-08-01")]),
    "special_characters": ("<tool_call>send_message\n<arg_key>recipient</arg_key>\n<arg_value>Amy</arg_value>\n"
                           "<arg_key>message</arg_key>\n<arg_value>It is a nice day</arg_value>\n<arg_key>priority"
                           "</arg_key>\n<arg_value>high</arg_value>\n</tool_call>", None,
                           [call("send_message", recipient="Amy", message="It is a nice day", priority="high")]),
    "text_after": (BEIJING + "\nDone.\n", "Done.", [call("get_weather", city="Beijing", date="2025-08-01")]),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_vllm_glm45_inputs(name):
    text, content, calls = CASES[name]
    got_content, got_calls = parse_tool_calls(text)
    assert (got_content or None) == content
    assert shape(got_calls) == calls


def test_no_tool_calls_leaves_the_text_alone():
    assert parse_tool_calls("This is a test") == ("This is a test", [])
    assert parse_tool_calls("Trailing space stays \n") == ("Trailing space stays \n", [])


@pytest.mark.parametrize("text", [
    # a key never closed: vLLM extracts the other pairs; glmv keeps the whole block as text
    "<tool_call>get_weather\n<arg_key>city</arg_key>\n<arg_value>Seattle</arg_value>\n<arg_key>incomplete_arg\n"
    "<arg_value>value</arg_value>\n</tool_call>",
    BEIJING[: -len("</tool_call>")],  # never closed (the answer was cut)
    "<tool_call>\n<arg_key>a</arg_key><arg_value>1</arg_value></tool_call>",  # no name
    "<tool_call>two words\n</tool_call>",  # not a name
    "<tool_call>f\n<arg_key>a</arg_key><arg_value>1</arg_value> stray text</tool_call>",  # text between pairs
    "<tool_call>f\n<arg_value>1</arg_value></tool_call>",  # a value without its key
])
def test_malformed_or_incomplete_calls_stay_content(text):
    assert parse_tool_calls(text) == (text, [])


def test_a_malformed_block_does_not_hide_a_good_one():
    bad = "<tool_call>two words</tool_call>"
    content, calls = parse_tool_calls(f"{bad}\n{BEIJING}")
    assert content == bad and shape(calls) == [call("get_weather", city="Beijing", date="2025-08-01")]


TOOLS = [{"type": "function", "function": {"name": "book", "parameters": {"type": "object", "properties": {
    "guests": {"type": "integer"}, "price": {"type": "number"}, "vegan": {"type": "boolean"},
    "extras": {"type": "object"}, "dates": {"type": "array"}, "code": {"type": "string"},
    "note": {"type": ["string", "null"]}, "seats": {"type": ["integer", "null"]}}}}}]


def book(**values: str) -> str:
    pairs = "".join(f"\n<arg_key>{k}</arg_key>\n<arg_value>{v}</arg_value>" for k, v in values.items())
    return f"<tool_call>book{pairs}\n</tool_call>"


def test_arguments_are_typed_by_the_schema():
    text = book(guests="4", price="12.5", vegan="true", extras='{"wine": true}', dates='["2025-08-01"]',
                code="007", note="null", seats="null", other="[1, 2]", free="not json")
    _, calls = parse_tool_calls(text, TOOLS)
    assert shape(calls) == [call("book", guests=4, price=12.5, vegan=True, extras={"wine": True},
                                 dates=["2025-08-01"], code="007", note="null", seats=None,
                                 other=[1, 2], free="not json")]  # no schema: JSON when it parses, else the text


def test_without_tools_values_that_parse_as_json_are_json():
    _, calls = parse_tool_calls(book(guests="4", code="007", name="Ann", flag="false"))
    assert shape(calls) == [call("book", guests=4, code="007", name="Ann", flag=False)]  # 007 is no JSON number


def test_values_that_do_not_fit_the_schema_stay_text():
    _, calls = parse_tool_calls(book(guests="four", price="NaN", extras="{broken", dates="[" * 100_000), TOOLS)
    assert shape(calls) == [call("book", guests="four", price="NaN", extras="{broken", dates="[" * 100_000)]
    assert "NaN" in calls[0].arguments and json.loads(calls[0].arguments)  # always valid JSON for clients


def test_tool_calls_after_thinking_and_inside_it():
    text = f"<think>I want to get the weather.</think>\n\nI will help you get the weather.\n{BEIJING}"
    reasoning, content, calls = parse_answer(text, tools=TOOLS)
    assert (reasoning, content) == ("I want to get the weather.", "I will help you get the weather.")
    assert shape(calls) == [call("get_weather", city="Beijing", date="2025-08-01")]
    reasoning, content, calls = parse_answer(f"<think>maybe {BEIJING}</think>No.", tools=TOOLS)
    assert reasoning.startswith("maybe <tool_call>") and content == "No." and calls == []  # thinking, not a call
    assert parse_answer(text)[1:] == (f"I will help you get the weather.\n{BEIJING}", [])  # no tools: no parsing


def test_a_prompt_that_opens_the_thinking_block():
    """Templates that end the prompt with <think> start the answer inside the reasoning: a bare </think> ends it
    (vLLM's glm45 reading), and calls after it are parsed."""
    assert opens_think("<|assistant|>\n<think>\n") and not opens_think("<|assistant|>\n<think></think>\n")
    assert not opens_think("<|assistant|>\n")
    reasoning, content, calls = parse_answer(f"Need it.</think>\n{BEIJING}", in_think=True, tools=TOOLS)
    assert (reasoning, content) == ("Need it.", "") and shape(calls) == [call("get_weather", city="Beijing",
                                                                              date="2025-08-01")]


def test_stream_parser_holds_back_what_could_start_a_call():
    p = ToolCallStreamParser()
    assert p.feed("Hello <tool") == ("Hello", [])  # the space too: it goes if a call follows
    assert p.feed("_ca") == ("", [])
    content, calls = p.feed("ll>f\n<arg_key>a</arg_key><arg_value>1</arg_value>")
    assert (content, calls) == ("", [])  # an open call is held until its end
    content, calls = p.feed("</tool_call> then <toy", final=False)
    assert content == " then <toy" and shape(calls) == [call("f", a=1)]
    assert p.feed(" \n", final=True) == ("", [])  # trailing whitespace after a call goes


def _stream(text: str, cuts: list[int], in_think: bool = False, tools=TOOLS) -> tuple[str, str, list]:
    parser, r, c, calls = AnswerStreamParser(in_think, tools), [], [], []
    parts = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)])]
    for i, part in enumerate(parts):
        dr, dc, new = parser.feed(part, final=i == len(parts) - 1)
        r.append(dr)
        c.append(dc)
        calls += new
    return "".join(r), "".join(c), shape(calls)


def _whole(text: str, in_think: bool = False, tools=TOOLS) -> tuple[str, str, list]:
    reasoning, content, calls = parse_answer(text, in_think, tools)
    return reasoning or "", content, shape(calls)


@pytest.mark.parametrize("name", sorted(CASES))
def test_stream_split_at_every_character_equals_the_whole_parse(name):
    text = "<think>Let me see.</think>\n" + CASES[name][0]
    whole = _whole(text)
    for cut in range(len(text) + 1):
        assert _stream(text, [cut]) == whole, cut
    assert _stream(text, list(range(1, len(text)))) == whole  # one character at a time


PIECES = ["<tool_call>", "</tool_call>", "<tool", "_call>", "</tool", "<arg_key>", "</arg_key>", "<arg_value>",
          "</arg_value>", "<think>", "</think>", "f", "book", "guests", "3", " ", "\n", "x", "<", "你好"]


@pytest.mark.parametrize("in_think", [False, True])
def test_stream_equals_whole_parse_on_random_text(in_think):
    for text, cuts in random_cut_texts(PIECES, 600, 16):
        assert _stream(text, cuts, in_think) == _whole(text, in_think), (text, cuts)


@pytest.fixture(scope="module")
def llm(tmp_path_factory):
    return LLM(make_tiny_model_dir(tmp_path_factory.mktemp("tools")), progress=False)


def test_llm_chat_with_tools_returns_parsed_calls(llm):
    """The tools reach the prompt, and the request parses its answer with them (the tiny random model cannot
    write a call, so its detokenizer is replaced by a script)."""
    conv = [{"role": "user", "content": [{"type": "image", "image": Image.new("RGB", (32, 32), "red")},
                                         {"type": "text", "text": "Book it."}]}]
    script = f"<think>They want a table.</think>\nBooking now.\n{book(guests='4', code='007')}"
    params = SamplingParams(temperature=0, max_tokens=4, ignore_eos=True)
    req = llm.prepare_chat([conv], params, tools=TOOLS)[0]
    assert '"name": "book"' in req.prompt and "<tool_call>{function-name}" in req.prompt
    req.detoks = [ScriptedDetokenizer(pieces(script, 11))]
    c = llm.run_requests([req])[0].outputs[0]
    assert (c.text, c.reasoning, c.content) == (script, "They want a table.", "Booking now.")
    assert shape(c.tool_calls) == [call("book", guests=4, code="007")]
    assert llm.chat(conv, params)[0].outputs[0].tool_calls == []  # no tools, no parsing
