"""`glmv serve` runs its engine in a process of its own (the default) or, with --no-engine-process, in the HTTP
server's: both answer alike. A server whose engine process dies says so (/health 503, requests 503) instead of
hanging."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import httpx

from glmv.testing.media_urls import image_part, png_bytes
from glmv.testing.server import serve_process

BODY = {"model": "tiny-glmv", "temperature": 0, "max_tokens": 8, "ignore_eos": True, "logprobs": True, "top_logprobs": 2,
        "messages": [{"role": "user", "content": [image_part(png_bytes(48, 40, (0, 200, 0))),
                                                  {"type": "text", "text": "What colour is it?"}]}]}


def engine_pid(server) -> int:
    """The engine process: the server's child started by multiprocessing's spawn."""
    children = Path(f"/proc/{server.process.pid}/task/{server.process.pid}/children").read_text().split()
    return next(int(c) for c in children if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes())


def streamed_text(http: httpx.Client) -> str:
    text = ""
    with http.stream("POST", "/v1/chat/completions", json={**BODY, "stream": True}) as r:
        for line in r.iter_lines():
            if line.startswith("data: {"):
                for c in json.loads(line[6:])["choices"]:
                    text += c["delta"].get("content") or ""
    return text


def test_one_process_answers_as_two(server, model_dir):
    with httpx.Client(base_url=server.url, headers=server.headers, timeout=120) as http:
        two = http.post("/v1/chat/completions", json=BODY).json()
        two_streamed = streamed_text(http)
    with serve_process(model_dir, "--no-engine-process") as single, \
            httpx.Client(base_url=single.url, timeout=120) as http:
        one = http.post("/v1/chat/completions", json=BODY).json()
        assert streamed_text(http) == two_streamed == two["choices"][0]["message"]["content"]
        assert http.get("/health").json() == {"status": "ok"}
        assert "glmv_kv_cache_blocks" in http.get("/metrics").text
    assert one["choices"][0]["message"] == two["choices"][0]["message"]
    assert one["usage"] == two["usage"]
    tokens = lambda out: [t["token"] for t in out["choices"][0]["logprobs"]["content"]]
    assert tokens(one) == tokens(two)


def test_a_dead_engine_process_is_reported(model_dir):
    with serve_process(model_dir) as server, httpx.Client(base_url=server.url, timeout=60) as http:
        assert http.post("/v1/chat/completions", json=BODY).status_code == 200
        os.kill(engine_pid(server), signal.SIGKILL)
        deadline = time.monotonic() + 30
        while http.get("/health").status_code == 200 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert http.get("/health").json() == {"status": "engine stopped"}
        r = http.post("/v1/chat/completions", json=BODY)
        assert r.status_code == 503 and r.json()["error"]["code"] == "engine_stopped"
