"""What every handler shares (the engine, metrics, the served name) and one request's life in the engine:
submitted, its deltas consumed and timed (whole, or as server-sent events), cancelled as soon as its client is
gone."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field

from fastapi import Request
from fastapi.responses import StreamingResponse

from glmv.engine.async_engine import AsyncEngine, EngineInfo, Handle
from glmv.engine.engine_process import EngineProcess
from glmv.engine.llm import StreamDelta
from glmv.engine.outputs import RequestOutput
from glmv.engine.sampling import SamplingParams
from glmv.errors import GlmvError
from glmv.serve.errors import ModelNotFoundError, sse_error
from glmv.serve.metrics import Metrics, RequestTimer
from glmv.serve.responses import SSE_DONE, now, sse


@dataclass
class ServerState:
    engine: AsyncEngine | EngineProcess  # in this process, or in its own (what `glmv serve` runs)
    model_name: str
    metrics: Metrics = field(default_factory=Metrics)
    created: int = field(default_factory=now)

    @property
    def info(self) -> EngineInfo:
        return self.engine.info

    @property
    def context(self) -> int:
        return self.info.max_model_len

    @property
    def defaults(self) -> SamplingParams:
        """The checkpoint's sampling defaults (its eos ids spelled out as stop_token_ids)."""
        return self.info.defaults

    @property
    def adapter_names(self) -> tuple[str, ...]:
        """The LoRA adapters served beside the base model (`glmv serve --lora NAME=PATH`), each a model id."""
        return tuple(self.info.adapters)

    def lora_for(self, name: str | None) -> str | None:
        """The adapter a request's `model` picks: None for the base model, an adapter's name for that adapter,
        the LLM's default when `model` is left out; ModelNotFoundError for any other name (vLLM's rule)."""
        if name is None:
            return self.info.default_lora
        if name == self.model_name:
            return None
        if name in self.adapter_names:
            return name
        served = ", ".join(repr(n) for n in (self.model_name, *self.adapter_names))
        raise ModelNotFoundError(f"the model {name!r} does not exist; this server serves {served}")

    def served_name(self, lora: str | None) -> str:
        """The model id a response names: the adapter's, or the base model's."""
        return lora if lora is not None else self.model_name

    def finish(self, handle: Handle, timer: RequestTimer) -> RequestOutput:
        out = self.engine.output(handle)
        timer.finish(out.prompt_tokens, out.completion_tokens, tuple(c.finish_reason for c in out.outputs))
        return out


async def submit(state: ServerState, submission: Awaitable[Handle]) -> tuple[Handle, RequestTimer]:
    """Await the engine's admission of a request, timed from now (a refused request is counted too)."""
    timer = state.metrics.timer()
    try:
        return await submission, timer
    except BaseException:
        timer.finish()
        raise


async def complete(request: Request, state: ServerState, handle: Handle, timer: RequestTimer) -> RequestOutput:
    """A non-streamed request run to its end (or to its client's departure), its rows freed in every case."""
    try:
        await drain(request, handle, timer)
    finally:
        handle.cancel()  # a no-op once finished; frees the rows if anything above failed
        out = state.finish(handle, timer)
    return out


def event_stream(state: ServerState, handle: Handle, timer: RequestTimer, head: dict, include_usage: bool,
                 choices: AsyncIterator[list[dict]]) -> StreamingResponse:
    """Server-sent events: one chunk per list of choices, then usage (if asked) and [DONE]; an engine error
    becomes an error event. Closing the stream (the client left) cancels the request."""
    async def events() -> AsyncIterator[str]:
        try:
            async for chunk in choices:
                yield sse({**head, "choices": chunk})
            out = state.finish(handle, timer)
            if include_usage:
                yield sse({**head, "choices": [], "usage": out.usage})
            yield SSE_DONE
        except GlmvError as e:
            yield sse_error(e)
            yield SSE_DONE
        finally:
            handle.cancel()  # a no-op once finished
            if not timer.done:  # the client left or generation failed
                state.finish(handle, timer)

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def deltas(handle: Handle, timer: RequestTimer) -> AsyncIterator[StreamDelta]:
    """The handle's deltas, each timed. Whoever stops iterating early must call handle.cancel()."""
    async for d in handle:
        timer.delta()
        yield d


async def drain(request: Request, handle: Handle, timer: RequestTimer) -> None:
    """Run a non-streamed request to the end; if the client disconnects first, cancel it (its rows are freed
    at the next engine step, which also ends the handle)."""
    async def consume() -> None:
        async for _ in deltas(handle, timer):
            pass

    work = asyncio.ensure_future(consume())
    watch = asyncio.ensure_future(_disconnect(request))
    try:
        await asyncio.wait({work, watch}, return_when=asyncio.FIRST_COMPLETED)
        if not work.done():
            handle.cancel()
        await work
    finally:
        watch.cancel()
        work.cancel()


async def _disconnect(request: Request) -> None:
    # The body has been read, so the next message can only be the disconnect.
    while (await request.receive())["type"] != "http.disconnect":
        pass
