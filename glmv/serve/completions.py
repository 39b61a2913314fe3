"""POST /v1/completions: a raw text prompt (no chat template, no media) continued as text."""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import Request
from fastapi.responses import JSONResponse, StreamingResponse

from glmv.engine.async_engine import Handle
from glmv.errors import GlmvError
from glmv.serve.errors import sse_error
from glmv.serve.metrics import RequestTimer
from glmv.serve.protocol import CompletionRequest
from glmv.serve.responses import SSE_DONE, completion_logprobs, new_id, now, sse
from glmv.serve.state import ServerState, deltas, drain


async def completions(request: Request, state: ServerState) -> JSONResponse | StreamingResponse:
    req = CompletionRequest.model_validate_json(await request.body())
    state.check_model(req.model)
    params = req.sampling_params(state.defaults, state.context)
    timer = state.metrics.timer()
    try:
        handle = await state.engine.submit_prompt(req.prompt, params)
    except BaseException:
        timer.finish()
        raise
    if req.stream:
        return StreamingResponse(_stream(state, req, handle, timer), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    try:
        await drain(request, handle, timer)
    finally:
        handle.cancel()
        out = state.finish(handle, timer)
    tok = state.engine.llm.tokenizer
    choices = [{"index": c.index, "text": c.text, "finish_reason": c.finish_reason,
                "logprobs": None if req.logprobs is None else
                completion_logprobs(tok, c.logprobs or [], c.token_ids, req.logprobs)} for c in out.outputs]
    return JSONResponse({"id": new_id("cmpl"), "object": "text_completion", "created": now(),
                         "model": state.model_name, "choices": choices, "usage": out.usage})


async def _stream(state: ServerState, req: CompletionRequest, handle: Handle, timer: RequestTimer) -> AsyncIterator[str]:
    head = {"id": new_id("cmpl"), "object": "text_completion", "created": now(), "model": state.model_name}
    seqs = handle.request.seqs
    sent = [0 for _ in seqs]  # logprob entries already sent, per sample
    offsets = [0 for _ in seqs]  # characters already sent, per sample (text_offset)
    try:
        async for d in deltas(handle, timer):
            choice = {"index": d.index, "text": d.text, "logprobs": None, "finish_reason": d.finish_reason}
            if req.logprobs is not None:
                seq = seqs[d.index]
                end = min(len(seq.output_ids), len(seq.logprobs))
                choice["logprobs"] = completion_logprobs(state.engine.llm.tokenizer, seq.logprobs[sent[d.index]:end],
                                                         seq.output_ids[sent[d.index]:end], req.logprobs,
                                                         offsets[d.index])
                sent[d.index] = end
            offsets[d.index] += len(d.text)
            yield sse({**head, "choices": [choice]})
        out = state.finish(handle, timer)
        if req.include_usage:
            yield sse({**head, "choices": [], "usage": out.usage})
        yield SSE_DONE
    except GlmvError as e:
        yield sse_error(e)
        yield SSE_DONE
    finally:
        handle.cancel()  # a no-op once finished
        if not timer.done:
            state.finish(handle, timer)
