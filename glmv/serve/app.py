"""The FastAPI application: routes, middleware (API key, body size, metrics) and error handlers.

    app = create_app(LLM(path, limits=MediaLimits.untrusted()), ServerConfig(api_key="secret"))
    uvicorn.run(app, host="127.0.0.1", port=8000)

`glmv serve` passes an EngineProcess instead of an LLM: the engine then runs in its own process.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.middleware.cors import CORSMiddleware

from glmv.engine.async_engine import AsyncEngine
from glmv.engine.engine_process import EngineProcess
from glmv.engine.llm import LLM
from glmv.errors import ConfigError
from glmv.serve.chat import chat_completions
from glmv.serve.completions import completions
from glmv.serve.errors import contained, install_error_handlers
from glmv.serve.gate import Gate
from glmv.serve.images import ImageService, register_image_routes
from glmv.serve.metrics import HttpCounter
from glmv.serve.pooling import embeddings, score
from glmv.serve.state import ServerState

STATIC = Path(__file__).with_name("static")
ROUTES = frozenset({"/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/score", "/v1/models", "/health",
                    "/metrics", "/", "/v1/images/generations", "/v1/images/edits"})


@dataclass(frozen=True)
class ServerConfig:
    served_model_name: str | None = None  # default: the checkpoint directory's name
    api_key: str | None = None  # required as a Bearer token on every route but /health and the page
    max_queue: int = 64  # waiting requests beyond this are refused with 503
    max_batch: int = 16  # sequences decoded together
    media_workers: int = 2  # threads loading and preprocessing media
    max_body_bytes: int = 64 << 20  # request bodies over this are refused (413) before being read
    allowed_origins: tuple[str, ...] = ()  # browser origins allowed to call the API (CORS); "*" for any; none: off


def create_app(llm: LLM | EngineProcess, config: ServerConfig = ServerConfig(),
               images: ImageService | None = None) -> FastAPI:
    """An app serving `llm` (and, with `images`, a GLM-Image model on /v1/images/*). With an LLM, its engine
    thread starts now, in this process (config's max_queue, max_batch and media_workers apply); an EngineProcess
    was started with its own. Either stops when the app shuts down."""
    if isinstance(llm, LLM):
        engine = AsyncEngine(llm, config.max_queue, config.max_batch, config.media_workers)
    else:
        engine = llm
    name = config.served_model_name or engine.info.model_name
    if name in engine.info.adapters:  # `model` must say which of the two it means
        engine.shutdown()
        raise ConfigError(f"the served model name {name!r} is also a LoRA adapter's name: rename one "
                          "(--served-model-name or --lora NAME=PATH)")
    state = ServerState(engine, name)

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        yield
        state.engine.shutdown()
        if images is not None:
            images.shutdown()

    app = FastAPI(title="glmv", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.glmv = state
    install_error_handlers(app)

    @app.post("/v1/chat/completions")
    @contained
    async def chat(request: Request) -> Response:
        return await chat_completions(request, state)

    @app.post("/v1/completions")
    @contained
    async def complete(request: Request) -> Response:
        return await completions(request, state)

    @app.post("/v1/embeddings")
    @contained
    async def embed(request: Request) -> Response:
        return await embeddings(request, state)

    @app.post("/v1/score")
    @contained
    async def score_route(request: Request) -> Response:
        return await score(request, state)

    def model_card(lora: str | None = None) -> dict:
        card = {"id": state.served_name(lora), "object": "model", "created": state.created, "owned_by": "glmv",
                "max_model_len": state.context}
        if lora is not None:  # vLLM's card of a LoRA adapter: its directory, and the base model it adapts
            card.update(root=state.info.adapters[lora], parent=state.model_name)
        return card

    @app.get("/v1/models")
    async def models() -> dict:
        return {"object": "list", "data": [model_card(), *map(model_card, state.adapter_names)]
                + ([images.model_card()] if images is not None else [])}

    @app.get("/v1/models/{model_id:path}")  # a served name may hold a slash ("zai-org/GLM-4.5V")
    async def model(model_id: str) -> dict:
        return model_card(state.lora_for(model_id))

    if images is not None:
        register_image_routes(app, images)

    @app.get("/health")
    async def health() -> JSONResponse:
        alive = state.engine.alive
        return JSONResponse({"status": "ok" if alive else "engine stopped"}, status_code=200 if alive else 503)

    @app.get("/metrics")
    async def metrics() -> PlainTextResponse:
        text = state.metrics.render(await state.engine.stats())
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4")

    @app.get("/")
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    # Outermost first: count every response, then refuse bad keys and big bodies before FastAPI reads them.
    app.add_middleware(Gate, api_key=config.api_key, max_body_bytes=config.max_body_bytes)
    app.add_middleware(HttpCounter, metrics=state.metrics, paths=ROUTES)
    if config.allowed_origins:
        # Outermost of all: a browser's preflight (OPTIONS, no API key) is answered before the key check, and
        # every answer, a 401 included, carries the headers that let the page read it.
        app.add_middleware(CORSMiddleware, allow_origins=list(config.allowed_origins), allow_methods=["*"],
                           allow_headers=["*"])
    return app
