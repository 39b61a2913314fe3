"""POST /v1/chat/completions: messages with images/videos in, a message (or SSE chunks) with the answer and the
model's reasoning (`reasoning_content`) out."""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import Request
from fastapi.responses import JSONResponse, StreamingResponse

from glmv.engine.async_engine import Handle
from glmv.engine.outputs import ReasoningStreamParser
from glmv.serve import json_mode
from glmv.serve.metrics import RequestTimer
from glmv.serve.protocol import ChatCompletionRequest
from glmv.serve.responses import chat_logprobs, chat_message, new_id, now
from glmv.serve.state import ServerState, complete, deltas, event_stream, submit


async def chat_completions(request: Request, state: ServerState) -> JSONResponse | StreamingResponse:
    req = ChatCompletionRequest.model_validate_json(await request.body())
    state.check_model(req.model)
    params = req.sampling_params(state.defaults, state.context)
    thinking, template_kwargs = req.template_kwargs()
    messages = json_mode.with_instruction(req.messages, req.response_format)
    handle, timer = await submit(state, state.engine.submit(messages, params, thinking, req.tools, **template_kwargs))
    head = {"id": new_id("chatcmpl"), "object": "chat.completion", "created": now(), "model": state.model_name}
    if req.stream:
        chunk_head = {**head, "object": "chat.completion.chunk"}
        return event_stream(state, handle, timer, chunk_head, req.include_usage, _choices(state, req, handle, timer))
    out = await complete(request, state, handle, timer)
    choices = []
    for c in out.outputs:
        choice = {"index": c.index, "message": chat_message(c), "logprobs": None, "finish_reason": c.finish_reason}
        if params.logprobs is not None:
            choice["logprobs"] = chat_logprobs(state.engine.llm.tokenizer, c.logprobs or [], c.token_ids,
                                               params.logprobs)
        if json_mode.instruction(req.response_format):
            choice["json_valid"] = json_mode.is_json(choice["message"]["content"])
        choices.append(choice)
    return JSONResponse({**head, "choices": choices, "usage": out.usage})


async def _choices(state: ServerState, req: ChatCompletionRequest, handle: Handle,
                   timer: RequestTimer) -> AsyncIterator[list[dict]]:
    """The choices of each chunk: the role first, then reasoning and content deltas as they are parsed."""
    seqs = handle.request.seqs
    parsers = [ReasoningStreamParser() for _ in seqs]
    contents = ["" for _ in seqs]  # for the json_valid check of each sample
    sent = [0 for _ in seqs]  # logprob entries already sent, per sample
    top = seqs[0].params.logprobs
    wants_json = json_mode.instruction(req.response_format) is not None
    yield [{"index": k, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}
           for k in range(len(seqs))]
    async for d in deltas(handle, timer):
        reasoning, content = parsers[d.index].feed(d.text, final=d.finish_reason is not None)
        contents[d.index] += content
        delta = {}
        if reasoning:
            delta["reasoning_content"] = reasoning
        if content:
            delta["content"] = content
        if not delta and d.finish_reason is None:
            continue  # a tag or half a stop string held back: nothing to show yet
        choice = {"index": d.index, "delta": delta, "logprobs": None, "finish_reason": d.finish_reason}
        if top is not None:
            seq = seqs[d.index]
            # The engine thread may already be a token ahead: send what exists, the next chunk the rest.
            end = min(len(seq.output_ids), len(seq.logprobs))
            choice["logprobs"] = chat_logprobs(state.engine.llm.tokenizer, seq.logprobs[sent[d.index]:end],
                                               seq.output_ids[sent[d.index]:end], top)
            sent[d.index] = end
        if wants_json and d.finish_reason is not None:
            choice["json_valid"] = json_mode.is_json(contents[d.index])
        yield [choice]
