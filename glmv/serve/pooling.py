"""POST /v1/embeddings (OpenAI's shape; vLLM's `messages` form for images and videos) and POST /v1/score
(vLLM's shape): the pooled hidden state / the likelihood of candidates, computed by LLM's Pooler in the engine's
pooling thread (the model's plain forward, beside the engine thread's decoding: AsyncEngine.embed / score)."""

from __future__ import annotations

import base64

import numpy as np
from fastapi import Request
from fastapi.responses import JSONResponse

from glmv.errors import InputError
from glmv.serve.protocol import EmbeddingRequest, ScoreRequest
from glmv.serve.responses import new_id, now
from glmv.serve.state import ServerState


async def embeddings(request: Request, state: ServerState) -> JSONResponse:
    req = EmbeddingRequest.model_validate_json(await request.body())
    lora = state.lora_for(req.model)
    inputs = req.inputs()
    size = state.info.hidden_size
    if req.dimensions is not None and req.dimensions != size:
        raise InputError(f"dimensions must be {size} (this model's embeddings cannot be shortened) or omitted")
    vectors, tokens = await state.engine.embed(inputs, req.add_generation_prompt, lora)
    data = [{"object": "embedding", "index": i, "embedding": _encode(v, req.encoding_format)}
            for i, v in enumerate(vectors)]
    return JSONResponse({"object": "list", "data": data, "model": state.served_name(lora),
                         "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})


async def score(request: Request, state: ServerState) -> JSONResponse:
    req = ScoreRequest.model_validate_json(await request.body())
    lora = state.lora_for(req.model)
    scores, tokens = await state.engine.score(req.pairs(), lora)
    data = [{"index": i, "object": "score", "score": s} for i, s in enumerate(scores)]
    return JSONResponse({"id": new_id("score"), "object": "list", "created": now(), "model": state.served_name(lora),
                         "data": data, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})


def _encode(vector: np.ndarray, encoding_format: str) -> list[float] | str:
    """float: a JSON list; base64: the little-endian float32 bytes (what the openai client asks for by default)."""
    if encoding_format == "base64":
        return base64.b64encode(vector.astype("<f4").tobytes()).decode()
    return vector.tolist()
