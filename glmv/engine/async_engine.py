"""One engine loop shared by every request of a server.

A background thread owns the model. Between decode steps it admits waiting requests (prefilled together, then
merged into the running batch: continuous batching), samples, turns tokens into text deltas, and hands them
to each request's asyncio queue. Media loading and preprocessing run in a thread pool, off both the event
loop and the engine thread. A full queue is refused at once; a cancelled request leaves the batch at the
next step and its cache rows are freed.

One request never hurts another: each is checked alone before it joins a batch (Engine.check), a request's
n samples may join over several steps (so no request waits for a whole empty batch or blocks the queue),
and when a batched prefill or sampling step raises, the request at fault is found by running each alone and
only it fails. Clients see GlmvError messages; any other exception text stays in the server log.
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

from glmv.engine.engine import Batch, Sequence
from glmv.engine.llm import LLM, Request, StreamDelta
from glmv.engine.outputs import RequestOutput
from glmv.engine.sampling import Sampler, SamplingParams
from glmv.errors import GlmvError, InputError

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
    pending: list[int] = field(init=False)  # indices of the samples not yet admitted to the batch
    closed: set[int] = field(default_factory=set)  # samples whose last delta has been put

    def __post_init__(self) -> None:
        self.pending = list(range(len(self.request.seqs)))

    def cancel(self) -> None:
        self.cancelled = True

    def fail(self, error: GlmvError) -> None:
        """End this request with `error`; its running samples leave the batch at the next step."""
        self.cancelled = True
        self._put(error)

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

    def close(self, k: int) -> None:
        """Sample k has put its last delta; after the last sample, the iteration ends."""
        if k not in self.closed:
            self.closed.add(k)
            if len(self.closed) == len(self.request.seqs):
                self._put(None)


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
            params, lambda: self.llm.prepare_chat([messages], params, enable_thinking, tools, **template_kwargs)[0])

    async def submit_prompt(self, prompt: str | list[int], params: SamplingParams) -> Handle:
        """Enqueue an already formatted text prompt (or token ids): no chat template, no media."""
        return await self._enqueue(params, lambda: self.llm.prepare_prompt(prompt, params))

    async def _enqueue(self, params: SamplingParams, prepare) -> Handle:
        if params.n > self.max_batch:
            raise InputError(f"n is {params.n}, but this server decodes at most {self.max_batch} sequences at "
                             f"once (--max-batch); ask for n <= {self.max_batch}")
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
        self.llm.engine.check(request.seqs[0])  # the samples share the prompt; errors reach this caller alone
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
        """Prefill the waiting samples that fit and merge them into the running batch (blocks while idle)."""
        with self.wake:
            while not self.stopped and batch is None and not self.waiting:
                self.wake.wait()
            room = self.max_batch - (len(batch.seqs) if batch else 0)
            groups: list[tuple[Handle, list[int]]] = []
            while self.waiting and room > 0:
                h = self.waiting[0]
                if h.cancelled:
                    self.waiting.popleft()
                    self._drop_pending(h)
                    continue
                take, h.pending = h.pending[:room], h.pending[room:]  # n > room: the rest joins later
                room -= len(take)
                groups.append((h, take))
                if not h.pending:
                    self.waiting.popleft()
        if not groups:
            return batch
        fresh = self._prefill(groups)
        if fresh is None:
            return batch
        if batch is None:
            return fresh
        batch.merge(fresh)
        return batch

    def _prefill(self, groups: list[tuple[Handle, list[int]]]) -> Batch | None:
        """One batched prefill; if it raises, each request alone, failing only those that raise."""
        try:
            fresh = self.llm.engine.prefill(self._seqs(groups))
        except Exception as e:
            if len(groups) == 1:
                self._fail(groups[0][0], e)
                return None
            log.warning("batched prefill failed (%s); prefilling its %d requests one by one", e, len(groups))
            fresh, kept = None, []
            for group in groups:
                try:
                    part = self.llm.engine.prefill(self._seqs([group]))
                except Exception as e1:
                    self._fail(group[0], e1)
                    continue
                kept.append(group)
                if fresh is None:
                    fresh = part
                else:
                    fresh.merge(part)
            groups = kept
        for h, ks in groups:
            for k in ks:
                self.owners[id(h.request.seqs[k])] = (h, k)
        return fresh

    @staticmethod
    def _seqs(groups: list[tuple[Handle, list[int]]]) -> list[Sequence]:
        return [h.request.seqs[k] for h, ks in groups for k in ks]

    @staticmethod
    def _drop_pending(h: Handle) -> None:
        """A cancelled request leaves the queue: its samples not yet admitted end as aborted."""
        pending, h.pending = h.pending, []
        for k in pending:
            h.request.seqs[k].finish_reason = "abort"
            h.close(k)

    def _fail(self, h: Handle, error: BaseException) -> None:
        """Fail one request: a GlmvError says what was wrong; anything else is logged, never sent."""
        if isinstance(error, GlmvError):
            log.info("request %s refused: %s", h.request.request_id, error)
        else:
            log.error("request %s failed", h.request.request_id, exc_info=error)
            error = GlmvError("generation failed (an internal error; the server log has the details)")
        h.fail(error)
        with self.lock:
            h.pending = []
        for k, seq in enumerate(h.request.seqs):  # running samples end at the next step, as cancelled ones do
            if id(seq) not in self.owners:
                seq.finish_reason = seq.finish_reason or "abort"
                h.close(k)

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
                step = self._sample(batch)
                now = time.monotonic()
                for seq, _ in step:
                    self._emit(seq, now)
                if not engine.advance(batch):
                    batch = None
            except Exception as e:  # not one request's fault: fail the requests in flight, keep serving
                handles = {id(h): h for h, _ in self.owners.values()}.values()
                self.owners.clear()
                for h in handles:
                    self._fail(h, e)
                batch = None

    def _sample(self, batch: Batch) -> list[tuple[Sequence, int]]:
        """Engine.sample; if it raises, the rows that raise when sampled alone fail their requests, the rest
        is sampled again without them."""
        try:
            return self.llm.engine.sample(batch)
        except Exception as e:
            handle = lambda j: self.owners[id(batch.seqs[j])][0]
            bad = {id(handle(j)): handle(j) for j in range(len(batch.seqs)) if not self._samples_alone(batch, j)}
            keep = [j for j in range(len(batch.seqs)) if id(handle(j)) not in bad]
            if not bad or not keep:
                raise  # not one request's fault, or every request's: the loop fails them all
            for j in range(len(batch.seqs)):
                if j not in keep:
                    batch.seqs[j].finish_reason = "abort"  # _fail closes these samples
                    del self.owners[id(batch.seqs[j])]
            for h in bad.values():
                self._fail(h, e)
            batch.keep(keep)
            return self.llm.engine.sample(batch)

    def _samples_alone(self, batch: Batch, j: int) -> bool:
        """Whether row j can be sampled on its own (a dry run: its RNG state is put back)."""
        seq = batch.seqs[j]
        gen = seq.generator(batch.logits.device) if seq.params.seed is not None else None
        state = gen.get_state() if gen is not None else None
        try:
            Sampler()(batch.logits[j : j + 1], [seq])
            return True
        except Exception:
            return False
        finally:
            if gen is not None:
                gen.set_state(state)

    def _emit(self, seq: Sequence, now: float) -> None:
        """Turn `seq`'s new token into text for its handle; close the handle when all its samples are done."""
        h, k = self.owners[id(seq)]
        if h.cancelled and not seq.finished:
            seq.output_ids.pop()  # sampled after the client left: not part of the answer
            seq.finish_reason = "abort"  # the row is dropped at advance(), freeing its cache
        else:
            try:
                delta = h.request.on_token(k)
            except Exception as e:  # this request's detokenizing or stop matching: it alone fails
                del self.owners[id(seq)]
                self._fail(h, e)
                return
            h.first_token = h.first_token or now
            if delta or seq.finished:
                h._put(StreamDelta(0, k, delta, seq.finish_reason))
        if seq.finished:
            del self.owners[id(seq)]
            h.close(k)
