"""User training data (glmv/train/user_data.py): both JSONL layouts read into the same conversations, examples
equal to the trainer's own encoding, loss on every assistant answer only, and one clear error per bad line."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from glmv.errors import InputError
from glmv.inputs.processor import Processor
from glmv.testing.tiny_checkpoint import make_tiny_model_dir
from glmv.train.data import IGNORE, encode_example
from glmv.train.user_data import encode_conversation, encode_line, read_jsonl


@pytest.fixture(scope="module")
def processor(tmp_path_factory):
    return Processor.from_pretrained(make_tiny_model_dir(tmp_path_factory.mktemp("tiny"), "glm4v_moe"))


def png(path, colour=(200, 30, 30), size=(56, 56)):
    Image.new("RGB", size, colour).save(path)
    return path


def write(path, records):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


def labelled(processor, example) -> str:
    return processor.tokenizer.decode([t for t in example.labels if t != IGNORE], skip_special_tokens=False)


OPENAI = {"messages": [
    {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "img/red.png"}},
                                 {"type": "text", "text": "What colour is it?"}]},
    {"role": "assistant", "content": "It is red."}]}
SHAREGPT = {"conversations": [{"from": "human", "value": "<image>What colour is it?"},
                              {"from": "gpt", "value": "It is red."}], "images": ["img/red.png"]}
LLAMA_FACTORY = {"messages": [{"role": "user", "content": "<image>What colour is it?"},
                              {"role": "assistant", "content": "It is red."}], "images": ["img/red.png"]}


def test_both_layouts_read_into_the_same_conversation(tmp_path):
    (tmp_path / "img").mkdir()
    png(tmp_path / "img" / "red.png")
    convs = read_jsonl(write(tmp_path / "data.jsonl", [OPENAI, "", SHAREGPT, LLAMA_FACTORY]))
    assert [c.where for c in convs] == [f"{tmp_path / 'data.jsonl'}:{n}" for n in (1, 3, 4)]
    image = str(tmp_path / "img" / "red.png")  # relative paths are read from the file's directory
    want = [{"role": "user", "content": [{"type": "image", "image": image},
                                         {"type": "text", "text": "What colour is it?"}]},
            {"role": "assistant", "content": "It is red."}]
    assert all(c.messages == want for c in convs)


def test_a_single_turn_encodes_exactly_as_the_trainer_does(processor, tmp_path):
    png(tmp_path / "red.png")
    messages = [{"role": "user", "content": [{"type": "image", "image": str(tmp_path / "red.png")},
                                             {"type": "text", "text": "What colour is it?"}]}]
    for thinking in (False, True):
        ours = encode_conversation(processor, messages + [{"role": "assistant", "content": "It is red."}], thinking)
        theirs = encode_example(processor, messages, "It is red.", thinking)
        assert ours.input_ids == theirs.input_ids and ours.labels == theirs.labels
        assert torch.equal(ours.images[0].pixel_values, theirs.images[0].pixel_values)
    nothink = encode_conversation(processor, messages + [{"role": "assistant", "content": "It is red."}], False)
    assert labelled(processor, nothink) == "It is red.<|user|>"


def test_reasoning_is_the_target_in_the_thinking_format_only(processor, tmp_path):
    line = {"messages": [{"role": "user", "content": "2+2?"},
                         {"role": "assistant", "content": "<|begin_of_box|>4<|end_of_box|>",
                          "reasoning_content": "Two and two make four."}]}
    [conv] = read_jsonl(write(tmp_path / "d.jsonl", [line]))
    assert labelled(processor, encode_line(processor, conv, True)) == \
        "<think>Two and two make four.</think>\n<|begin_of_box|>4<|end_of_box|><|user|>"
    assert labelled(processor, encode_line(processor, conv, False)) == "<|begin_of_box|>4<|end_of_box|><|user|>"
    think_block = {"messages": [line["messages"][0], {"role": "assistant",
                                                      "content": "<think>Two and two make four.</think>\n4"}]}
    [conv] = read_jsonl(write(tmp_path / "e.jsonl", [think_block]))
    assert labelled(processor, encode_line(processor, conv, True)) == "<think>Two and two make four.</think>\n4<|user|>"


def test_every_assistant_turn_of_a_dialogue_carries_loss(processor, tmp_path):
    png(tmp_path / "a.png")
    png(tmp_path / "b.png", (30, 30, 200))
    line = {"conversations": [{"from": "system", "value": "Be brief."},
                              {"from": "human", "value": "<image>Colour?"}, {"from": "gpt", "value": "Red."},
                              {"from": "human", "value": "And this one? <image>"},
                              {"from": "gpt", "value": "<think>It looks blue.</think>\nBlue."}],
            "images": ["a.png", "b.png"]}
    [conv] = read_jsonl(write(tmp_path / "d.jsonl", [line]))
    for thinking in (False, True):
        e = encode_line(processor, conv, thinking)
        assert len(e.images) == 2 and len(e.input_ids) == len(e.labels)
        final = "<think>It looks blue.</think>\nBlue.<|user|>" if thinking else "Blue.<|user|>"
        assert labelled(processor, e) == "Red.<|user|>" + final
        # what the model reads is the chat template's rendering of the whole dialogue (media expanded)
        history = conv.messages[:-1]
        prompt = processor.apply_chat_template(history, enable_thinking=thinking)["input_ids"][0].tolist()
        assert e.input_ids[:len(prompt)] == prompt
        image_tokens = sum(f.num_tokens for f in e.images)
        assert e.input_ids.count(processor.media_tokens.image) == image_tokens


def test_videos_by_frame_list_and_data_urls(processor, tmp_path):
    frames = [str(png(tmp_path / f"f{i}.png", (10 * i, 100, 100))) for i in range(4)]
    line = {"conversations": [{"from": "human", "value": "<video>What happens?"}, {"from": "gpt", "value": "Nothing."}],
            "videos": [frames]}
    buf = io.BytesIO()
    Image.fromarray(np.full((56, 56, 3), 90, np.uint8)).save(buf, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    inline = {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}, "Colour?"]},
                           {"role": "assistant", "content": "Grey."}]}
    video, image = read_jsonl(write(tmp_path / "d.jsonl", [line, inline]))
    assert len(encode_line(processor, video, False).videos) == 1
    assert len(encode_line(processor, image, False).images) == 1


BAD_LINES = [
    ("{not json", "not valid JSON"),
    ('["a list"]', "must be a JSON object"),
    ({"text": "hi"}, "exactly one of 'messages'"),
    ({"messages": []}, "non-empty list"),
    ({"messages": [{"role": "user", "content": "hi"}]}, "must end with an assistant turn"),
    ({"messages": [{"role": "assistant", "content": "hi"}]}, "no user turn"),
    ({"messages": [{"role": "narrator", "content": "x"}, {"role": "assistant", "content": "y"}]},
     "unknown role 'narrator'"),
    ({"messages": [{"role": "user", "content": "x"}, {"role": "tool", "content": "y"}]}, "tool / function turns"),
    ({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "  "}]}, "the answer is empty"),
    ({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "<think>t</think>"}]},
     "the answer is empty"),
    ({"conversations": [{"from": "human", "value": "<image>x"}, {"from": "gpt", "value": "y"}]}, "no 'images' list"),
    ({"conversations": [{"from": "human", "value": "<image>x"}, {"from": "gpt", "value": "y"}],
      "images": ["red.png", "red.png"]}, "1 <image> placeholders but 'images' lists 2"),
    ({"conversations": [{"from": "human", "value": "<image><image>x"}, {"from": "gpt", "value": "y"}],
      "images": ["red.png"]}, "more <image> placeholders"),
    ({"conversations": [{"from": "human", "value": "<image>x"}, {"from": "gpt", "value": "y"}],
      "images": ["missing.png"]}, "images\\[0\\]: no such file"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://h/x.png"}}]},
                   {"role": "assistant", "content": "y"}]}, "unsupported URL scheme 'ftp'"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "red.png"}}]},
                   {"role": "assistant", "content": "y"}], "images": ["red.png"]}, "use one of the two"),
    ({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "<image>"}],
      "images": ["red.png"]}, "media go in user turns"),
    ({"messages": [{"role": "user", "content": [{"type": "audio", "audio": "a.wav"}]},
                   {"role": "assistant", "content": "y"}]}, "unsupported content type 'audio'"),
    ({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}], "tools": [{"a": 1}]},
     "'tools'"),
    ({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"},
                   {"role": "system", "content": "z"}, {"role": "assistant", "content": "w"}]}, "only allowed first"),
]


@pytest.mark.parametrize("line, message", BAD_LINES)
def test_each_bad_line_is_an_error_naming_file_and_line(tmp_path, line, message):
    png(tmp_path / "red.png")
    good = {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]}
    path = write(tmp_path / "d.jsonl", [good, good, line])
    with pytest.raises(InputError, match=rf"d\.jsonl:3: .*{message}"):
        read_jsonl(path)


def test_a_corrupt_image_names_its_line_when_it_is_encoded(processor, tmp_path):
    (tmp_path / "bad.png").write_bytes(b"\x89PNG not really")
    [conv] = read_jsonl(write(tmp_path / "d.jsonl", [{"conversations": [{"from": "human", "value": "<image>x"},
                                                                         {"from": "gpt", "value": "y"}],
                                                       "images": ["bad.png"]}]))
    with pytest.raises(InputError, match=r"d\.jsonl:1: .*(image|corrupt)"):
        encode_line(processor, conv, False)


def test_empty_and_unreadable_files(tmp_path):
    with pytest.raises(InputError, match="cannot read training data"):
        read_jsonl(tmp_path / "nope.jsonl")
    with pytest.raises(InputError, match="no conversations"):
        read_jsonl(write(tmp_path / "empty.jsonl", ["", "  "]))
