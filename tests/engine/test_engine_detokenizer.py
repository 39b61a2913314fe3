"""The streaming text path: incremental detokenization over a byte-level BPE tokenizer, then stop strings."""

from __future__ import annotations

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from glmv.engine.detokenizer import IncrementalDetokenizer
from glmv.engine.stop import StopMatcher

SPECIAL = ["<|endoftext|>", "<|user|>", "<|begin_of_box|>", "<|end_of_box|>"]
CORPUS = ["héllo wörld, naïve café", "你好世界，今天天气很好。", "日本語のテキスト", "emoji 🙂🙂 🚀 done",
          "The quick brown fox jumps over the lazy dog."] * 3
TEXTS = [
    "héllo wörld 你好 🙂🙂 done",
    "未知字 😀 🦄 Ω≈ç√",  # characters the merges never saw: every one is split over several byte tokens
    "<think>x</think> 日本語<|begin_of_box|>5<|end_of_box|><|user|>",
    "",
]


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(
        vocab_size=400, special_tokens=SPECIAL, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.add_tokens(["<think>", "</think>"])  # added but not special: they survive skip_special_tokens
    return tok


def test_the_tokenizer_splits_characters_across_tokens(tokenizer):
    ids = tokenizer.encode(TEXTS[1]).ids
    assert sum(tokenizer.decode([i]) == "\ufffd" for i in ids) >= 4


@pytest.mark.parametrize("text", TEXTS)
@pytest.mark.parametrize("skip", [True, False])
def test_deltas_concatenate_to_the_full_decode_and_never_hold_half_a_character(tokenizer, text, skip):
    ids = tokenizer.encode(text).ids
    d = IncrementalDetokenizer(tokenizer, skip_special_tokens=skip)
    deltas = [d.add(t) for t in ids] + [d.flush()]
    assert "".join(deltas) == d.text == tokenizer.decode(ids, skip_special_tokens=skip)
    assert not any("\ufffd" in x for x in deltas)
    assert deltas[-1] == ""  # complete text: nothing was left for flush


def test_text_is_emitted_as_soon_as_a_character_completes(tokenizer):
    ids = tokenizer.encode("🦄").ids
    assert len(ids) > 1
    d = IncrementalDetokenizer(tokenizer)
    assert [d.add(t) for t in ids] == [""] * (len(ids) - 1) + ["🦄"]


def test_prompt_ids_give_context_but_are_not_emitted(tokenizer):
    prompt = tokenizer.encode("<|user|>你好 ").ids
    ids = tokenizer.encode("世界 🚀").ids
    d = IncrementalDetokenizer(tokenizer, prompt_ids=prompt, skip_special_tokens=False)
    assert "".join(d.add(t) for t in ids) + d.flush() == tokenizer.decode(ids, skip_special_tokens=False)


def test_flush_releases_an_incomplete_character_as_the_full_decode_does(tokenizer):
    ids = tokenizer.encode("ab🦄").ids[:-1]  # generation stopped inside the emoji
    d = IncrementalDetokenizer(tokenizer)
    streamed = "".join(d.add(t) for t in ids)
    assert streamed == "ab" and streamed + d.flush() == tokenizer.decode(ids)


# --- stop strings -----------------------------------------------------------------------------------------------
def _run(stops: list[str], pieces: list[str], include: bool = False) -> tuple[list[str], bool, StopMatcher]:
    m, out, hit = StopMatcher(stops, include), [], False
    for i, piece in enumerate(pieces):
        text, hit = m.feed(piece, final=i == len(pieces) - 1)
        out.append(text)
        if hit:
            break
    return out, hit, m


@pytest.mark.parametrize("include", [False, True])
def test_stop_strings_cut_exactly_wherever_the_deltas_split(include):
    text = "say STO and S then STOP here ## more"
    expected = "say STO and S then " + ("STOP" if include else "")
    for a in range(len(text) + 1):
        for b in range(a, len(text) + 1):
            out, hit, m = _run(["STOP", "##"], [text[:a], text[a:b], text[b:]], include)
            assert hit and "".join(out) == expected and m.matched == "STOP", (a, b)


def test_the_earliest_stop_string_wins_and_ties_go_to_the_first_listed():
    assert _run(["later", "ear"], ["the early and later"])[2].matched == "ear"
    out, _, m = _run(["abc", "ab"], ["xxabcd"], include=True)
    assert out == ["xxabc"] and m.matched == "abc"


def test_stop_matcher_holds_back_only_possible_prefixes():
    m = StopMatcher(["STOP", "xyz"])
    assert m.feed("abcST") == ("abc", False)  # "ST" could still become "STOP"; "cST" could not
    assert m.feed("Ox") == ("STO", False)  # "STOx" rules STOP out; "x" may still start "xyz"
    assert m.feed("Q") == ("xQ", False)
    assert m.feed("S", final=True) == ("S", False)  # final: nothing more can come


def test_nothing_is_emitted_after_a_hit_and_streams_stay_prefixes_of_the_result():
    m = StopMatcher(["</answer>"])
    emitted = ""
    for piece in ["The answer: 4", "2 </ans", "wer> and then", " more"]:
        text, hit = m.feed(piece)
        emitted += text
        assert "The answer: 42 ".startswith(emitted)
    assert hit and emitted == "The answer: 42 " and m.feed("x") == ("", True)


def test_no_stop_strings_pass_text_straight_through():
    m = StopMatcher([])
    assert m.feed("anything <") == ("anything <", False)


def test_detokenizer_then_stop_matcher_cut_a_stop_string_spanning_tokens(tokenizer):
    ids = tokenizer.encode("你好世界 then 🚀🚀 rest").ids
    full = tokenizer.decode(ids)
    d, m, out = IncrementalDetokenizer(tokenizer), StopMatcher(["n 🚀"]), []
    for t in ids:
        text, hit = m.feed(d.add(t))
        out.append(text)
        if hit:
            break
    assert hit and "".join(out) == full[: full.index("n 🚀")] == "你好世界 the"
