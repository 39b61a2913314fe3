"""POST /v1/embeddings (OpenAI's shape; vLLM's `messages` form for images and videos) and POST /v1/score
(vLLM's shape): the pooled hidden state / the likelihood of candidates, computed by LLM's Pooler in one worker
thread (the model's plain forward, beside the engine thread's decoding)."""

from __future__ import annotations

import asyncio
import base64

import numpy as np
from fastapi import Request
from fastapi.responses import JSONResponse

from glmv.engine.async_engine import QueueFullError
from glmv.errors import InputError
from glmv.lora.serving import lora_scope
from glmv.serve.protocol import EmbeddingRequest, ScoreRequest
from glmv.serve.responses import new_id, now
from glmv.serve.state import ServerState


async def embeddings(request: Request, state: ServerState) -> JSONResponse:
    req = EmbeddingRequest.model_validate_json(await request.body())
    lora = state.lora_for(req.model)
    inputs = req.inputs()
    pooler = state.engine.llm.pooler
    size = state.engine.llm.model.config.text.hidden_size
    if req.dimensions is not None and req.dimensions != size:
        raise InputError(f"dimensions must be {size} (this model's embeddings cannot be shortened) or omitted")

    def work():
        rows = [pooler.row(x, req.add_generation_prompt) for x in inputs]
        with lora_scope(state.engine.llm.model, lora):
            return rows, pooler.embed(rows)

    rows, vectors = await _in_pool(state, work)
    data = [{"object": "embedding", "index": i, "embedding": _encode(v.numpy(), req.encoding_format)}
            for i, v in enumerate(vectors)]
    tokens = sum(len(r.ids) for r in rows)
    return JSONResponse({"object": "list", "data": data, "model": state.served_name(lora),
                         "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})


async def score(request: Request, state: ServerState) -> JSONResponse:
    req = ScoreRequest.model_validate_json(await request.body())
    lora = state.lora_for(req.model)
    pairs = req.pairs()
    pooler = state.engine.llm.pooler

    def work():
        scores, tokens = [], 0
        for query, candidates in pairs:
            rows, prefix_len = pooler.score_rows(query, candidates)
            with lora_scope(state.engine.llm.model, lora):
                scores += pooler.score(rows, prefix_len)
            tokens += sum(len(r.ids) for r in rows)
        return scores, tokens

    scores, tokens = await _in_pool(state, work)
    data = [{"index": i, "object": "score", "score": s} for i, s in enumerate(scores)]
    return JSONResponse({"id": new_id("score"), "object": "list", "created": now(), "model": state.served_name(lora),
                         "data": data, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})


async def _in_pool(state: ServerState, work):
    """Run `work` in the pooling thread; more than max_queue requests waiting for it is a 503."""
    if state.pooling_waiting >= state.engine.max_queue:
        raise QueueFullError(f"the server is busy ({state.pooling_waiting} embedding/score requests waiting); "
                             "retry shortly")
    state.pooling_waiting += 1
    try:
        return await asyncio.get_running_loop().run_in_executor(state.pooling, work)
    finally:
        state.pooling_waiting -= 1


def _encode(vector: np.ndarray, encoding_format: str) -> list[float] | str:
    """float: a JSON list; base64: the little-endian float32 bytes (what the openai client asks for by default)."""
    if encoding_format == "base64":
        return base64.b64encode(vector.astype("<f4").tobytes()).decode()
    return vector.tolist()
