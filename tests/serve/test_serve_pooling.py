"""/v1/embeddings and /v1/score through a real `glmv serve`, with the official openai client where it has a
method: the vectors equal LLM.embed's offline, in every encoding and batch shape; images through vLLM's
`messages` form; bad requests are 400s naming the field."""

from __future__ import annotations

import base64
import io

import httpx
import numpy as np
import openai
import pytest
from PIL import Image

from glmv import LLM
from .conftest import API_KEY


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=API_KEY, max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.url, headers=server.headers, timeout=120) as h:
        yield h


@pytest.fixture(scope="module")
def offline(model_dir):
    return LLM(model_dir, progress=False)


def png_url(colour: str) -> str:
    buf = io.BytesIO()
    Image.new("RGB", (60, 45), colour).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def image_messages(colour: str) -> list[dict]:
    return [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": png_url(colour)}},
                                         {"type": "text", "text": "What is this?"}]}]


def test_openai_client_embeddings_equal_offline(client, offline):
    texts = ["a red circle", "two blue squares and a green line"]
    got = client.embeddings.create(input=texts, model="tiny-glmv")  # the client asks for base64 by default
    assert [d.index for d in got.data] == [0, 1] and got.usage.prompt_tokens > 0
    want = [o.outputs.embedding for o in offline.embed(texts)]
    for d, w in zip(got.data, want):
        np.testing.assert_allclose(d.embedding, w, atol=1e-5)
    floats = client.embeddings.create(input=texts[0], model="tiny-glmv", encoding_format="float")
    np.testing.assert_allclose(floats.data[0].embedding, got.data[0].embedding, atol=1e-5)  # single = batch


def test_image_embeddings_through_messages(http, offline):
    r = http.post("/v1/embeddings", json={"messages": image_messages("red")})
    assert r.status_code == 200, r.text
    vec = r.json()["data"][0]["embedding"]
    want = offline.embed([{"role": "user", "content": [{"type": "image", "image": Image.new("RGB", (60, 45), "red")},
                                                        {"type": "text", "text": "What is this?"}]}])
    np.testing.assert_allclose(vec, want[0].outputs.embedding, atol=1e-5)
    other = http.post("/v1/embeddings", json={"messages": image_messages("blue")}).json()["data"][0]["embedding"]
    assert float(np.dot(vec, other)) < 0.99999  # the image is read


def test_score_one_query_many_candidates_and_pairs(http, offline):
    r = http.post("/v1/score", json={"text_1": "Hello", "text_2": ["Hi there", "Goodbye"]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "list" and [d["index"] for d in body["data"]] == [0, 1]
    want = [o.outputs.score for o in offline.score("Hello", ["Hi there", "Goodbye"])]
    assert [d["score"] for d in body["data"]] == pytest.approx(want, abs=1e-5)
    pairs = http.post("/v1/score", json={"text_1": ["Hello", "Hello"], "text_2": ["Hi there", "Goodbye"]}).json()
    assert [d["score"] for d in pairs["data"]] == pytest.approx(want, abs=1e-5)
    mm = http.post("/v1/score", json={"text_1": {"content": image_messages("red")[0]["content"]},
                                      "text_2": ["a red box"]})
    assert mm.status_code == 200, mm.text


@pytest.mark.parametrize("path, body, field", [
    ("/v1/embeddings", {}, "input"),
    ("/v1/embeddings", {"input": "x", "messages": [{"role": "user", "content": "x"}]}, "input"),
    ("/v1/embeddings", {"input": []}, "input"),
    ("/v1/embeddings", {"input": "x", "dimensions": 3}, "dimensions"),
    ("/v1/embeddings", {"input": [10**9]}, "token"),
    ("/v1/embeddings", {"input": "x", "encoding_format": "int8"}, "encoding_format"),
    ("/v1/embeddings", {"input": ["x"] * 300}, "256"),
    ("/v1/score", {"text_1": ["a", "b"], "text_2": ["c", "d", "e"]}, "text_1"),
    ("/v1/score", {"text_1": "a", "text_2": []}, "text_2"),
])
def test_bad_requests_are_400(http, path, body, field):
    r = http.post(path, json=body)
    assert r.status_code == 400, r.text
    assert field in r.text


def test_pooling_needs_the_key(server):
    assert httpx.post(server.url + "/v1/embeddings", json={"input": "x"}).status_code == 401
