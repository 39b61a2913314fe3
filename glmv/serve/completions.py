"""POST /v1/completions: a raw text prompt (no chat template, no media) continued as text."""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import Request
from fastapi.responses import JSONResponse, StreamingResponse

from glmv.engine.async_engine import Handle
from glmv.serve.metrics import RequestTimer
from glmv.serve.protocol import CompletionRequest
from glmv.serve.responses import completion_logprobs, new_id, now
from glmv.serve.state import ServerState, complete, deltas, event_stream, submit


async def completions(request: Request, state: ServerState) -> JSONResponse | StreamingResponse:
    req = CompletionRequest.model_validate_json(await request.body())
    lora = state.lora_for(req.model)
    params = req.sampling_params(state.defaults, state.context)
    handle, timer = await submit(state, state.engine.submit_prompt(req.prompt, params, lora))
    head = {"id": new_id("cmpl"), "object": "text_completion", "created": now(), "model": state.served_name(lora)}
    if req.stream:
        return event_stream(state, handle, timer, head, req.include_usage, _choices(state, req, handle, timer))
    out = await complete(request, state, handle, timer)
    tok = state.info.tokenizer
    choices = [{"index": c.index, "text": c.text, "finish_reason": c.finish_reason,
                "logprobs": None if req.logprobs is None else
                completion_logprobs(tok, c.logprobs or [], c.token_ids, req.logprobs)} for c in out.outputs]
    return JSONResponse({**head, "choices": choices, "usage": out.usage})


async def _choices(state: ServerState, req: CompletionRequest, handle: Handle,
                   timer: RequestTimer) -> AsyncIterator[list[dict]]:
    seqs = handle.request.seqs
    sent = [0 for _ in seqs]  # logprob entries already sent, per sample
    offsets = [0 for _ in seqs]  # characters already sent, per sample (text_offset)
    async for d in deltas(handle, timer):
        choice = {"index": d.index, "text": d.text, "logprobs": None, "finish_reason": d.finish_reason}
        if req.logprobs is not None:
            seq = seqs[d.index]
            end = min(len(seq.output_ids), len(seq.logprobs))
            choice["logprobs"] = completion_logprobs(state.info.tokenizer, seq.logprobs[sent[d.index]:end],
                                                     seq.output_ids[sent[d.index]:end], req.logprobs,
                                                     offsets[d.index])
            sent[d.index] = end
        offsets[d.index] += len(d.text)
        yield [choice]
