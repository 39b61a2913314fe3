"""Prometheus metrics in the text exposition format, written by hand (no client library needed).

Counters and histograms live here; the engine's queue depth, running sequences, KV blocks, prefix-cache hits and
preemptions are read at scrape time,
so /metrics shows the live state (a test checks both return to 0 after a load with cancellations).
"""

from __future__ import annotations

import bisect
import time
from collections import defaultdict
from dataclasses import dataclass, field

TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
ITL_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
E2E_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)

@dataclass
class Histogram:
    buckets: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    n: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.buckets) + 1)  # the last one is +Inf

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.total += value
        self.n += 1

    def lines(self, name: str) -> list[str]:
        out, running = [], 0
        for bound, count in zip((*self.buckets, float("inf")), self.counts):
            running += count
            le = "+Inf" if bound == float("inf") else repr(bound)
            out.append(f'{name}_bucket{{le="{le}"}} {running}')
        return out + [f"{name}_sum {self.total}", f"{name}_count {self.n}"]


class Metrics:
    def __init__(self) -> None:
        self.http = defaultdict(int)  # (path, status) -> count
        self.prompt_tokens = 0
        self.generation_tokens = 0
        self.finished = defaultdict(int)  # finish reason -> sequences
        self.in_flight = 0
        self.ttft = Histogram(TTFT_BUCKETS)
        self.itl = Histogram(ITL_BUCKETS)
        self.e2e = Histogram(E2E_BUCKETS)

    def timer(self) -> RequestTimer:
        return RequestTimer(self)

    def render(self, engine: dict[str, int]) -> str:
        """The text exposition of these counters and of the engine's (AsyncEngine.stats())."""
        lines = [
            "# HELP glmv_http_requests_total HTTP requests answered, by route and status.",
            "# TYPE glmv_http_requests_total counter",
            *(f'glmv_http_requests_total{{path="{p}",status="{s}"}} {n}' for (p, s), n in sorted(self.http.items())),
            "# HELP glmv_prompt_tokens_total Prompt tokens of finished generation requests.",
            "# TYPE glmv_prompt_tokens_total counter",
            f"glmv_prompt_tokens_total {self.prompt_tokens}",
            "# HELP glmv_generation_tokens_total Tokens generated (cancelled requests included).",
            "# TYPE glmv_generation_tokens_total counter",
            f"glmv_generation_tokens_total {self.generation_tokens}",
            "# HELP glmv_sequences_finished_total Finished sequences by finish reason.",
            "# TYPE glmv_sequences_finished_total counter",
            *(f'glmv_sequences_finished_total{{reason="{r}"}} {n}' for r, n in sorted(self.finished.items())),
            "# HELP glmv_requests_in_flight Generation requests being handled.",
            "# TYPE glmv_requests_in_flight gauge",
            f"glmv_requests_in_flight {self.in_flight}",
            "# HELP glmv_queue_depth Requests waiting for the engine (media being prepared included).",
            "# TYPE glmv_queue_depth gauge",
            f"glmv_queue_depth {engine['queue_depth']}",
            "# HELP glmv_running_sequences Sequences in the running batch (KV cache rows in use).",
            "# TYPE glmv_running_sequences gauge",
            f"glmv_running_sequences {engine['running']}",
            "# HELP glmv_time_to_first_token_seconds From request arrival to its first text.",
            "# TYPE glmv_time_to_first_token_seconds histogram",
            *self.ttft.lines("glmv_time_to_first_token_seconds"),
            "# HELP glmv_inter_token_latency_seconds Time between consecutive text deltas of a request.",
            "# TYPE glmv_inter_token_latency_seconds histogram",
            *self.itl.lines("glmv_inter_token_latency_seconds"),
            "# HELP glmv_e2e_request_latency_seconds From request arrival to its last token.",
            "# TYPE glmv_e2e_request_latency_seconds histogram",
            *self.e2e.lines("glmv_e2e_request_latency_seconds"),
            "# HELP glmv_kv_cache_blocks KV cache blocks, all and free (free ones may still hold cached prefixes).",
            "# TYPE glmv_kv_cache_blocks gauge",
            f'glmv_kv_cache_blocks{{state="total"}} {engine["kv_blocks"]}',
            f'glmv_kv_cache_blocks{{state="free"}} {engine["kv_blocks_free"]}',
            "# HELP glmv_prefix_cache_queries_total Prompt tokens looked up in the prefix cache.",
            "# TYPE glmv_prefix_cache_queries_total counter",
            f"glmv_prefix_cache_queries_total {engine['prefix_queries']}",
            "# HELP glmv_prefix_cache_hits_total Prompt tokens found there (hit rate: hits / queries).",
            "# TYPE glmv_prefix_cache_hits_total counter",
            f"glmv_prefix_cache_hits_total {engine['prefix_hits']}",
            "# HELP glmv_preemptions_total Sequences preempted for lack of KV blocks (recomputed later).",
            "# TYPE glmv_preemptions_total counter",
            f"glmv_preemptions_total {engine['preemptions']}",
        ]
        return "\n".join(lines) + "\n"


class RequestTimer:
    """Times one generation request as its deltas reach the handler (what a client would see)."""

    def __init__(self, metrics: Metrics):
        self.metrics = metrics
        self.start = time.monotonic()
        self.last: float | None = None
        self.done = False
        metrics.in_flight += 1

    def delta(self) -> None:
        now = time.monotonic()
        if self.last is None:
            self.metrics.ttft.observe(now - self.start)
        else:
            self.metrics.itl.observe(now - self.last)
        self.last = now

    def finish(self, prompt_tokens: int = 0, completion_tokens: int = 0, reasons: tuple[str | None, ...] = ()) -> None:
        """Record the request once (later calls do nothing: error paths may call it again)."""
        if self.done:
            return
        self.done = True
        m = self.metrics
        m.in_flight -= 1
        m.prompt_tokens += prompt_tokens
        m.generation_tokens += completion_tokens
        for reason in reasons:
            m.finished[reason or "abort"] += 1
        if self.last is not None:
            m.e2e.observe(self.last - self.start)


class HttpCounter:
    """ASGI middleware counting responses by route and status (unknown paths pooled, to bound the labels)."""

    def __init__(self, app, metrics: Metrics, paths: frozenset[str]):
        self.app, self.metrics, self.paths = app, metrics, paths

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"] if scope["path"] in self.paths else "other"

        async def counting_send(message) -> None:
            if message["type"] == "http.response.start":
                self.metrics.http[(path, message["status"])] += 1
            await send(message)

        await self.app(scope, receive, counting_send)
