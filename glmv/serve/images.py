"""POST /v1/images/generations and /v1/images/edits (the OpenAI images API) over a GLM-Image ImagePipeline.

    generations  JSON {prompt, n, size "WxH", response_format "b64_json" | "url", stream, ...}
    edits        multipart form with one or more `image` / `image[]` files (the references) and the same fields
    -> {"created", "data": [{"b64_json" | "url"}], "size", "output_format": "png"}

glmv's own fields beside OpenAI's: seed, steps, guidance, temperature, top_p, top_k. `url` is a data URL
(data:image/png;base64,...): the server keeps no files. A request's images are drawn one request at a time on a
worker thread (the prior batches the request's n images on glmv's engine; the DiT is the bulk of the work). The
chat engine's admission rules apply: a full queue is refused at once with 503, n is capped by --max-batch, bad
input is a 400 before anything is queued. With `stream: true` the answer is server-sent events: progress
({"type": "image_generation.progress", "stage": "prior" | "diffusion", "done", "total", "image_index"}) and one
"image_generation.completed" event per image (image_edit.* for edits), then [DONE]. A client that disconnects
cancels its request: it leaves the queue, or stops at the prior's next token or the DiT's next step.
"""

from __future__ import annotations

import asyncio
import base64
import io
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from PIL import Image
from pydantic import BaseModel, ConfigDict

from glmv.engine.async_engine import QueueFullError
from glmv.errors import GlmvError, InputError
from glmv.image.generate import GenerationCancelled
from glmv.image.pipeline import check_request
from glmv.image.sizes import parse_size
from glmv.inputs.limits import MediaLimits
from glmv.inputs.media import load_image
from glmv.serve.errors import ModelNotFoundError, contained, sse_error
from glmv.serve.responses import SSE_DONE, now, sse


class ImageRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    prompt: str
    model: str | None = None
    n: int = 1
    size: str = "1024x1024"
    response_format: Literal["b64_json", "url"] = "b64_json"
    stream: bool = False
    seed: int | None = None
    steps: int = 50
    guidance: float = 1.5
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None


@dataclass
class ImageStats:
    queued: int = 0
    running: int = 0
    completed: int = 0
    cancelled: int = 0
    failed: int = 0


@dataclass
class ImageService:
    """The image pipeline behind the routes: its served name, its queue and the worker that draws."""

    pipe: Any  # glmv.image.pipeline.ImagePipeline
    name: str
    max_queue: int = 64
    max_n: int = 16
    limits: MediaLimits = field(default_factory=MediaLimits.untrusted)
    stats: ImageStats = field(default_factory=ImageStats)
    created: int = field(default_factory=now)

    def __post_init__(self) -> None:
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="glmv-image")
        self.lock = threading.Lock()

    def model_card(self) -> dict:
        return {"id": self.name, "object": "model", "created": self.created, "owned_by": "glmv"}

    def shutdown(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)

    async def run(self, work: Callable[[Callable, Callable[[], bool]], list[Image.Image]],
                  progress: Callable[[str, int, int], None], stop: threading.Event) -> list[Image.Image]:
        """Queue `work(progress, cancelled)` behind the requests before it (QueueFullError when the queue is
        full); `progress` is called on the event loop; setting `stop` cancels the work wherever it is."""
        with self.lock:
            if self.stats.queued + self.stats.running >= self.max_queue:
                raise QueueFullError(f"the server is busy ({self.max_queue} image requests queued); retry shortly")
            self.stats.queued += 1
        loop = asyncio.get_running_loop()

        def report(stage: str, done: int, total: int) -> None:
            loop.call_soon_threadsafe(progress, stage, done, total)

        def job() -> list[Image.Image]:
            with self.lock:
                self.stats.queued -= 1
                self.stats.running += 1
            try:
                if stop.is_set():  # its client left while it waited
                    raise GenerationCancelled("the image request was cancelled before it started")
                return work(report, stop.is_set)
            finally:
                with self.lock:
                    self.stats.running -= 1

        try:
            images = await loop.run_in_executor(self.pool, job)
        except GenerationCancelled:
            self._count("cancelled")
            raise
        except BaseException:
            self._count("failed")
            raise
        self._count("completed")
        return images

    def _count(self, what: str) -> None:
        with self.lock:
            setattr(self.stats, what, getattr(self.stats, what) + 1)


