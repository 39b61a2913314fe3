"""The paged engine through a real `glmv serve`: an OpenAI client resending the whole conversation gets its
earlier turns from the prefix cache (reported as usage.prompt_tokens_details.cached_tokens), other images are
never shared, and a tiny KV pool serves 16 concurrent requests needing 4x its size by preemption, with the same
answers as alone."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import torch

from glmv.config import GlmvConfig
from glmv.engine.paged_kv import PagedKVCache
from glmv.testing.media_urls import image_part, png_bytes
from glmv.testing.server import serve_process

from .conftest import API_KEY

MODEL = "tiny-glmv"
BLOCK = 4
POOL_BLOCKS = 60


def metric(text: str, name: str) -> float:
    return sum(float(v) for v in re.findall(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", text, re.MULTILINE))


@pytest.fixture(scope="module")
def server(model_dir):
    t = GlmvConfig.from_pretrained(model_dir).text
    per_block = PagedKVCache.bytes_per_block(t.num_hidden_layers, BLOCK, t.num_key_value_heads, t.head_dim,
                                             torch.float32)
    with serve_process(model_dir, "--block-size", str(BLOCK), "--kv-cache-memory", str(per_block * POOL_BLOCKS),
                       api_key=API_KEY) as s:
        yield s


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.url, headers=server.headers, timeout=300) as client:
        yield client


def chat(http: httpx.Client, messages: list[dict], max_tokens: int = 8) -> dict:
    r = http.post("/v1/chat/completions", json={"model": MODEL, "messages": messages, "temperature": 0,
                                                "max_tokens": max_tokens, "ignore_eos": True})
    assert r.status_code == 200, r.text
    return r.json()


def test_second_turn_is_served_from_the_prefix_cache(http, server):
    messages = [{"role": "user", "content": [image_part(png_bytes(56, 56)), {"type": "text", "text": "What is it?"}]}]
    first = chat(http, messages)
    messages += [{"role": "assistant", "content": first["choices"][0]["message"]["content"]},
                 {"role": "user", "content": "And its colour?"}]
    hits_before = metric(http.get("/metrics").text, "glmv_prefix_cache_hits_total")
    second = chat(http, messages)
    cached = second["usage"]["prompt_tokens_details"]["cached_tokens"]
    # The first turn's prompt at least (its answer too, where the template re-renders it token for token).
    assert cached >= first["usage"]["prompt_tokens"] // BLOCK * BLOCK
    assert metric(http.get("/metrics").text, "glmv_prefix_cache_hits_total") - hits_before == cached


def test_same_text_with_another_image_shares_nothing_past_the_image(http):
    ask = lambda shade: [{"role": "user", "content": [
        {"type": "text", "text": "Look at this picture carefully, please, and then answer my question."},
        image_part(png_bytes(56, 56, (shade, 10, 10))), {"type": "text", "text": "What colour is it?"}]}]
    chat(http, ask(30))
    other = chat(http, ask(220))
    same = chat(http, ask(30))
    cached_other = other["usage"]["prompt_tokens_details"]["cached_tokens"]
    cached_same = same["usage"]["prompt_tokens_details"]["cached_tokens"]
    assert 0 < cached_other < cached_same  # the text before the image only; the same image: all but the tail
    assert cached_same == (same["usage"]["prompt_tokens"] - 1) // BLOCK * BLOCK


def test_a_tiny_pool_serves_4x_its_size_by_preemption(http):
    convs = [[{"role": "user", "content": f"Request {i}: " + "tell me more " * (i % 4)}] for i in range(16)]
    alone = [chat(http, c, 40)["choices"][0]["message"]["content"] for c in convs]
    before = metric(http.get("/metrics").text, "glmv_preemptions_total")
    with ThreadPoolExecutor(16) as pool:
        together = list(pool.map(lambda c: chat(http, c, 40), convs))
    assert [t["choices"][0]["message"]["content"] for t in together] == alone
    need = sum(-(-(t["usage"]["prompt_tokens"] + 40) // BLOCK) for t in together)
    assert need >= 4 * POOL_BLOCKS * 0.75  # the load really is several times the pool
    text = http.get("/metrics").text
    assert metric(text, "glmv_preemptions_total") > before
    assert metric(text, 'glmv_kv_cache_blocks{state="total"}') == POOL_BLOCKS
