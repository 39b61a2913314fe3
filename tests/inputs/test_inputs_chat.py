"""Chat template: spec §12 golden renders, thinking switch, tools, checkpoint templates; tokenizer basics."""

from __future__ import annotations

import json

import pytest

import glmv
from glmv.errors import CheckpointError
from glmv.inputs.chat import ChatTemplate, load_chat_template, normalize_messages
from glmv.inputs.tokenizer import Tokenizer
from glmv.testing.tiny_tokenizer import TINY_VOCAB_SIZE, make_tiny_tokenizer
from glmv.train.tokenizer import SPECIAL_TOKENS, TEXT_TOKENS

DOG = [{"role": "user", "content": [{"type": "image", "image": "dog.jpg"},
                                    {"type": "text", "text": "What kind of dog is this?"}]}]
GOLDEN_ON = "[gMASK]<sop><|user|>\n<|begin_of_image|><|image|><|end_of_image|>What kind of dog is this?<|assistant|>\n"
GOLDEN_OFF = ("[gMASK]<sop><|user|>\n<|begin_of_image|><|image|><|end_of_image|>What kind of dog is this?/nothink"
              "<|assistant|>\n<think></think>\n")
HISTORY = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": [{"type": "text", "text": "Describe."}, {"type": "image_url", "image_url": {"url": "a"}},
                                 {"type": "video_url", "video_url": {"url": "b"}}]},
    {"role": "assistant", "content": "<think>r</think>Answer"},
    {"role": "user", "content": "Next?"},
]
GOLDEN_HISTORY = ("[gMASK]<sop><|system|>\nYou are a helpful assistant.<|user|>\nDescribe.<|begin_of_image|><|image|>"
                  "<|end_of_image|><|begin_of_video|><|video|><|end_of_video|><|assistant|>\n<think></think>\nAnswer"
                  "<|user|>\nNext?<|assistant|>\n")


def _render(messages, **kwargs):
    normalized, _ = normalize_messages(messages)
    return ChatTemplate().render(normalized, **kwargs)


def test_golden_renders():
    assert _render(DOG) == GOLDEN_ON
    assert _render(DOG, enable_thinking=True) == GOLDEN_ON
    assert _render(DOG, enable_thinking=False) == GOLDEN_OFF
    assert _render(HISTORY) == GOLDEN_HISTORY


def test_builtin_template_matches_transformers_renderer():
    from transformers.utils.chat_template_utils import render_jinja_template

    source = ChatTemplate().source
    for messages, kwargs in [(DOG, {}), (DOG, {"enable_thinking": False}), (HISTORY, {})]:
        normalized, _ = normalize_messages(messages)
        ref = render_jinja_template([normalized], chat_template=source, add_generation_prompt=True, **kwargs)[0][0]
        assert _render(messages, **kwargs) == ref


def test_reasoning_after_last_user_is_kept_and_nothink_not_doubled():
    messages = [{"role": "user", "content": "2+2? /nothink"},
                {"role": "assistant", "content": "4", "reasoning_content": "add"}]
    text = _render(messages, add_generation_prompt=False, enable_thinking=False)
    assert text == "[gMASK]<sop><|user|>\n2+2? /nothink<|assistant|>\n<think>add</think>\n4"


def test_tools_and_tool_results():
    messages = [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"type": "function", "function": {"name": "weather", "arguments": json.dumps({"city": "Paris", "days": 2})}}]},
        {"role": "tool", "content": "sunny"},
        {"role": "tool", "content": "warm"},
    ]
    tools = [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}]
    text = _render(messages, tools=tools)
    assert text.startswith("[gMASK]<sop><|system|>\n# Tools\n")
    assert '<tools>\n{"type": "function", "function": {"name": "weather"' in text
    assert ("<|assistant|>\n<think></think>\n<tool_call>weather\n<arg_key>city</arg_key>\n<arg_value>Paris</arg_value>"
            "\n<arg_key>days</arg_key>\n<arg_value>2</arg_value>\n</tool_call>") in text
    assert text.endswith("<|observation|>\n<tool_response>\nsunny\n</tool_response>\n<tool_response>\nwarm\n"
                         "</tool_response><|assistant|>\n")


def test_checkpoint_template_sources(tmp_path):
    assert load_chat_template(tmp_path) is None
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": "A{{ messages|length }}"}))
    assert load_chat_template(tmp_path) == "A{{ messages|length }}"
    (tmp_path / "chat_template.json").write_text(json.dumps({"chat_template": "B"}))
    assert load_chat_template(tmp_path) == "B"
    (tmp_path / "chat_template.jinja").write_text("C{{ bos_token }}")
    assert load_chat_template(tmp_path) == "C{{ bos_token }}"


def test_processor_uses_checkpoint_template_and_sandbox(tmp_path):
    make_tiny_tokenizer(tmp_path)
    (tmp_path / "chat_template.jinja").write_text("{% for m in messages %}<|user|>{{ m.content }}{% endfor %}"
                                                  "{{ eos_token }}")
    proc = glmv.Processor.from_pretrained(tmp_path)
    assert proc.render([{"role": "user", "content": "hi"}]) == "<|user|>hi<|endoftext|>"
    with pytest.raises(CheckpointError):
        ChatTemplate("{% for %}")
    evil = ChatTemplate("{{ messages.__class__.__mro__ }}")
    with pytest.raises(glmv.InputError):
        evil.render([{"role": "user", "content": "x"}])


def test_tiny_tokenizer(tmp_path):
    ids = make_tiny_tokenizer(tmp_path)
    tok = Tokenizer.from_pretrained(tmp_path)
    assert set(ids) == set(SPECIAL_TOKENS) | set(TEXT_TOKENS)
    assert tok.vocab_size <= TINY_VOCAB_SIZE and max(ids.values()) < TINY_VOCAB_SIZE
    assert len(set(ids.values())) == len(ids)
    assert all(tok.token_id(name) == i for name, i in ids.items())
    assert tok.eos_token_ids == [ids["<|endoftext|>"]] and tok.pad_token_id == ids["<|endoftext|>"]
    text = "héllo 世界 🙂\t<think>x</think>"
    assert tok.decode(tok.encode(text)) == text
    assert tok.decode(tok.encode("<|user|>a<think>"), skip_special_tokens=True) == "a<think>"
    assert make_tiny_tokenizer(tmp_path / "again") == ids  # deterministic
    assert (tmp_path / "again" / "tokenizer.json").read_bytes() == (tmp_path / "tokenizer.json").read_bytes()


def test_eos_ids_come_from_generation_config(tmp_path):
    ids = make_tiny_tokenizer(tmp_path)
    eos = [ids["<|endoftext|>"], ids["<|user|>"], ids["<|observation|>"]]
    (tmp_path / "config.json").write_text(json.dumps({"text_config": {"eos_token_id": eos[:1]}}))
    assert Tokenizer.from_pretrained(tmp_path).eos_token_ids == eos[:1]
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": eos}))
    assert Tokenizer.from_pretrained(tmp_path).eos_token_ids == eos
    with pytest.raises(CheckpointError):
        Tokenizer.from_pretrained(tmp_path / "missing")