def png_b64(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _item(image: Image.Image, response_format: str) -> dict:
    data = png_b64(image)
    return {"b64_json": data} if response_format == "b64_json" else {"url": "data:image/png;base64," + data}


async def _serve(request: Request, service: ImageService, req: ImageRequest, references: list[Image.Image],
                 kind: str) -> Response:
    """Check, queue, and answer one request (plain JSON, or events when it asks to stream)."""
    if req.model is not None and req.model != service.name:
        raise ModelNotFoundError(f"the model {req.model!r} does not exist; this server draws with {service.name!r}")
    if not 1 <= req.n <= service.max_n:
        raise InputError(f"n must be from 1 to {service.max_n} (this server's --max-batch), got {req.n}")
    height, width = parse_size(req.size)
    check_request(req.steps, req.guidance, req.n, req.seed)
    pipe = service.pipe
    # Everything a request can get wrong fails here, before it is queued: sizes, steps, seed, references, prompt.
    refs = await asyncio.get_running_loop().run_in_executor(None, pipe.references, references)
    pipe.prompt(req.prompt, height, width, refs)
    sampling = dict(temperature=req.temperature, top_p=req.top_p, top_k=req.top_k)

    def work(progress, cancelled) -> list[Image.Image]:
        return pipe.generate(req.prompt, height, width, req.steps, req.guidance, req.seed, refs, req.n,
                             progress=progress, cancelled=cancelled, **sampling)

    stop = threading.Event()
    head = {"created": now(), "size": f"{width}x{height}", "output_format": "png"}
    if req.stream:
        return _event_stream(service, work, stop, req, head, kind)
    watch = asyncio.ensure_future(_disconnect(request, stop))
    try:
        images = await service.run(work, lambda *_: None, stop)
    finally:
        watch.cancel()
    return JSONResponse({**head, "data": [_item(im, req.response_format) for im in images]})


def _event_stream(service: ImageService, work, stop: threading.Event, req: ImageRequest, head: dict,
                  kind: str) -> StreamingResponse:
    queue: asyncio.Queue = asyncio.Queue()
    counter = {"image": 0, "stage": None}

    def progress(stage: str, done: int, total: int) -> None:
        if stage == "diffusion" and counter["stage"] == "diffusion" and done == 1:
            counter["image"] += 1  # the DiT starts the next image
        counter["stage"] = stage
        queue.put_nowait({"type": f"{kind}.progress", "stage": stage, "done": done, "total": total,
                          "image_index": counter["image"] if stage == "diffusion" else None})

    async def events() -> AsyncIterator[str]:
        task = asyncio.ensure_future(service.run(work, progress, stop))
        try:
            while not (task.done() and queue.empty()):
                getter = asyncio.ensure_future(queue.get())
                await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
                if getter.done():
                    yield sse(getter.result())
                else:
                    getter.cancel()
            for k, image in enumerate(task.result()):
                yield sse({"type": f"{kind}.completed", "image_index": k, "created_at": head["created"],
                           "size": head["size"], "output_format": "png", "background": "opaque",
                           "quality": "auto", **_item(image, req.response_format)})
            yield SSE_DONE
        except GlmvError as e:
            yield sse_error(e)
            yield SSE_DONE
        finally:  # the client left (the generator is closed) or the stream ended: stop the work if it runs
            stop.set()

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def _disconnect(request: Request, stop: threading.Event) -> None:
    # The body has been read, so the next message can only be the disconnect.
    while (await request.receive())["type"] != "http.disconnect":
        pass
    stop.set()


async def generations(request: Request, service: ImageService) -> Response:
    req = ImageRequest.model_validate_json(await request.body(), strict=True)
    return await _serve(request, service, req, [], "image_generation")


async def edits(request: Request, service: ImageService) -> Response:
    form = await request.form()
    files = form.getlist("image") + form.getlist("image[]")
    if form.get("mask") is not None:
        raise InputError("mask is not supported: GLM-Image edits the whole image as the prompt says")
    if not files:
        raise InputError("an edit needs at least one image (multipart field 'image' or 'image[]')")
    fields = {k: v for k, v in form.items() if isinstance(v, str)}
    req = ImageRequest.model_validate(fields)  # lax: form fields arrive as text
    blobs = [await f.read() if hasattr(f, "read") else str(f).encode() for f in files]
    loop = asyncio.get_running_loop()
    references = [await loop.run_in_executor(None, load_image, b, service.limits) for b in blobs]
    return await _serve(request, service, req, references, "image_edit")


def register_image_routes(app: FastAPI, service: ImageService) -> None:
    @app.post("/v1/images/generations")
    @contained
    async def generate_route(request: Request) -> Response:
        return await generations(request, service)

    @app.post("/v1/images/edits")
    @contained
    async def edit_route(request: Request) -> Response:
        return await edits(request, service)

    @app.get("/v1/images/stats")
    async def stats() -> dict:
        with service.lock:
            return asdict(service.stats)


def create_image_app(service: ImageService, api_key: str | None = None, max_body_bytes: int = 64 << 20) -> FastAPI:
    """An app that serves images only (`glmv serve --image-model PATH` without --model): the images routes,
    /v1/models, /health, the same API-key and body-size gate and error bodies as the full server."""
    from contextlib import asynccontextmanager

    from glmv.serve.errors import install_error_handlers
    from glmv.serve.gate import Gate

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        yield
        service.shutdown()

    app = FastAPI(title="glmv", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    install_error_handlers(app)
    register_image_routes(app, service)

    @app.get("/v1/models")
    async def models() -> dict:
        return {"object": "list", "data": [service.model_card()]}

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok"}

    app.add_middleware(Gate, api_key=api_key, max_body_bytes=max_body_bytes)
    return app
