"""Think/box parsing of crafted GLM outputs, streaming reasoning split, stop strings, detokenization."""

from __future__ import annotations

import pytest

from glmv.engine.detokenizer import IncrementalDetokenizer
from glmv.engine.outputs import ReasoningStreamParser, boxes_to_pixels, extract_answer, parse_boxes, parse_reasoning
from glmv.engine.stop import StopMatcher
from glmv.inputs.tokenizer import Tokenizer
from glmv.testing.tiny_tokenizer import make_tiny_tokenizer


@pytest.mark.parametrize("text,reasoning,content", [
    ("\n<think>look at it</think>\nA dog.", "look at it", "A dog."),
    ("<think>still thinking", "still thinking", ""),
    ("no tags at all", None, "no tags at all"),
    ("<think></think>\nDirect.", "", "Direct."),
    ("reasoned</think>answer", "reasoned", "answer"),
    ("</think", None, "</think"),
])
def test_parse_reasoning(text, reasoning, content):
    assert parse_reasoning(text) == (reasoning, content)


def test_extract_answer_takes_the_last_box_and_tolerates_a_missing_close():
    assert extract_answer("x <|begin_of_box|>3<|end_of_box|> then <|begin_of_box|> 4 <|end_of_box|>") == "4"
    assert extract_answer("so <|begin_of_box|>42") == "42"
    assert extract_answer("nothing boxed") is None


@pytest.mark.parametrize("text,boxes", [
    ("<|begin_of_box|>[10,20,300,400]<|end_of_box|>", [[10, 20, 300, 400]]),
    ("[[10, 20, 300, 400]]", [[10, 20, 300, 400]]),
    ("[[1,2,3,4],[5,6,7,8]]", [[1, 2, 3, 4], [5, 6, 7, 8]]),
    ("(12.5, 20, 30, 40.25)", [[12.5, 20, 30, 40.25]]),
    ("<100,200,300,400>", [[100, 200, 300, 400]]),
    ("[1,2,3] and [oops] [1,2,3,4,5]", []),
    ("", []),
])
def test_parse_boxes_bracket_variants(text, boxes):
    assert parse_boxes(text) == boxes


def test_boxes_to_pixels_scales_and_clamps():
    assert boxes_to_pixels([[100, 500, 1000, 999]], 640, 480) == [[64, 240, 640, 480]]
    assert boxes_to_pixels([[-5, 0, 1200, 10]], 100, 100) == [[0, 0, 100, 1]]


def test_reasoning_stream_parser_with_tags_split_across_deltas():
    text = "\n<think>a b</think>\nanswer <|begin_of_box|>7<|end_of_box|>"
    for size in (1, 2, 3, 5, 100):
        parser, r, c = ReasoningStreamParser(), [], []
        chunks = [text[i : i + size] for i in range(0, len(text), size)]
        for i, chunk in enumerate(chunks):
            dr, dc = parser.feed(chunk, final=i == len(chunks) - 1)
            r.append(dr)
            c.append(dc)
        assert "".join(r) == "a b"
        assert "".join(c) == "\n\nanswer <|begin_of_box|>7<|end_of_box|>"


def test_stop_strings_cut_exactly_even_when_split_across_deltas():
    for include in (False, True):
        m = StopMatcher(["STOP", "##"], include)
        out = []
        for piece in ["hello S", "TO", "P and more"]:
            text, hit = m.feed(piece)
            out.append(text)
            if hit:
                break
        assert hit and "".join(out) == ("hello STOP" if include else "hello ")


def test_stop_matcher_holds_back_only_possible_prefixes_and_releases_at_the_end():
    m = StopMatcher(["STOP"])
    assert m.feed("abcST") == ("ab", False)  # "cST" could still become "STOP"
    assert m.feed("x", final=True) == ("cSTx", False)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    path = tmp_path_factory.mktemp("tok")
    make_tiny_tokenizer(path)
    return Tokenizer.from_pretrained(path)


@pytest.mark.parametrize("text", ["héllo wörld 你好 🙂🙂 done", "<think>x</think> 日本語<|begin_of_box|>5<|end_of_box|>"])
def test_detokenizer_deltas_concatenate_to_full_decode(tokenizer, text):
    ids = tokenizer.encode(text)
    for skip in (True, False):
        d = IncrementalDetokenizer(tokenizer, skip_special_tokens=skip)
        deltas = [d.add(t) for t in ids] + [d.flush()]
        assert "".join(deltas) == tokenizer.decode(ids, skip_special_tokens=skip)
        assert not any("\ufffd" in x for x in deltas)
    assert len([t for t in ids if len(tokenizer.decode([t])) == 1 and tokenizer.decode([t]) == "\ufffd"]) > 0
