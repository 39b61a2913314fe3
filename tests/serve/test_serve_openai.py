"""The official openai client against a real `glmv serve` process: chat with images and a video, streamed ==
plain at temperature 0, completions, models, n/logprobs, the thinking switch, response_format, auth."""

from __future__ import annotations

import httpx
import openai
import pytest

from glmv.testing.media_urls import image_part, png_bytes, video_part

MODEL = "tiny-glmv"  # the checkpoint directory's name


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=server.api_key, max_retries=0, timeout=120)


def ask(*parts: dict | str) -> list[dict]:
    return [{"role": "user", "content": [p if isinstance(p, dict) else {"type": "text", "text": p} for p in parts]}]


def streamed(client, **kwargs) -> tuple[dict[int, str], dict[int, str], dict[int, str], object]:
    """(content, reasoning, finish_reason) per choice index, and the usage of the last chunk."""
    content, reasoning, finish, usage = {}, {}, {}, None
    for chunk in client.chat.completions.create(stream=True, stream_options={"include_usage": True}, **kwargs):
        usage = chunk.usage or usage
        for c in chunk.choices:
            content[c.index] = content.get(c.index, "") + (c.delta.content or "")
            reasoning[c.index] = reasoning.get(c.index, "") + (getattr(c.delta, "reasoning_content", None) or "")
            if c.finish_reason:
                finish[c.index] = c.finish_reason
    return content, reasoning, finish, usage


def test_models_lists_the_served_name(client):
    assert [m.id for m in client.models.list().data] == [MODEL]


def test_chat_with_two_images_streamed_equals_plain(client):
    messages = ask(image_part(png_bytes(64, 48, (255, 0, 0))), image_part(png_bytes(40, 80, (0, 0, 255))),
                   "Compare the two images.")
    kwargs = {"model": MODEL, "messages": messages, "temperature": 0, "max_tokens": 10, "extra_body": {"ignore_eos": True}}
    plain = client.chat.completions.create(**kwargs)
    content, reasoning, finish, usage = streamed(client, **kwargs)
    message = plain.choices[0].message
    assert content[0] == message.content and content[0]
    assert reasoning[0] == (getattr(message, "reasoning_content", None) or "")
    assert finish[0] == plain.choices[0].finish_reason == "length"
    assert usage.completion_tokens == plain.usage.completion_tokens == 10
    text_only = client.chat.completions.create(model=MODEL, messages=ask("Compare the two images."), max_tokens=1)
    assert plain.usage.prompt_tokens > text_only.usage.prompt_tokens + 2 * 4  # each image adds its tokens


def test_chat_with_a_video(client):
    out = client.chat.completions.create(model=MODEL, messages=ask(video_part(), "What happens?"), temperature=0,
                                         max_tokens=4)
    alone = client.chat.completions.create(model=MODEL, messages=ask("What happens?"), max_tokens=1)
    assert out.choices[0].finish_reason in ("stop", "length")
    assert out.usage.prompt_tokens > alone.usage.prompt_tokens + 8  # frames, timestamps, video markers


def test_completions_plain_and_streamed(client):
    kwargs = {"model": MODEL, "prompt": "The quick brown fox", "temperature": 0, "max_tokens": 8,
                  "extra_body": {"ignore_eos": True}}
    plain = client.completions.create(**kwargs)
    stream = "".join(c.choices[0].text for c in client.completions.create(stream=True, **kwargs) if c.choices)
    assert stream == plain.choices[0].text and plain.usage.completion_tokens == 8


def test_n_samples_and_logprobs(client):
    out = client.chat.completions.create(model=MODEL, messages=ask("Hello"), n=3, temperature=1.0, seed=7,
                                         max_tokens=5, logprobs=True, top_logprobs=2, extra_body={"ignore_eos": True})
    assert sorted(c.index for c in out.choices) == [0, 1, 2]
    assert len({c.message.content for c in out.choices}) > 1  # seeded samples differ from one another
    for c in out.choices:
        entries = c.logprobs.content
        assert len(entries) == 5
        for e in entries:
            tops = [t.logprob for t in e.top_logprobs]
            assert len(tops) == 2 and tops[0] >= tops[1] and e.logprob <= tops[0] + 1e-6


def test_thinking_switch_reaches_the_prompt_and_response_format_the_sampler(client):
    def prompt_tokens(**extra) -> int:
        return client.chat.completions.create(model=MODEL, messages=ask("Hi"), max_tokens=1, **extra).usage.prompt_tokens

    nothink = {"chat_template_kwargs": {"enable_thinking": False}}
    assert prompt_tokens(extra_body=nothink) != prompt_tokens()  # /nothink
    out = client.chat.completions.create(model=MODEL, messages=ask("Hi"), max_tokens=60, seed=0,
                                         response_format={"type": "json_object"}, extra_body=nothink)
    assert out.usage.prompt_tokens == prompt_tokens(extra_body=nothink)  # nothing asked in the prompt: enforced
    assert out.choices[0].message.content.startswith("{")  # even this random model writes JSON (test_serve_structured)
    assert out.choices[0].json_valid is (out.choices[0].finish_reason == "stop")  # only a cut answer is no JSON


def test_wrong_or_missing_api_key_is_401_in_openai_shape(server):
    bad = openai.OpenAI(base_url=server.url + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as e:
        bad.models.list()
    assert e.value.status_code == 401 and e.value.body["code"] == "invalid_api_key"
    r = httpx.post(server.url + "/v1/chat/completions", json={"model": MODEL, "messages": ask("hi")})
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    assert httpx.get(server.url + "/metrics").status_code == 401
    assert httpx.get(server.url + "/health").status_code == 200  # open, for load balancers
    assert httpx.get(server.url + "/").status_code == 200  # the page loads; it sends the key itself
