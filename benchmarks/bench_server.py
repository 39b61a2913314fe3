"""Server overhead: requests/s and time to first token at concurrency 1, 8 and 32, through `glmv serve` (HTTP +
SSE on loopback, a separate process) vs the same AsyncEngine called directly in this process, on a tiny model.

    python benchmarks/bench_server.py [--threads 1] [--tokens 16] [--rounds 5] [--device cpu]

Both sides serve the same checkpoint with the same batch size and torch thread count; the server runs as
`glmv serve` does by default (its engine in a process of its own, no access log). Within a round the two sides
run back to back, each first in turn, and a ratio is the median of the rounds' ratios, so that a machine whose
speed drifts (shared, noisy) slows both sides of a ratio alike. Ratios are server / direct: requests/s below 1 and
time to first token above 1 are what HTTP, JSON, SSE and the hand-over between processes cost.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time

import torch

from glmv import LLM, SamplingParams
from glmv.engine.async_engine import AsyncEngine
from glmv.testing.server import LOOPBACK, serve_process
from glmv.testing.tiny_checkpoint import make_tiny_model_dir

LEVELS = (1, 8, 32)


def messages(i: int) -> list[dict]:
    return [{"role": "user", "content": f"Request {i}: describe the picture in a few words."}]


async def run_level(one, concurrency: int, total: int) -> tuple[float, float]:
    """(requests/s, median time to first token in s) for `total` requests, `concurrency` at a time."""
    gate = asyncio.Semaphore(concurrency)
    ttfts = []

    async def guarded(i: int) -> None:
        async with gate:
            ttfts.append(await one(i))

    start = time.perf_counter()
    await asyncio.gather(*(guarded(i) for i in range(total)))
    return total / (time.perf_counter() - start), statistics.median(ttfts)


def direct_request(engine: AsyncEngine, params: SamplingParams):
    async def one(i: int) -> float:
        start = time.perf_counter()
        first = None
        async for _ in await engine.submit(messages(i), params):
            first = first or time.perf_counter() - start
        return first

    return one


def server_request(port: int, tokens: int):
    """One streamed chat request over a bare asyncio connection, kept alive for the next request as HTTP clients
    (httpx, the openai client) keep theirs. A full HTTP client spends more CPU per SSE chunk than the server
    does; on a small machine it would dominate what this benchmark means to measure."""
    idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def one(i: int) -> float:
        body = json.dumps({"model": "model", "temperature": 0, "max_tokens": tokens, "ignore_eos": True,
                           "stream": True, "messages": messages(i)}).encode()
        request = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
                   b"Content-Length: %d\r\n\r\n%s" % (LOOPBACK.encode(), len(body), body))
        start = time.perf_counter()
        while True:  # a kept connection may have been closed: uvicorn closes those idle for 5 s
            fresh = not idle
            reader, writer = await asyncio.open_connection(LOOPBACK, port) if fresh else idle.pop()
            writer.write(request)
            status = await reader.readline()
            if status or fresh:
                break
        if b" 200 " not in status:
            raise RuntimeError(f"server answered {status!r}")
        first, chunks = None, 0
        while (line := await reader.readline()) != b"0\r\n":  # the chunked body's last, empty chunk
            if not line:
                raise RuntimeError("the server closed the connection mid-response")
            if line.startswith(b"data: {"):
                chunks += 1
                if chunks == 2:  # the first chunk only announces the role; the second carries the first token
                    first = time.perf_counter() - start
        await reader.readline()  # the blank line after it
        idle.append((reader, writer))
        return first

    return one


async def measure(llm: LLM, port: int, args) -> dict[str, dict[int, list[tuple[float, float]]]]:
    params = SamplingParams(temperature=0, max_tokens=args.tokens, ignore_eos=True)
    engine = AsyncEngine(llm, max_queue=1024, max_batch=max(LEVELS))
    results = {"direct": {c: [] for c in LEVELS}, "server": {c: [] for c in LEVELS}}
    try:
        sides = {"direct": direct_request(engine, params), "server": server_request(port, args.tokens)}
        for one in sides.values():  # warm-up: first calls of each shape are slow
            await run_level(one, 8, 8)
        for r in range(args.rounds):
            for c in LEVELS:
                # the two sides back to back, in turn first: a ratio pairs measurements a second apart
                for side in ("direct", "server")[:: 1 if r % 2 == 0 else -1]:
                    results[side][c].append(await run_level(sides[side], c, max(24, 6 * c)))
    finally:
        engine.shutdown()
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the engine, on both sides (default 1)")
    ap.add_argument("--tokens", type=int, default=16, help="tokens generated per request")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    path = make_tiny_model_dir(os.path.join(tempfile.mkdtemp(), "model"))
    llm = LLM(path, device=args.device, progress=False)
    with serve_process(path, "--device", args.device, "--threads", str(args.threads), "--max-batch", str(max(LEVELS)),
                       "--max-queue", "1024", log_level="WARNING") as server:  # glmv serve's default: no access log
        results = asyncio.run(measure(llm, int(server.url.rsplit(":", 1)[1]), args))

    print(f"tiny glm4v_moe on {args.device}, {args.tokens} tokens per request, batch up to {max(LEVELS)}, "
          f"{args.threads} threads, medians of {args.rounds} rounds (a ratio: the median of each round's ratio)")
    print(f"{'concurrency':>11} {'direct req/s':>13} {'server req/s':>13} {'ratio':>6}   "
          f"{'direct TTFT ms':>14} {'server TTFT ms':>14} {'ratio':>6}")
    for c in LEVELS:
        direct, server = results["direct"][c], results["server"][c]
        d_rps, d_ttft = (statistics.median(v) for v in zip(*direct))
        s_rps, s_ttft = (statistics.median(v) for v in zip(*server))
        rps_ratio = statistics.median(s[0] / d[0] for d, s in zip(direct, server))
        ttft_ratio = statistics.median(s[1] / d[1] for d, s in zip(direct, server))
        print(f"{c:>11} {d_rps:13.2f} {s_rps:13.2f} {rps_ratio:5.2f}x   "
              f"{d_ttft * 1e3:14.1f} {s_ttft * 1e3:14.1f} {ttft_ratio:5.2f}x")


if __name__ == "__main__":
    main()
