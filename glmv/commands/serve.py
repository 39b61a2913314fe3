"""`glmv serve`: the OpenAI-compatible HTTP API and the web chat page for one model."""

from __future__ import annotations

import argparse
import gc
import ipaddress
import logging
import os

from glmv.commands._common import add_lora_args, add_model_args, engine_kwargs, lora_kwargs

log = logging.getLogger(__name__)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "serve", help="serve a model over an OpenAI-compatible HTTP API with a web chat page",
        description="Serve /v1/chat/completions, /v1/completions, /v1/models, /health, /metrics and a chat page "
                    "at /.\n\nexample: glmv serve --model PATH --port 8000 --api-key secret",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_args(p, compile_default=True)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", default=os.environ.get("GLMV_API_KEY"),
                   help="require 'Authorization: Bearer KEY' (default: $GLMV_API_KEY, which keeps it out of ps)")
    p.add_argument("--served-model-name", default=None, help="the model id clients use (default: the directory name)")
    add_lora_args(p, several=True)
    p.add_argument("--max-model-len", type=int, default=None, help="context length (default: the checkpoint's)")
    p.add_argument("--max-queue", type=int, default=64, help="waiting requests before 503 (default 64)")
    p.add_argument("--max-batch", type=int, default=16, help="sequences decoded together (default 16)")
    p.add_argument("--media-workers", type=int, default=2, help="threads loading media (default 2)")
    p.add_argument("--engine-process", action=argparse.BooleanOptionalAction, default=True,
                   help="run the engine in its own process, beside the HTTP server's, so that neither waits for the "
                        "other's Python (default: on; --no-engine-process keeps both in one process). Without "
                        "--threads, the engine then leaves one of the free cores to the HTTP server")
    p.add_argument("--allow-private-urls", action="store_true",
                   help="let media URLs reach private, loopback and link-local addresses (refused by default)")
    p.add_argument("--allowed-local-media-path", action="append", default=[], metavar="DIR",
                   help="allow file:// media inside DIR (repeatable; default: no local files)")
    p.add_argument("--media-timeout", type=float, default=10.0, help="seconds per media download (default 10)")
    p.add_argument("--max-images", type=int, default=32, help="images per request (default 32)")
    p.add_argument("--max-videos", type=int, default=4, help="videos per request (default 4)")
    p.add_argument("--max-request-mb", type=float, default=64.0, help="request body limit in MiB (default 64)")
    p.add_argument("--image-model", default=None, metavar="PATH",
                   help="also serve a GLM-Image checkpoint on /v1/images/generations and /v1/images/edits; without "
                        "--model, serve images only (pip install 'glmv[image]')")
    p.add_argument("--image-dtype", default=None, help="bfloat16 or float32 for the image model (default: bfloat16 "
                                                       "on a GPU, else float32)")
    p.add_argument("--allowed-origins", action="append", default=[], metavar="ORIGIN",
                   help="let web pages from ORIGIN (e.g. https://app.example.com, or * for any) call the API from a "
                        "browser: CORS (repeatable; default: off)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import uvicorn

    import torch

    from glmv.engine.engine_process import EngineProcess
    from glmv.engine.llm import LLM
    from glmv.inputs.limits import MediaLimits
    from glmv.serve.app import ServerConfig, create_app

    if not args.api_key and not _is_loopback(args.host):
        log.warning("serving on %s without --api-key: anyone who can reach it can use it", args.host)
    limits = MediaLimits.untrusted(allow_private_networks=args.allow_private_urls,
                                   allowed_dirs=tuple(args.allowed_local_media_path), timeout_s=args.media_timeout,
                                   max_images=args.max_images, max_videos=args.max_videos)
    images = _image_service(args, limits) if args.image_model else None
    if images is not None and args.model is None:  # images only
        from glmv.serve.images import create_image_app

        app = create_image_app(images, args.api_key, int(args.max_request_mb * (1 << 20)))
        print(f"glmv: serving images with {images.name!r} on http://{args.host}:{args.port}", flush=True)
        uvicorn.run(app, host=args.host, port=args.port, timeout_graceful_shutdown=5,
                    log_level=logging.getLevelName(log.getEffectiveLevel()).lower())
        return 0
    llm_kwargs = dict(model=args.model, dtype=args.dtype, device=args.device, limits=limits,
                      max_model_len=args.max_model_len, **engine_kwargs(args), **lora_kwargs(args))
    if args.engine_process:
        # An OpenMP thread waiting for work spins on its core: on the HTTP server's core, it takes the time the
        # server needs for its streams (measured on 2 cores: 0.6x the engine's throughput, 0.9-1x with the core left
        # free; docs/serve.md).
        threads = args.threads or max(1, torch.get_num_threads() - 1)
        llm = EngineProcess(llm_kwargs, args.max_queue, args.max_batch, args.media_workers, threads)
    else:
        llm = LLM(**llm_kwargs)
    config = ServerConfig(served_model_name=args.served_model_name, api_key=args.api_key, max_queue=args.max_queue,
                          max_batch=args.max_batch, media_workers=args.media_workers,
                          max_body_bytes=int(args.max_request_mb * (1 << 20)),
                          allowed_origins=tuple(args.allowed_origins))
    app = create_app(llm, config, images)
    gc.freeze()  # what start-up made lives as long as the server: keep full collections from walking it again
    print(f"glmv: serving {app.state.glmv.model_name!r} on http://{args.host}:{args.port}", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level=logging.getLevelName(log.getEffectiveLevel()).lower(),
                timeout_graceful_shutdown=5)
    gc.unfreeze()  # collectable again at exit (nanobind, in compiled code, reports what is left as leaks)
    return 0


def _image_service(args: argparse.Namespace, limits):
    from pathlib import Path

    from glmv.image.pipeline import ImagePipeline
    from glmv.serve.images import ImageService

    pipe = ImagePipeline(args.image_model, device=args.device, dtype=args.image_dtype)
    return ImageService(pipe, Path(args.image_model).name, args.max_queue, args.max_batch, limits)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
