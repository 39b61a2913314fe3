"""Greedy generation equals transformers' generate on tiny random checkpoints (fp32), and multi-turn sessions
reuse their cache: each image encoded once, each turn prefilling only its new tokens."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from glmv import LLM, SamplingParams
from glmv.testing.tiny_checkpoint import make_tiny_model_dir

MAX_NEW = 12


@pytest.fixture(scope="module", params=["glm4v_moe", "glm4v"])
def setup(request, tmp_path_factory):
    import transformers

    path = make_tiny_model_dir(tmp_path_factory.mktemp(request.param), request.param)
    ref = transformers.AutoModelForImageTextToText.from_pretrained(path).eval()
    llm = LLM(path, progress=False)
    return llm, ref


def picture(w: int, h: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))


def frames(n: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 255, (40, 56, 3), dtype=np.uint8) for _ in range(n)]


def reference_generate(llm: LLM, ref, conversations: list[list[dict]], enable_thinking=None) -> list[list[int]]:
    inputs = llm.processor.apply_chat_template(conversations, enable_thinking=enable_thinking)
    kw = {k: v for k, v in inputs.items() if v is not None}
    with torch.no_grad():
        out = ref.generate(**kw, max_new_tokens=MAX_NEW, do_sample=False, eos_token_id=llm.engine.eos_token_ids,
                           pad_token_id=llm.tokenizer.pad_token_id)
    new = out[:, inputs["input_ids"].shape[1]:].tolist()
    eos = set(llm.engine.eos_token_ids)
    trimmed = []
    for row in new:  # transformers pads finished rows; cut after the first eos
        cut = next((i + 1 for i, t in enumerate(row) if t in eos), len(row))
        trimmed.append(row[:cut])
    return trimmed


def glmv_generate(llm: LLM, conversations, enable_thinking=None) -> list[list[int]]:
    outs = llm.chat(conversations, SamplingParams(temperature=0, max_tokens=MAX_NEW), enable_thinking=enable_thinking)
    return [o.outputs[0].token_ids for o in outs]


def user(*parts) -> dict:
    content = []
    for p in parts:
        if isinstance(p, str):
            content.append({"type": "text", "text": p})
        elif isinstance(p, Image.Image):
            content.append({"type": "image", "image": p})
        else:
            content.append({"type": "video", "video": p["frames"], "fps": p["fps"]})
    return {"role": "user", "content": content}


CASES = {
    "text": [[user("The quick brown fox")]],
    "one_image": [[user(picture(75, 53, 1), "What kind of dog is this?")]],
    "video": [[user({"frames": frames(6, 2), "fps": 2.0}, "Describe this video.")]],
    "multi_image": [[user(picture(60, 40, 3), picture(40, 90, 4), "Count the cars in the picture.")]],
    "mixed_batch": [
        [user("Hello")],
        [user(picture(50, 70, 5), "Describe this image in detail.")],
        [user(picture(90, 30, 6), "What is written on the sign?")],
    ],
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_greedy_ids_equal_transformers(setup, case):
    llm, ref = setup
    assert glmv_generate(llm, CASES[case]) == reference_generate(llm, ref, CASES[case])


def test_thinking_off_prompt_equals_transformers(setup):
    llm, ref = setup
    conv = [[user(picture(64, 64, 7), "How many objects are there?")]]
    assert glmv_generate(llm, conv, False) == reference_generate(llm, ref, conv, False)


def test_three_turn_session_equals_from_scratch_and_reuses_cache(setup):
    llm, _ = setup
    params = SamplingParams(temperature=0, max_tokens=6)
    session = llm.start_chat()
    turns = [
        user(picture(56, 84, 8), "What is in this image?"),
        user("And the colours?"),
        user(picture(84, 56, 9), "Compare it with this one."),
    ]
    messages: list[dict] = []
    previous_prompt = 0
    vision = llm.engine.vision
    for turn in turns:
        messages.append(turn)
        items, prefill = vision.encoded_items, llm.engine.stats.prefill_tokens
        got = session.chat(messages, params, enable_thinking=False)
        session_items = vision.encoded_items - items
        session_prefill = llm.engine.stats.prefill_tokens - prefill
        expected = llm.chat(messages, params, enable_thinking=False)[0]
        assert got.outputs[0].token_ids == expected.outputs[0].token_ids
        new_images = sum(isinstance(p.get("image"), Image.Image) for p in turn["content"])
        assert session_items == new_images  # images of earlier turns came from the cache
        # Only tokens after the reused prefix were prefilled, and the reused prefix covers the previous prompt
        # down to a whole block (one token of slack: a newline may merge with the re-rendered answer's start).
        assert session_prefill == len(got.prompt_token_ids) - session.last_reused
        block = llm.engine.config.block_size
        assert session.last_reused >= (previous_prompt - 1) // block * block
        previous_prompt = len(got.prompt_token_ids)
        messages.append({"role": "assistant", "content": got.outputs[0].text})
