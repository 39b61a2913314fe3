"""vLLM-shaped outputs and the parsing of GLM-V completions: reasoning, boxed answers, boxes, streaming split."""

from __future__ import annotations

import random

import pytest

from glmv.engine.outputs import (
    CompletionOutput,
    ReasoningStreamParser,
    RequestOutput,
    boxes_to_pixels,
    extract_answer,
    parse_boxes,
    parse_reasoning,
)
from glmv.testing.scripted import random_cut_texts

B, E = "<|begin_of_box|>", "<|end_of_box|>"


@pytest.mark.parametrize("text,reasoning,content", [
    ("<think>look at it</think>\nA dog.", "look at it", "A dog."),
    ("\n<think>\n  look\nat it \n</think>\n\n  A dog.\n", "look\nat it", "A dog.\n"),  # trailing content kept
    ("<think>still thinking", "still thinking", ""),  # never closed: all reasoning
    ("<think>", "", ""),
    ("no tags at all", None, "no tags at all"),
    ("\n  plain answer", None, "plain answer"),
    ("<think></think>\nDirect.", "", "Direct."),  # empty block: thinking switched off
    ("reasoned</think>answer", None, "reasoned</think>answer"),  # a lone close is content (like vLLM's glm45)
    ("</think", None, "</think"),
    ("<think>a</think>b<think>c</think>d", "a", "b<think>c</think>d"),  # only the first block is reasoning
    ("Hi <think>r</think> there", "r", "Hi there"),
    ("<think>a <think> b</think>c", "a <think> b", "c"),
    ("<thinking>x</thinking>", None, "<thinking>x</thinking>"),
])
def test_parse_reasoning(text, reasoning, content):
    assert parse_reasoning(text) == (reasoning, content)


def test_parse_reasoning_when_the_prompt_opened_the_block():
    assert parse_reasoning(" r </think>\nanswer", in_think=True) == ("r", "answer")
    assert parse_reasoning("still", in_think=True) == ("still", "")


@pytest.mark.parametrize("content,answer", [
    (f"x {B}3{E} then {B} 4 {E}", "4"),  # the last box wins
    (f"so {B}42", "42"),  # unclosed: the rest of the text
    (f"{B}{E}", ""),
    ("nothing boxed", None),
    (f"only a close {E}", None),
    (f"{B}[[1,2,3,4]]{E} done", "[[1,2,3,4]]"),
])
def test_extract_answer(content, answer):
    assert extract_answer(content) == answer


@pytest.mark.parametrize("text,boxes", [
    (f"{B}[10,20,300,400]{E}", [[10, 20, 300, 400]]),
    ("[10,20,300,400]", [[10, 20, 300, 400]]),
    ("[[10, 20, 300, 400]]", [[10, 20, 300, 400]]),
    (f"{B}[[1,2,3,4],[5,6,7,8]]{E}", [[1, 2, 3, 4], [5, 6, 7, 8]]),
    ("(12.5, 20, 30, 40.25)", [[12.5, 20, 30, 40.25]]),
    ("<100,200,300,400>", [[100, 200, 300, 400]]),
    ("[ .5 , 1.0 ,2., 3 ]", [[0.5, 1, 2, 3]]),
    ("a cat [1,2,3,4] and a dog (5, 6, 7, 8) and <9,10,11,12>", [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12]]),
    ("[1,2,3] and [oops] [1,2,3,4,5] [a,b,c,d] [1;2;3;4]", []),
    ("[[1,2,3,4]", [[1, 2, 3, 4]]),  # malformed outer brackets: the box inside still counts
    ("", []),
])
def test_parse_boxes_bracket_variants(text, boxes):
    assert parse_boxes(text) == boxes
    assert all(type(v) is int for box in parse_boxes("[1, 2, 3, 4]") for v in box)


def test_boxes_to_pixels_scales_by_thousandths_and_clamps():
    assert boxes_to_pixels([[100, 500, 1000, 999]], 640, 480) == [[64, 240, 640, 480]]
    assert boxes_to_pixels([[-5, 0, 1200, 10]], 100, 100) == [[0, 0, 100, 1]]
    assert boxes_to_pixels([[250, 250, 750, 750], [0, 0, 1, 1]], 1920, 1080) == [[480, 270, 1440, 810], [0, 0, 2, 1]]
    assert boxes_to_pixels([], 10, 10) == []
    assert boxes_to_pixels([[900, 800, 100, 200]], 1000, 1000) == [[100, 200, 900, 800]]  # corners ordered


def _stream(text: str, cuts: list[int], in_think: bool = False) -> tuple[str, str]:
    parser, r, c = ReasoningStreamParser(in_think), [], []
    pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)])]
    for i, piece in enumerate(pieces):
        dr, dc = parser.feed(piece, final=i == len(pieces) - 1)
        r.append(dr)
        c.append(dc)
    return "".join(r), "".join(c)


def test_stream_parser_with_tags_split_at_every_position():
    text = f"\n<think> a b \n</think>\nanswer {B}7{E}"
    for cut in range(len(text) + 1):
        for cut2 in range(cut, len(text) + 1, 3):
            assert _stream(text, [cut, cut2]) == ("a b", f"answer {B}7{E}")


def test_stream_parser_holds_back_only_what_could_start_a_tag():
    p = ReasoningStreamParser()
    assert p.feed("Hello <thi") == ("", "Hello ")
    assert p.feed("nk>step one ") == ("step one", "")  # trailing space held: the block may end here
    assert p.feed("two</") == (" two", "")
    assert p.feed("think>\n\nDone <") == ("", "Done <")  # after the block nothing is held: tags are content
    assert p.feed("think>", final=True) == ("", "think>")


PIECES = ["<think>", "</think>", "<thi", "nk>", "</", "think", ">", " ", "\n", "a", "bc", "<", "你好", "🙂", B, E]


@pytest.mark.parametrize("in_think", [False, True])
def test_stream_parser_concatenation_equals_the_parse_on_random_text(in_think):
    for text, cuts in random_cut_texts(PIECES, 400, 12):
        reasoning, content = parse_reasoning(text, in_think)
        assert _stream(text, cuts, in_think) == (reasoning or "", content), (text, cuts)


def test_parsers_never_raise_on_garbage():
    rng = random.Random(1)
    alphabet = "[]()<>,.-0123456789 \n|thinkbox_/" + B + E
    for _ in range(500):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        _, content = parse_reasoning(text)
        extract_answer(content)
        boxes_to_pixels(parse_boxes(text), 64, 48)


def test_completion_output_sums_the_chosen_tokens_logprobs():
    out = CompletionOutput(0, "ab", [5, 6], "stop", logprobs=[{5: -0.5, 1: -0.2}, {1: -0.1, 6: -1.25}])
    assert out.cumulative_logprob == -1.75 and out.stop_reason is None
    assert CompletionOutput(0, "", [], "length").cumulative_logprob is None


def test_request_output_usage():
    req = RequestOutput("1", "p", [1, 2, 3], [CompletionOutput(0, "x", [9], "length")], prompt_tokens=3,
                        completion_tokens=1, cached_tokens=2)
    assert req.usage == {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4,
                         "prompt_tokens_details": {"cached_tokens": 2}} and req.finished
