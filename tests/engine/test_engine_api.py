"""The LLM API around generation: streaming, stop strings, n samples, seeds, limits and errors."""

from __future__ import annotations

import pytest
from PIL import Image

from glmv import LLM, SamplingParams
from glmv.errors import ContextLengthError, InputError
from glmv.testing.tiny_checkpoint import make_tiny_model_dir

CONV = [{"role": "user", "content": [{"type": "image", "image": Image.new("RGB", (60, 45), "green")},
                                     {"type": "text", "text": "What is in this image?"}]}]


@pytest.fixture(scope="module")
def llm(tmp_path_factory):
    return LLM(make_tiny_model_dir(tmp_path_factory.mktemp("api")), progress=False, max_model_len=64)


def test_stream_concatenates_to_the_full_text(llm):
    for params in (SamplingParams(temperature=0, max_tokens=20), SamplingParams(temperature=0.8, seed=3, max_tokens=20)):
        full = llm.chat(CONV, params)[0].outputs[0].text
        deltas = list(llm.chat_stream(CONV, params))
        assert "".join(deltas) == full and len(deltas) > 1


def test_stop_string_cuts_exactly(llm):
    full = llm.chat(CONV, SamplingParams(temperature=0, max_tokens=20, skip_special_tokens=False))[0].outputs[0]
    # a 3-character stop string whose first occurrence is at offset `at` > 0, likely spanning tokens
    at = next(i for i in range(2, len(full.text) - 3) if full.text.find(full.text[i : i + 3]) == i)
    stop = full.text[at : at + 3]
    cut = llm.chat(CONV, SamplingParams(temperature=0, max_tokens=20, stop=[stop], skip_special_tokens=False))[0].outputs[0]
    assert cut.text == full.text[:at] and cut.finish_reason == "stop"
    kept = llm.chat(CONV, SamplingParams(temperature=0, max_tokens=20, stop=[stop], skip_special_tokens=False,
                                         include_stop_str_in_output=True))[0].outputs[0]
    assert kept.text == full.text[: at + 3]


def test_n_samples_with_a_seed_are_reproducible_and_differ(llm):
    params = SamplingParams(n=3, temperature=1.0, seed=11, max_tokens=8, ignore_eos=True)
    a = [c.token_ids for c in llm.chat(CONV, params)[0].outputs]
    b = [c.token_ids for c in llm.chat(CONV, params)[0].outputs]
    assert a == b and len({tuple(x) for x in a}) == 3


def test_max_tokens_is_capped_by_the_context_and_usage_is_counted(llm):
    out = llm.chat(CONV, SamplingParams(temperature=0, max_tokens=500, ignore_eos=True))[0]
    assert out.prompt_tokens + out.completion_tokens == 64 and out.outputs[0].finish_reason == "length"
    assert out.usage["total_tokens"] == 64


def test_prompt_longer_than_context(llm):
    with pytest.raises(ContextLengthError, match="context is 64 tokens"):
        llm.chat([{"role": "user", "content": "word " * 200}], SamplingParams(max_tokens=4))


def test_empty_prompts(llm):
    with pytest.raises(InputError, match="empty"):
        llm.generate("", SamplingParams(max_tokens=4))
    with pytest.raises(InputError):
        llm.generate([[]], SamplingParams(max_tokens=4))


def test_generate_with_token_ids_equals_chat(llm):
    chat = llm.chat([{"role": "user", "content": "Hello"}], SamplingParams(temperature=0, max_tokens=6))[0]
    raw = llm.generate({"prompt_token_ids": chat.prompt_token_ids}, SamplingParams(temperature=0, max_tokens=6))[0]
    assert raw.outputs[0].token_ids == chat.outputs[0].token_ids


def test_a_generated_placeholder_token_is_plain_text(llm):
    """A model may emit <|image|> (random weights do); decoding treats generated tokens as text."""
    import torch

    image_id = llm.model.config.image_token_id
    sampler = llm.engine.sampler
    llm.engine.sampler = lambda logits, seqs: (torch.full((logits.shape[0],), image_id), None)
    try:
        out = llm.chat(CONV, SamplingParams(temperature=0, max_tokens=4))[0].outputs[0]
    finally:
        llm.engine.sampler = sampler
    assert out.token_ids == [image_id] * 4 and out.finish_reason == "length"


def test_media_limits_apply_per_conversation_not_per_batch(llm):
    """A batch of conversations may hold more images in total than one request may."""
    limit = llm.processor.limits.max_images
    batch = [CONV] * (limit + 1)
    outs = llm.chat(batch, SamplingParams(temperature=0, max_tokens=2))
    assert len(outs) == limit + 1


def test_boxes_map_to_the_image_before_the_answer(llm):
    """Two images of different sizes: the answer's boxes are in pixels of the last one (the image the answer
    follows), corners ordered even when the model wrote them reversed."""
    small, wide = Image.new("RGB", (100, 50)), Image.new("RGB", (400, 200))
    messages = [{"role": "user", "content": [{"type": "image", "image": small}, {"type": "text", "text": "and"},
                                             {"type": "image", "image": wide}, {"type": "text", "text": "where?"}]}]
    req = llm.prepare_chat([messages], SamplingParams(max_tokens=4))[0]
    req.texts[0] = "<|begin_of_box|>[[500,500,250,0]]<|end_of_box|>"
    req.seqs[0].finish_reason = "stop"
    assert llm.request_output(req).outputs[0].boxes == [[100, 0, 200, 100]]
