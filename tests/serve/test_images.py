"""/v1/images/generations and /v1/images/edits through the official openai client against real `glmv serve`
processes on a tiny GLM-Image checkpoint: beside a chat model, and alone. The served images equal the in-process
ImagePipeline's for the same seeds; progress events stream; a client that disconnects cancels its request."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
import torch
from PIL import Image

pytest.importorskip("diffusers", reason="GLM-Image's DiT side needs diffusers (pip install 'glmv[image]')")

from glmv.testing.server import LOOPBACK, free_port, serve_process  # noqa: E402

NAME = "GLM-Image-tiny"
API_KEY = "image-key"
FAST = {"steps": 2, "seed": 3}


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    from glmv.image.tiny_pipeline import make_tiny_glm_image

    return make_tiny_glm_image(tmp_path_factory.mktemp("images") / NAME, deterministic=True)


@pytest.fixture(scope="module")
def pipe(image_dir):
    from glmv.image.pipeline import ImagePipeline

    return ImagePipeline(image_dir, device="cpu")


@pytest.fixture(scope="module")
def both(model_dir, image_dir):
    """A chat model and the image model in one server, with this process's thread count: images are compared
    bit for bit with the in-process pipeline's, and a different OpenMP team sums in another order (the server's
    default follows the load average, so it differed whenever the machine was busy)."""
    with serve_process(model_dir, "--image-model", str(image_dir), "--threads", str(torch.get_num_threads()),
                       api_key=API_KEY) as s:
        yield s


@pytest.fixture(scope="module")
def client(both):
    return openai.OpenAI(base_url=both.url + "/v1", api_key=API_KEY, max_retries=0, timeout=120)


def png(item_b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(item_b64))).convert("RGB"))


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def photo(h: int, w: int, seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def test_models_lists_both(client):
    assert {m.id for m in client.models.list().data} == {"tiny-glmv", NAME}


def test_generations_equal_the_pipeline(client, pipe):
    out = client.images.generate(model=NAME, prompt="a red 'fox'", size="64x32", n=2, response_format="b64_json",
                                 extra_body=FAST)
    assert len(out.data) == 2 and out.created > 0
    expected = pipe.generate("a red 'fox'", 32, 64, steps=2, seed=3, n=2)
    for item, image in zip(out.data, expected):
        assert np.array_equal(png(item.b64_json), np.asarray(image))


def test_generations_as_data_urls(client):
    out = client.images.generate(prompt="a cat", size="32x32", response_format="url", extra_body=FAST)
    head, _, data = out.data[0].url.partition(",")
    assert head == "data:image/png;base64" and png(data).shape == (32, 32, 3)


def test_edits_with_two_images_equal_the_pipeline(client, pipe):
    sources = [photo(70, 100, 1), photo(64, 64, 2)]
    out = client.images.edit(model=NAME, image=[("a.png", png_bytes(sources[0]), "image/png"),
                                                ("b.png", png_bytes(sources[1]), "image/png")],
                             prompt="put them together", size="64x64", extra_body=FAST)
    expected = pipe.generate("put them together", 64, 64, steps=2, seed=3, images=sources)[0]
    assert np.array_equal(png(out.data[0].b64_json), np.asarray(expected))


def test_bad_requests_are_openai_errors(client):
    with pytest.raises(openai.BadRequestError, match="multiple of 32"):
        client.images.generate(prompt="a cat", size="100x64")
    with pytest.raises(openai.BadRequestError, match="n must be"):
        client.images.generate(prompt="a cat", size="32x32", n=99)
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client.images.generate(model="dall-e-3", prompt="a cat", size="32x32")
    with pytest.raises(openai.BadRequestError, match="mask"):
        client.images.edit(image=("a.png", png_bytes(photo(32, 32, 0)), "image/png"), prompt="x", size="32x32",
                           mask=("m.png", png_bytes(photo(32, 32, 0)), "image/png"))
    with pytest.raises(openai.BadRequestError, match="not an image"):
        client.images.edit(image=("a.png", b"not a png", "image/png"), prompt="x", size="32x32")


def events(response: httpx.Response):
    for line in response.iter_lines():
        if line.startswith("data: ") and line != "data: [DONE]":
            yield json.loads(line[6:])


def test_progress_events_then_the_image(both, pipe):
    body = {"prompt": "a cat", "size": "32x32", "stream": True, **FAST}
    with httpx.stream("POST", both.url + "/v1/images/generations", json=body, headers=both.headers,
                      timeout=120) as r:
        got = list(events(r))
    progress = [e for e in got if e["type"] == "image_generation.progress"]
    prior = [e["done"] for e in progress if e["stage"] == "prior"]
    assert prior == sorted(prior) and prior[-1] == progress[0]["total"] == 16 * 16 + 1 + 1
    assert [(e["done"], e["total"]) for e in progress if e["stage"] == "diffusion"] == [(1, 2), (2, 2)]
    done = got[-1]
    assert done["type"] == "image_generation.completed" and done["size"] == "32x32"
    assert np.array_equal(png(done["b64_json"]), np.asarray(pipe.generate("a cat", 32, 32, **FAST)[0]))


def stats(server) -> dict:
    return httpx.get(server.url + "/v1/images/stats", headers=server.headers, timeout=10).json()


def wait_for(condition, seconds: float = 60.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


def test_a_client_that_leaves_cancels_its_request(both, client):
    """A stream closed after the DiT's first step: the request stops there (counted as cancelled, the worker idle)
    instead of running its 1000 steps, and the next request is served."""
    before = stats(both)
    body = {"prompt": "a cat", "size": "32x32", "stream": True, "steps": 1000, "seed": 1}
    with httpx.stream("POST", both.url + "/v1/images/generations", json=body, headers=both.headers,
                      timeout=120) as r:
        for e in events(r):
            if e["stage"] == "diffusion":
                break
    assert wait_for(lambda: stats(both)["cancelled"] == before["cancelled"] + 1)
    after = stats(both)
    assert after["running"] == after["queued"] == 0 and after["completed"] == before["completed"]
    assert client.images.generate(prompt="a cat", size="32x32", extra_body=FAST).data[0].b64_json


def test_chat_is_served_beside_images(client):
    out = client.chat.completions.create(model="tiny-glmv", messages=[{"role": "user", "content": "Hi"}],
                                         max_tokens=2)
    assert out.choices[0].message.content is not None


@contextmanager
def image_only_server(image_dir: Path):
    port = free_port()
    log = Path(tempfile.mkstemp(prefix="glmv-images-", suffix=".log")[1])
    cmd = [sys.executable, "-m", "glmv.cli", "serve", "--image-model", str(image_dir), "--host", LOOPBACK,
           "--port", str(port)]
    with open(log, "wb") as out:
        process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "GLMV_API_KEY": ""})
    url = f"http://{LOOPBACK}:{port}"
    try:
        def healthy() -> bool:
            assert process.poll() is None, log.read_text()
            try:
                return httpx.get(url + "/health", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        assert wait_for(healthy, 120), log.read_text()
        yield url
    finally:
        process.terminate()
        process.wait(15)
        log.unlink(missing_ok=True)


def test_images_without_a_chat_model(image_dir, pipe):
    with image_only_server(image_dir) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=120)
        assert [m.id for m in client.models.list().data] == [NAME]
        out = client.images.generate(prompt="a cat", size="32x64", extra_body=FAST)
        assert np.array_equal(png(out.data[0].b64_json), np.asarray(pipe.generate("a cat", 64, 32, **FAST)[0]))
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model=NAME, messages=[{"role": "user", "content": "Hi"}])
