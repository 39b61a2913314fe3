"""`/health` latency while `glmv serve` refuses huge text prompts (10 MB and 50 MB of text against the bundled nano
model's context), next to the same latency with the server idle, measured in one run.

    python benchmarks/bench_huge_prompt.py [--model PATH] [--sizes-mb 10 50]

A second process-free thread polls /health every 20 ms while the huge request is sent; the table prints the
refusal's status and time, the largest and median /health latency under that request, and the idle baseline.
Before the fix (tokenising the whole text while holding the GIL) a 10 MB prompt took ~20 s and stalled /health
for as long.
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time

import httpx

from glmv.model_path import resolve_model_path
from glmv.testing.server import serve_process


def poll_health(url: str, stop: threading.Event) -> list[float]:
    """Latencies (s) of /health, polled until `stop` is set."""
    out = []
    with httpx.Client(timeout=120) as client:
        while not stop.is_set():
            t0 = time.perf_counter()
            client.get(url + "/health")
            out.append(time.perf_counter() - t0)
            time.sleep(0.02)
    return out


def while_running(url: str, action) -> tuple[object, list[float]]:
    stop = threading.Event()
    latencies: list[float] = []
    poller = threading.Thread(target=lambda: latencies.extend(poll_health(url, stop)))
    poller.start()
    time.sleep(0.2)  # some idle samples first
    try:
        result = action()
    finally:
        time.sleep(0.1)
        stop.set()
        poller.join()
    return result, latencies


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="checkpoint directory (default: the bundled nano model)")
    p.add_argument("--sizes-mb", type=float, nargs="+", default=[10, 50])
    args = p.parse_args()
    path = resolve_model_path(args.model)
    with serve_process(path) as server, httpx.Client(base_url=server.url, timeout=600) as http:
        name = http.get("/v1/models").json()["data"][0]["id"]
        print(f"{'request':>14} {'status':>6} {'answer s':>9} {'health max ms':>14} {'health median ms':>17}")
        _, idle = while_running(server.url, lambda: time.sleep(1.0))
        print(f"{'idle':>14} {'':>6} {'':>9} {max(idle) * 1e3:14.1f} {statistics.median(idle) * 1e3:17.1f}")
        for mb in args.sizes_mb:
            text = "word " * int(mb * (1 << 20) / 5)
            body = json.dumps({"model": name, "messages": [{"role": "user", "content": text}], "max_tokens": 4})

            def send() -> tuple[int, float]:
                t0 = time.perf_counter()
                r = http.post("/v1/chat/completions", content=body, headers={"Content-Type": "application/json"})
                return r.status_code, time.perf_counter() - t0

            (status, seconds), busy = while_running(server.url, send)
            print(f"{f'{mb:g} MB prompt':>14} {status:>6} {seconds:9.2f} {max(busy) * 1e3:14.1f} "
                  f"{statistics.median(busy) * 1e3:17.1f}")


if __name__ == "__main__":
    main()
