"""POST /v1/chat/completions: messages with images/videos in, a message (or SSE chunks) with the answer, the
model's reasoning (`reasoning_content`) and its tool calls out."""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import Request
from fastapi.responses import JSONResponse, StreamingResponse

from glmv.engine.async_engine import Handle
from glmv.engine.outputs import opens_think
from glmv.engine.tool_calls import AnswerStreamParser
from glmv.engine.tool_choice import with_tool_grammar
from glmv.serve import json_mode
from glmv.serve.metrics import RequestTimer
from glmv.serve.protocol import ChatCompletionRequest
from glmv.serve.responses import chat_finish_reason, chat_logprobs, chat_message, new_id, now, tool_call_deltas
from glmv.serve.state import ServerState, complete, deltas, event_stream, submit


async def chat_completions(request: Request, state: ServerState) -> JSONResponse | StreamingResponse:
    req = ChatCompletionRequest.model_validate_json(await request.body())
    lora = state.lora_for(req.model)
    params = req.sampling_params(state.defaults, state.context)
    thinking, template_kwargs = req.template_kwargs()
    tools, tool_grammar = req.tool_plan(state.info.tokenizer.added_tokens)
    params = with_tool_grammar(params, tool_grammar)
    handle, timer = await submit(state, state.engine.submit(req.messages, params, thinking, tools, lora,
                                                            **template_kwargs))
    head = {"id": new_id("chatcmpl"), "object": "chat.completion", "created": now(), "model": state.served_name(lora)}
    if req.stream:
        chunk_head = {**head, "object": "chat.completion.chunk"}
        return event_stream(state, handle, timer, chunk_head, req.include_usage, _choices(state, req, handle, timer))
    out = await complete(request, state, handle, timer)
    choices = []
    for c in out.outputs:
        choice = {"index": c.index, "message": chat_message(c), "logprobs": None,
                  "finish_reason": chat_finish_reason(c.finish_reason, bool(c.tool_calls))}
        if params.logprobs is not None:
            choice["logprobs"] = chat_logprobs(state.info.tokenizer, c.logprobs or [], c.token_ids,
                                               params.logprobs)
        if json_mode.wants_json(req.response_format):
            choice["json_valid"] = json_mode.is_json(c.content)
        choices.append(choice)
    return JSONResponse({**head, "choices": choices, "usage": out.usage})


async def _choices(state: ServerState, req: ChatCompletionRequest, handle: Handle,
                   timer: RequestTimer) -> AsyncIterator[list[dict]]:
    """The choices of each chunk: the role first, then reasoning and content deltas as they are parsed, each
    tool call once its block is complete, and the finish reason with the last."""
    seqs = handle.request.seqs
    in_think = opens_think(handle.request.prompt)
    parsers = [AnswerStreamParser(in_think, handle.request.tools) for _ in seqs]
    contents = ["" for _ in seqs]  # for the json_valid check of each sample
    calls = [0 for _ in seqs]  # tool calls sent, per sample: the next one's index
    sent = [0 for _ in seqs]  # logprob entries already sent, per sample
    top = seqs[0].params.logprobs
    wants_json = json_mode.wants_json(req.response_format)
    yield [{"index": k, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}
           for k in range(len(seqs))]
    async for d in deltas(handle, timer):
        k, final = d.index, d.finish_reason is not None
        reasoning, content, new_calls = parsers[k].feed(d.text, final)
        contents[k] += content
        pieces = [{key: text for key, text in (("reasoning_content", reasoning), ("content", content)) if text}]
        for call in new_calls:
            pieces += tool_call_deltas(call, calls[k])
            calls[k] += 1
        pieces = [p for p in pieces if p] or ([{}] if final else [])
        if not pieces:
            continue  # a tag, half a stop string or an unfinished tool call held back: nothing to show yet
        choices = [{"index": k, "delta": p, "logprobs": None, "finish_reason": None} for p in pieces]
        if top is not None:
            seq = seqs[k]
            # The engine thread may already be a token ahead: send what exists, the next chunk the rest.
            end = min(len(seq.output_ids), len(seq.logprobs))
            choices[0]["logprobs"] = chat_logprobs(state.info.tokenizer, seq.logprobs[sent[k]:end],
                                                   seq.output_ids[sent[k]:end], top)
            sent[k] = end
        if final:
            choices[-1]["finish_reason"] = chat_finish_reason(d.finish_reason, calls[k] > 0)
            if wants_json:
                choices[-1]["json_valid"] = json_mode.is_json(contents[k])
        for choice in choices:
            yield [choice]
