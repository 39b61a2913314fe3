"""50 concurrent streamed requests on loopback, some abandoned mid-way (and a few non-streamed ones whose client
gives up): the others get exactly the text they get alone (temperature 0), the abandoned ones are aborted, and
no queue entry or cache row is left behind."""

from __future__ import annotations

import asyncio
import json
import re
import time

import httpx
import pytest

MODEL = "tiny-glmv"
PROMPTS = [f"Question {i}: " + "describe the picture " * i for i in range(5)]
N, CANCEL_EVERY = 50, 5  # requests 0, 5, 10, ... are abandoned after their first text
IMPATIENT = 3  # non-streamed requests whose client stops waiting after a second
LONG = 3500  # tokens asked by the requests that are abandoned (the tiny model's context is 4096)


def body(i: int, max_tokens: int, stream: bool) -> dict:
    return {"model": MODEL, "messages": [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}], "temperature": 0,
            "max_tokens": max_tokens, "ignore_eos": True, "stream": stream}


async def stream_text(client: httpx.AsyncClient, i: int) -> str | None:
    """The streamed content, or None for a request abandoned after its first text."""
    cancel = i % CANCEL_EVERY == 0
    # Abandoned requests ask for far more tokens than they could produce before the client leaves, so their
    # rows are freed only if the server notices the disconnect.
    async with client.stream("POST", "/v1/chat/completions", json=body(i, LONG if cancel else 8, True)) as r:
        assert r.status_code == 200, await r.aread()
        text = ""
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            delta = json.loads(line[6:])["choices"][0]["delta"]
            text += delta.get("content") or ""
            if cancel and text:
                return None  # leaving the block closes the connection mid-stream
        return text


async def impatient(client: httpx.AsyncClient, i: int) -> None:
    # LONG tokens take far longer than the 1 s this client waits for the answer: only a noticed disconnect ends
    # them early. The second covers the read alone, not connecting (its client has a connection of its own).
    with pytest.raises(httpx.ReadTimeout):
        await client.post("/v1/chat/completions", json=body(i, LONG, False), timeout=httpx.Timeout(300, read=1.0))


def metric(text: str, name: str) -> float:
    return sum(float(v) for v in re.findall(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", text, re.MULTILINE))


def scrape(server) -> str:
    return httpx.get(server.url + "/metrics", headers=server.headers).text


def test_concurrent_streams_with_cancellations(server):
    headers = server.headers
    with httpx.Client(base_url=server.url, headers=headers, timeout=120) as http:
        alone = [http.post("/v1/chat/completions", json=body(i, 8, False)).json()["choices"][0]["message"]["content"]
                 for i in range(len(PROMPTS))]
    aborted_before = metric(scrape(server), 'glmv_sequences_finished_total{reason="abort"}')

    async def run() -> list[str | None]:
        # A connection for every request, so that none waits for another's (a wait would count against the
        # impatient clients' read timeout on a loaded machine).
        def client() -> httpx.AsyncClient:
            limits = httpx.Limits(max_connections=N + IMPATIENT)
            return httpx.AsyncClient(base_url=server.url, headers=headers, timeout=300, limits=limits)
        async with client() as streams, client() as waits:
            return await asyncio.gather(*(stream_text(streams, i) for i in range(N)),
                                        *(impatient(waits, i) for i in range(IMPATIENT)))

    texts = asyncio.run(run())[:N]
    for i, text in enumerate(texts):
        if i % CANCEL_EVERY:
            assert text == alone[i % len(PROMPTS)], f"request {i}"

    # Cancelled rows leave at the engine's next step: wait for that, bounded (a leak would never get there).
    deadline = time.monotonic() + 60
    while True:
        text = scrape(server)
        idle = all(metric(text, name) == 0 for name in
                   ("glmv_running_sequences", "glmv_queue_depth", "glmv_requests_in_flight"))
        if idle or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert idle, text
    assert metric(text, 'glmv_sequences_finished_total{reason="abort"}') - aborted_before == N // CANCEL_EVERY + IMPATIENT
    assert httpx.get(server.url + "/health").json() == {"status": "ok"}
