"""One engine loop shared by every request of a server.

A background thread owns the engine. Between steps it hands newly submitted requests' sequences to the engine
(its scheduler batches them continuously, prefilling in chunks between decode steps), turns each step's tokens
into text deltas, and hands them to each request's asyncio queue with one wake-up of the event loop per step.
Media loading, preprocessing and the per-request checks run in a thread pool, off both the event loop and the
engine thread. A full queue is refused at once; a cancelled request's sequences leave at the next step and their
blocks are freed.

One request never hurts another: each is checked alone before it reaches the engine (Engine.check), a request's n
samples are scheduled like any other sequences, and a forward or sampling step that raises is retried sequence by
sequence inside the engine so that only the request at fault fails. Clients see GlmvError messages; any other
exception text stays in the server log.

What a server reads of the model (EngineInfo, stats(), embed(), score()) goes through this class too, so that
glmv.engine.engine_process.EngineProcess can stand in for it with the engine in another process.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from glmv.engine.llm import LLM, LoraChoice, Request, StreamDelta
from glmv.engine.outputs import RequestOutput
from glmv.engine.sampling import SamplingParams
from glmv.engine.sequence import Sequence
from glmv.errors import GlmvError, InputError
from glmv.inputs.image import warm_up as warm_up_images
from glmv.inputs.tokenizer import Tokenizer
from glmv.lora.serving import lora_scope

log = logging.getLogger(__name__)


class QueueFullError(GlmvError):
    """Too many requests are waiting; the client should retry later."""

    http_status = 503
    code = "server_overloaded"


_NOTHING = object()  # no delta held back (None is the end-of-stream marker)


@dataclass(frozen=True)
class EngineInfo:
    """What a server needs to know of the model it serves (an engine process sends it once, at start-up)."""

    model_name: str  # the checkpoint directory's name
    max_model_len: int
    defaults: SamplingParams  # generation_config.json's values, its eos ids spelled out as stop_token_ids
    tokenizer: Tokenizer
    hidden_size: int
    adapters: dict[str, str]  # served LoRA adapter name -> its directory
    default_lora: str | None  # the adapter of requests that name none (None: the base model)

    @classmethod
    def of(cls, llm: LLM) -> "EngineInfo":
        # The eos ids spelled out, so that a request's stop_token_ids add to them (vLLM's meaning), not replace them.
        defaults = replace(llm.default_sampling_params(), stop_token_ids=list(llm.engine.eos_token_ids))
        adapters = {name: str(path) for name, path in llm.adapters.paths.items()} if llm.adapters else {}
        return cls(llm.path.name, llm.engine.max_model_len, defaults, llm.tokenizer,
                   llm.model.config.text.hidden_size, adapters, llm.default_lora)


@dataclass
class Handle:
    """A submitted request: iterate it for deltas; `output()` once finished; `cancel()` to abort."""

    request: Request
    loop: asyncio.AbstractEventLoop | None  # where its deliveries go (None: the engine's own deliver)
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)
    submitted: float = field(default_factory=time.monotonic)
    first_token: float | None = None
    cancelled: bool = False
    closed: set[int] = field(default_factory=set)  # samples whose last delta has been put
    outbox: list = field(default_factory=list)  # the engine's: what waits for the end of the step (engine thread)
    tag: Any = None  # the submitter's name for this request (an engine process's request id; enqueue())

    def cancel(self) -> None:
        self.cancelled = True

    def fail(self, error: GlmvError) -> None:
        """End this request with `error`; its other samples leave the engine at the next step."""
        self.cancelled = True
        self._put(error)

    def _put(self, item: StreamDelta | BaseException | None) -> None:
        self.outbox.append((self, item))  # delivered with the rest of the step's (AsyncEngine._flush)

    async def __aiter__(self) -> AsyncIterator[StreamDelta]:
        """The deltas in order. What is already waiting for the same sample joins the delta in hand: a reader that
        fell behind the engine (a busy event loop serving many streams) catches up in one delta instead of one
        per token, so its cost per token falls as the load rises; a reader that keeps up gets one per token."""
        held: Any = _NOTHING
        while True:
            if held is _NOTHING:
                item = await self.queue.get()
            else:
                item, held = held, _NOTHING
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            while item.finish_reason is None and not self.queue.empty():
                nxt = self.queue.get_nowait()
                if not isinstance(nxt, StreamDelta) or nxt.index != item.index:
                    held = nxt
                    break
                item = replace(item, text=item.text + nxt.text, finish_reason=nxt.finish_reason)
            yield item

    def close(self, k: int) -> None:
        """Sample k has put its last delta; after the last sample, the iteration ends."""
        if k not in self.closed:
            self.closed.add(k)
            if len(self.closed) == len(self.request.seqs):
                self._put(None)


Delivery = Callable[[list[tuple[Handle, StreamDelta | BaseException | None]]], None]


class AsyncEngine:
    def __init__(self, llm: LLM, max_queue: int = 64, max_batch: int = 16, media_workers: int = 2,
                 deliver: Delivery | None = None):
        """`deliver`: where a step's deliveries go (called on the engine thread, once per step); by default to
        each handle's asyncio queue, with one wake-up of each event loop per step."""
        self.llm = llm
        self.info = EngineInfo.of(llm)
        self.max_queue = max_queue
        self.max_batch = max_batch
        self.deliver = deliver or _to_event_loops
        self.pool = ThreadPoolExecutor(media_workers, thread_name_prefix="glmv-media")
        self.pool.submit(warm_up_images, llm.processor.image_config)  # kernels ready before the first image
        # embeddings and scores run here, one at a time, beside the engine thread
        self.pooling = ThreadPoolExecutor(1, thread_name_prefix="glmv-pool")
        self.pooling_waiting = 0
        llm.engine.scheduler.max_num_seqs = max_batch
        self.waiting: deque[Handle] = deque()  # submitted, not yet handed to the engine
        self.owners: dict[int, tuple[Handle, int]] = {}  # id(sequence) -> (its handle, sample index)
        self.preparing = 0
        self.outbox: list[tuple[Handle, StreamDelta | BaseException | None]] = []  # one step's deliveries
        self.lock = threading.Lock()
        self.wake = threading.Condition(self.lock)
        self.stopped = False
        self.thread = threading.Thread(target=self._run, name="glmv-engine", daemon=True)
        self.thread.start()

    # --- called from the event loop --------------------------------------------------------------------------
    @property
    def queue_depth(self) -> int:
        """Requests being prepared or waiting, and sequences waiting in the engine for blocks or a batch slot."""
        return len(self.waiting) + self.preparing + len(self.llm.engine.scheduler.waiting)

    @property
    def running(self) -> int:
        """Sequences in the running batch (holding KV blocks)."""
        return sum(not s.finished for s in self.llm.engine.scheduler.running)

    @property
    def alive(self) -> bool:
        return self.thread.is_alive()

    async def stats(self) -> dict[str, int]:
        """The gauges and counters /metrics shows of the engine."""
        engine = self.llm.engine
        blocks = engine.blocks
        return {"queue_depth": self.queue_depth, "running": self.running, "kv_blocks": len(blocks.blocks),
                "kv_blocks_free": blocks.num_free, "prefix_queries": blocks.queries, "prefix_hits": blocks.hits,
                "preemptions": engine.scheduler.preemptions}

    async def submit(self, messages: list[dict], params: SamplingParams, enable_thinking: bool | None = None,
                     tools: list[dict] | None = None, lora: str | None | LoraChoice = LoraChoice.DEFAULT,
                     **template_kwargs: Any) -> Handle:
        """Prepare (in the media pool) and enqueue one conversation, run with the served adapter `lora` (None:
        the base model). Raises QueueFullError at once when the queue is full, and InputError/ContextLengthError
        for bad input, before anything is queued."""
        return await self._enqueue(params, self.chat_preparer(messages, params, enable_thinking, tools, lora,
                                                              **template_kwargs))

    async def submit_prompt(self, prompt: str | list[int], params: SamplingParams,
                            lora: str | None | LoraChoice = LoraChoice.DEFAULT) -> Handle:
        """Enqueue an already formatted text prompt (or token ids): no chat template, no media."""
        return await self._enqueue(params, self.prompt_preparer(prompt, params, lora))

    def chat_preparer(self, messages: list[dict], params: SamplingParams, enable_thinking: bool | None = None,
                      tools: list[dict] | None = None, lora: str | None | LoraChoice = LoraChoice.DEFAULT,
                      **template_kwargs: Any) -> Callable[[], Request]:
        """A function making, on whichever thread calls it, the request submit() would enqueue for these arguments."""
        return lambda: self.llm.prepare_chat([messages], params, enable_thinking, tools, lora, **template_kwargs)[0]

    def prompt_preparer(self, prompt: str | list[int], params: SamplingParams,
                        lora: str | None | LoraChoice = LoraChoice.DEFAULT) -> Callable[[], Request]:
        """The same for submit_prompt()."""
        return lambda: self.llm.prepare_prompt(prompt, params, lora)

    async def embed(self, inputs: list, add_generation_prompt: bool, lora: str | None) -> tuple[list[np.ndarray], int]:
        """The embedding of each input (as /v1/embeddings reads them) and their prompt tokens, with adapter `lora`."""
        pooler = self.llm.pooler

        def work():
            rows = [pooler.row(x, add_generation_prompt) for x in inputs]
            with lora_scope(self.llm.model, lora):
                vectors = pooler.embed(rows)
            return [v.numpy() for v in vectors], sum(len(r.ids) for r in rows)

        return await self._pooled(work)

    async def score(self, pairs: list[tuple[Any, list[str]]], lora: str | None) -> tuple[list[float], int]:
        """The score of each candidate of each (query, candidates) pair (as /v1/score reads them), and the prompt
        tokens, with adapter `lora`."""
        pooler = self.llm.pooler

        def work():
            scores, tokens = [], 0
            for query, candidates in pairs:
                rows, prefix_len = pooler.score_rows(query, candidates)
                with lora_scope(self.llm.model, lora):
                    scores += pooler.score(rows, prefix_len)
                tokens += sum(len(r.ids) for r in rows)
            return scores, tokens

        return await self._pooled(work)

    async def _pooled(self, work):
        """Run `work` in the pooling thread; more than max_queue requests waiting for it is a 503."""
        if self.pooling_waiting >= self.max_queue:
            raise QueueFullError(f"the server is busy ({self.pooling_waiting} embedding/score requests waiting); "
                                 "retry shortly")
        self.pooling_waiting += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self.pooling, work)
        finally:
            self.pooling_waiting -= 1

    async def _enqueue(self, params: SamplingParams, prepare: Callable[[], Request]) -> Handle:
        self.reserve(params)
        loop = asyncio.get_running_loop()
        try:
            request = await loop.run_in_executor(self.pool, self.prepared, prepare)
        finally:
            self.release()
        return self.enqueue(request, loop)

    # The steps of a submission, for a caller on threads of its own (an engine process): reserve() at once on
    # arrival, prepared() in the media pool, release() after it in every case, then enqueue().
    def reserve(self, params: SamplingParams) -> None:
        """Count a submission in, or refuse it at once: more samples than a batch holds, or a full queue."""
        if params.n > self.max_batch:
            raise InputError(f"n is {params.n}, but this server decodes at most {self.max_batch} sequences at "
                             f"once (--max-batch); ask for n <= {self.max_batch}")
        with self.lock:
            if self.queue_depth >= self.max_queue:
                raise QueueFullError(f"the server is busy ({self.queue_depth} requests waiting); retry shortly")
            self.preparing += 1

    def release(self) -> None:
        with self.lock:
            self.preparing -= 1

    def prepared(self, prepare: Callable[[], Request]) -> Request:
        """The request `prepare` makes, checked (errors reach this caller alone, before anything is queued)."""
        request = prepare()
        for seq in request.seqs:
            self.llm.engine.check(seq)
        return request

    def enqueue(self, request: Request, loop: asyncio.AbstractEventLoop | None, tag: Any = None) -> Handle:
        """Hand a prepared request to the engine thread; its deliveries go to `loop` (or to self.deliver's
        destination)."""
        handle = Handle(request, loop, outbox=self.outbox, tag=tag)
        with self.wake:
            self.waiting.append(handle)
            self.wake.notify()
        return handle

    def output(self, handle: Handle) -> RequestOutput:
        return self.llm.request_output(handle.request)

    def shutdown(self) -> None:
        with self.wake:
            self.stopped = True
            self.wake.notify()
        self.thread.join(timeout=10)
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.pooling.shutdown(wait=False, cancel_futures=True)

    # --- the engine thread -----------------------------------------------------------------------------------
    def _run(self) -> None:
        with torch.inference_mode():
            self._loop()

    def _loop(self) -> None:
        engine = self.llm.engine
        while not self.stopped:
            try:
                self._admit()
                self._drop_cancelled()
                produced = engine.step()
                for seq, _ in produced:
                    self._emit(seq)
                for seq in engine.take_failed():
                    if id(seq) in self.owners:
                        self._fail(self.owners[id(seq)][0], seq.error)
            except Exception as e:  # not one request's fault: fail the requests in flight, keep serving
                for h in {id(h): h for h, _ in self.owners.values()}.values():
                    self._fail(h, e)
            finally:
                self._flush()

    def _flush(self) -> None:
        """Hand the step's deltas, errors and ends on, all at once (self.deliver)."""
        if not self.outbox:
            return
        items, self.outbox[:] = list(self.outbox), []  # the handles hold this list: empty it in place
        self.deliver(items)

    def _admit(self) -> None:
        """Hand submitted requests to the engine; sleep while there is nothing to do."""
        with self.wake:
            while not self.stopped and not self.waiting and not self.llm.engine.has_work():
                self.wake.wait()
            handles, self.waiting = list(self.waiting), deque()
        for h in handles:
            for k, seq in enumerate(h.request.seqs):
                self.owners[id(seq)] = (h, k)
                self.llm.engine.scheduler.add(seq)  # checked in the media pool already

    def _drop_cancelled(self) -> None:
        """Sequences of requests whose client left (or that failed) leave the engine at this step."""
        for h, k in list(self.owners.values()):
            seq = h.request.seqs[k]
            if h.cancelled and not seq.finished:
                seq.finish_reason = "abort"
                self._close(h, k)

    def _close(self, h: Handle, k: int) -> None:
        self.owners.pop(id(h.request.seqs[k]), None)
        h.close(k)

    def _fail(self, h: Handle, error: BaseException) -> None:
        """Fail one request: a GlmvError says what was wrong; anything else is logged, never sent."""
        if isinstance(error, GlmvError):
            log.info("request %s refused: %s", h.request.request_id, error)
        else:
            log.error("request %s failed", h.request.request_id, exc_info=error)
            error = GlmvError("generation failed (an internal error; the server log has the details)")
        h.fail(error)
        for k, seq in enumerate(h.request.seqs):
            seq.finish_reason = seq.finish_reason or "abort"
            self._close(h, k)

    def _emit(self, seq: Sequence) -> None:
        """Turn `seq`'s new token into text for its handle; close the sample when it is done."""
        if id(seq) not in self.owners:
            return  # its request failed or was cancelled in this step
        h, k = self.owners[id(seq)]
        try:
            delta = h.request.on_token(k)
        except Exception as e:  # this request's detokenizing or stop matching: it alone fails
            self._fail(h, e)
            return
        h.first_token = h.first_token or time.monotonic()
        if delta or seq.finished:
            h._put(StreamDelta(0, k, delta, seq.finish_reason))
        if seq.finished:
            self._close(h, k)


def _to_event_loops(items: list[tuple[Handle, StreamDelta | BaseException | None]]) -> None:
    """Each item to its handle's queue: one wake-up of each event loop per step, not one per token per request
    (at 32 streams that was most of the event loop's work)."""
    by_loop: dict[asyncio.AbstractEventLoop, list] = {}
    for h, item in items:
        by_loop.setdefault(h.loop, []).append((h.queue, item))
    for loop, batch in by_loop.items():
        try:
            loop.call_soon_threadsafe(_put_all, batch)
        except RuntimeError:  # that loop has closed: its clients are gone
            pass


def _put_all(batch: list[tuple[asyncio.Queue, StreamDelta | BaseException | None]]) -> None:
    for queue, item in batch:
        queue.put_nowait(item)
