"""Bad input over HTTP: each case gets the right 4xx in OpenAI's error shape, and the next request still works."""

from __future__ import annotations

import io
import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from PIL import Image

from glmv.testing.media_urls import data_url, image_part, mp4_bytes, png_bytes
from glmv.testing.server import serve_process

MODEL = "tiny-glmv"


def chat(*parts, **extra) -> dict:
    content = [p if isinstance(p, dict) else {"type": "text", "text": p} for p in parts]
    return {"model": MODEL, "messages": [{"role": "user", "content": content}], "max_tokens": 2, **extra}


def url_part(url: str) -> dict:
    return {"type": "image_url", "image_url": {"url": url}}


def bomb_png() -> bytes:
    """400 megapixels that compress to a few kB: refused from the header, before any decoding."""
    buf = io.BytesIO()
    Image.new("1", (20000, 20000)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.url, headers=server.headers, timeout=60) as client:
        yield client


def post(http: httpx.Client, body, path: str = "/v1/chat/completions", **kwargs) -> httpx.Response:
    if isinstance(body, (dict, list)):
        body = json.dumps(body)
    return http.post(path, content=body, headers={"Content-Type": "application/json"}, **kwargs)


def assert_error(r: httpx.Response, status: int, code: str | None = None, says: str = "") -> dict:
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    assert error["type"] == ("invalid_request_error" if status < 500 else "server_error")
    assert "Traceback" not in error["message"]
    if code:
        assert error["code"] == code
    assert says.lower() in error["message"].lower()
    return error


def assert_still_serving(http: httpx.Client) -> None:
    r = post(http, chat("Hello again"))
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["completion_tokens"] >= 1


CASES = {
    "malformed JSON": (b'{"model": "tiny-glmv", "messages": [', 400, "invalid_json", "not valid JSON"),
    "not an object": (b"[1, 2, 3]", 400, None, ""),
    "messages is a string": ({"model": MODEL, "messages": "hi"}, 400, "invalid_type", "messages"),
    "temperature is a string": (chat("hi", temperature="hot"), 400, "invalid_type", "temperature"),
    "messages missing": ({"model": MODEL}, 400, "missing_required_parameter", "messages"),
    "temperature out of range": (chat("hi", temperature=-1), 400, "invalid_request_error", "temperature"),
    "n is zero": (chat("hi", n=0), 400, None, "n must be"),
    "no messages": ({"model": MODEL, "messages": []}, 400, None, "non-empty"),
    "unknown part type": (chat({"type": "audio", "audio": "x"}), 400, None, "unsupported content type"),
    "template variable clash": (chat("hi", chat_template_kwargs={"messages": []}), 400, None, "may not set"),
    "unknown model": ({**chat("hi"), "model": "gpt-4o"}, 404, "model_not_found", "gpt-4o"),
    "truncated image": (chat(image_part(png_bytes()[:60]), "what?"), 400, None, ""),
    "not an image": (chat(image_part(b"hello, I am text"), "what?"), 400, None, ""),
    "invalid base64": (chat(url_part("data:image/png;base64,@@@@"), "what?"), 400, None, "base64"),
    "image bomb": (chat(image_part(bomb_png()), "what?"), 413, "media_too_large", "pixels"),
    "truncated video": (chat({"type": "video_url", "video_url": {"url": data_url(mp4_bytes()[:300], "video/mp4")}},
                             "what?"), 400, None, ""),
    "too many images": (chat(*[image_part(png_bytes(8, 8)) for _ in range(33)], "what?"), 413, "media_too_large",
                        "33 images"),
    "private IP URL": (chat(url_part("http://10.0.0.1/x.png"), "what?"), 400, None, "non-public address"),
    "cloud metadata URL": (chat(url_part("http://169.254.169.254/latest/meta-data/"), "what?"), 400, None,
                           "non-public address"),
    "loopback URL": (chat(url_part("http://127.0.0.1:9/x.png"), "what?"), 400, None, "non-public address"),
    "ftp URL": (chat(url_part("ftp://example.com/x.png"), "what?"), 400, None, "unsupported URL scheme"),
    "file outside the allowed dir": (chat(url_part("file:///etc/passwd"), "what?"), 400, None, "outside the allowed"),
    "prompt over the context": (chat("word " * 6000), 400, "context_length_exceeded", "context"),
}


@pytest.mark.parametrize("body, status, code, says", CASES.values(), ids=CASES.keys())
def test_bad_chat_request_is_refused_and_the_next_one_works(http, body, status, code, says):
    assert_error(post(http, body), status, code, says)
    assert_still_serving(http)


def test_bad_completion_request(http):
    assert_error(post(http, {"model": MODEL, "prompt": 3}, "/v1/completions"), 400, "invalid_type", "prompt")
    assert_error(post(http, {"model": MODEL, "prompt": ""}, "/v1/completions"), 400, None, "empty")
    assert_still_serving(http)


def test_oversize_body_is_refused_before_reading(http):
    big = json.dumps(chat("x" * (3 << 20)))  # over the server's 2 MiB limit
    assert_error(post(http, big), 413, "request_too_large", "over the limit")

    def chunks():  # no Content-Length: the server must count the bytes as they arrive
        for _ in range(48):
            yield b" " * (64 << 10)

    assert_error(post(http, chunks()), 413, "request_too_large", "over the limit")
    assert_still_serving(http)


def test_unknown_route_and_method_are_openai_shaped(http):
    assert_error(http.get("/v1/nothing"), 404, "not_found")
    assert_error(http.get("/v1/chat/completions"), 405, "method_not_allowed")


def test_file_url_inside_the_allowed_dir_works(http, media_dir):
    (media_dir / "ok.png").write_bytes(png_bytes())
    r = post(http, chat(url_part((media_dir / "ok.png").as_uri()), "what?"))
    assert r.status_code == 200, r.text


@pytest.fixture(scope="module")
def silent_url():
    """A loopback HTTP 'server' that accepts connections and never answers."""
    listener = socket.create_server(("127.0.0.1", 0))
    held = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except TimeoutError:
                pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/slow.png"
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    listener.close()


def queue_depth(server) -> float:
    text = httpx.get(server.url + "/metrics").text
    return float(next(line.split()[1] for line in text.splitlines() if line.startswith("glmv_queue_depth ")))


def test_silent_url_times_out_and_a_full_queue_is_503(model_dir, silent_url):
    """With private URLs allowed (so the loopback URL is fetched), the fetch times out; while it hangs it fills
    the one-request queue, and the next request is refused at once with 503."""
    args = ("--allow-private-urls", "--media-timeout", "3", "--max-queue", "1")
    with serve_process(model_dir, *args) as server, httpx.Client(base_url=server.url, timeout=60) as http, \
            ThreadPoolExecutor(1) as pool:
        hanging = pool.submit(post, http, chat(url_part(silent_url), "what?"))
        while queue_depth(server) < 1 and not hanging.done():
            time.sleep(0.02)
        busy = post(http, chat("hi"))
        assert_error(hanging.result(), 400, None, "timed out")
        assert_error(busy, 503, "server_overloaded", "busy")
        assert busy.headers["retry-after"] == "1"
        assert_still_serving(http)
