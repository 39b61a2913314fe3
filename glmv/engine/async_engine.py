"""One engine loop shared by every request of a server.

A background thread owns the model. Between decode steps it admits waiting requests (prefilled together, then
merged into the running batch: continuous batching), samples, turns tokens into text deltas, and hands them
to each request's asyncio queue. Media loading and preprocessing run in a thread pool, off both the event
loop and the engine thread. A full queue is refused at once; a cancelled request leaves the batch at the
next step and its cache rows are freed.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import torch

from glmv.engine.engine import Batch
from glmv.engine.llm import LLM, Request, StreamDelta
from glmv.engine.outputs import RequestOutput
from glmv.engine.sampling import SamplingParams
from glmv.errors import GlmvError

log = logging.getLogger(__name__)


class QueueFullError(GlmvError):
    """Too many requests are waiting; the client should retry later."""

    http_status = 503
    code = "server_overloaded"


@dataclass
class Handle:
    """A submitted request: iterate it for deltas; `output()` once finished; `cancel()` to abort."""

    request: Request
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)
    submitted: float = field(default_factory=time.monotonic)
    first_token: float | None = None
    cancelled: bool = False
    error: BaseException | None = None

    def cancel(self) -> None:
        self.cancelled = True

    def _put(self, item: StreamDelta | BaseException | None) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, item)

    async def __aiter__(self) -> AsyncIterator[StreamDelta]:
        while True:
            item = await self.queue.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    @property
    def finished(self) -> bool:
        return all(s.finished for s in self.request.seqs)


class AsyncEngine:
    def __init__(self, llm: LLM, max_queue: int = 64, max_batch: int = 16, media_workers: int = 2):
        self.llm = llm
        self.max_queue = max_queue
        self.max_batch = max_batch
        self.pool = ThreadPoolExecutor(media_workers, thread_name_prefix="glmv-media")
        self.waiting: deque[Handle] = deque()
        self.owners: dict[int, tuple[Handle, int]] = {}  # id(sequence) -> (its handle, sample index)
        self.preparing = 0
        self.lock = threading.Lock()
        self.wake = threading.Condition(self.lock)
        self.stopped = False
        self.thread = threading.Thread(target=self._run, name="glmv-engine", daemon=True)
        self.thread.start()

    # --- called from the event loop --------------------------------------------------------------------------
    @property
    def queue_depth(self) -> int:
        return len(self.waiting) + self.preparing

    @property
    def running(self) -> int:
        """Sequences in the batch (cache rows in use)."""
        return len(self.owners)

    async def submit(self, messages: list[dict], params: SamplingParams, enable_thinking: bool | None = None,
                     tools: list[dict] | None = None, **template_kwargs: Any) -> Handle:
        """Prepare (in the media pool) and enqueue one conversation. Raises QueueFullError at once when the
        queue is full, and InputError/ContextLengthError for bad input, before anything is queued."""
        return await self._enqueue(
            lambda: self.llm.prepare_chat([messages], params, enable_thinking, tools, **template_kwargs)[0])

    async def submit_prompt(self, prompt: str | list[int], params: SamplingParams) -> Handle:
        """Enqueue an already formatted text prompt (or token ids): no chat template, no media."""
        return await self._enqueue(lambda: self.llm.prepare_prompt(prompt, params))

    async def _enqueue(self, prepare) -> Handle:
        with self.lock:
            if self.queue_depth >= self.max_queue:
                raise QueueFullError(f"the server is busy ({self.queue_depth} requests waiting); retry shortly")
            self.preparing += 1
        loop = asyncio.get_running_loop()
        try:
            request = await loop.run_in_executor(self.pool, lambda: self._checked(prepare()))
        finally:
            with self.lock:
                self.preparing -= 1
        handle = Handle(request, loop)
        with self.wake:
            self.waiting.append(handle)
            self.wake.notify()
        return handle

    def _checked(self, request: Request) -> Request:
        for seq in request.seqs:
            self.llm.engine.check_length(seq)  # context errors surface to this caller, not in the loop
        return request

    def output(self, handle: Handle) -> RequestOutput:
        return self.llm.request_output(handle.request)

    def shutdown(self) -> None:
        with self.wake:
            self.stopped = True
            self.wake.notify()
        self.thread.join(timeout=10)
        self.pool.shutdown(wait=False, cancel_futures=True)

    # --- the engine thread -----------------------------------------------------------------------------------
    def _admit(self, batch: Batch | None) -> Batch | None:
        """Prefill waiting requests that fit and merge them into the running batch (blocks while idle)."""
        with self.wake:
            while not self.stopped and batch is None and not self.waiting:
                self.wake.wait()
            room = self.max_batch - (len(batch.seqs) if batch else 0)
            new = []
            while self.waiting and room >= len(self.waiting[0].request.seqs):
                h = self.waiting.popleft()
                room -= len(h.request.seqs)
                if h.cancelled:
                    h._put(None)
                else:
                    new.append(h)
        if not new:
            return batch
        try:
            fresh = self.llm.engine.prefill([s for h in new for s in h.request.seqs])
        except Exception as e:  # whatever the checks let through must not take the loop down
            log.exception("prefill failed")
            for h in new:
                h._put(e if isinstance(e, GlmvError) else GlmvError(f"generation failed: {e}"))
            return batch
        for h in new:
            for k, seq in enumerate(h.request.seqs):
                self.owners[id(seq)] = (h, k)
        if batch is None:
            return fresh
        batch.merge(fresh)
        return batch

    def _run(self) -> None:
        with torch.inference_mode():
            self._loop()

    def _loop(self) -> None:
        engine = self.llm.engine
        batch: Batch | None = None
        while not self.stopped:
            try:
                batch = self._admit(batch)
                if batch is None:
                    continue
                step = engine.sample(batch)
                now = time.monotonic()
                for seq, _ in step:
                    self._emit(seq, now)
                if not engine.advance(batch):
                    batch = None
            except Exception as e:  # fail the requests in flight, keep serving the next ones
                log.exception("engine step failed")
                for h, _ in {id(h): (h, k) for h, k in self.owners.values()}.values():
                    h._put(GlmvError(f"generation failed: {e}"))
                self.owners.clear()
                batch = None

    def _emit(self, seq, now: float) -> None:
        """Turn `seq`'s new token into text for its handle; close the handle when all its samples are done."""
        h, k = self.owners[id(seq)]
        if h.cancelled and not seq.finished:
            seq.output_ids.pop()  # sampled after the client left: not part of the answer
            seq.finish_reason = "abort"  # the row is dropped at advance(), freeing its cache
        else:
            delta = h.request.on_token(k)
            h.first_token = h.first_token or now
            if delta or seq.finished:
                h._put(StreamDelta(0, k, delta, seq.finish_reason))
        if seq.finished:
            del self.owners[id(seq)]
            if h.finished:
                h._put(None)
