"""The server preprocesses images off the event loop: AsyncEngine.submit prepares a request (load, resize,
normalise, patchify) in its media pool, so a large image never stalls the other clients' streams."""

from __future__ import annotations

import asyncio
import threading

from PIL import Image

import glmv.inputs.processor as processor_module
from glmv import LLM, SamplingParams
from glmv.engine.async_engine import AsyncEngine
from glmv.testing.tiny_checkpoint import make_tiny_model_dir


def test_images_are_processed_in_the_media_pool_not_on_the_event_loop(tmp_path, monkeypatch):
    seen: list[threading.Thread] = []
    real = processor_module.process_image

    def recording(*args, **kwargs):
        seen.append(threading.current_thread())
        return real(*args, **kwargs)

    monkeypatch.setattr(processor_module, "process_image", recording)
    llm = LLM(make_tiny_model_dir(tmp_path), progress=False)
    image = Image.new("RGB", (64, 48), (200, 30, 90))

    async def main() -> threading.Thread:
        engine = AsyncEngine(llm)
        try:
            handle = await engine.submit([{"role": "user", "content": [{"type": "image", "image": image}, "hi"]}],
                                         SamplingParams(temperature=0, max_tokens=2))
            async for _ in handle:
                pass
            return threading.current_thread()
        finally:
            engine.shutdown()

    loop_thread = asyncio.run(main())
    assert seen, "the image was never processed"
    assert all(t is not loop_thread and t.name.startswith("glmv-media") for t in seen), [t.name for t in seen]


def test_the_engine_warms_the_image_kernels_in_the_media_pool(tmp_path, monkeypatch):
    """Numba compiles (or loads) the image kernels at start-up, off the engine and event-loop threads, with the
    checkpoint's processor settings: the first request's image does not wait for them."""
    import glmv.engine.async_engine as async_engine_module

    warmed: list[tuple[str, object]] = []
    monkeypatch.setattr(async_engine_module, "warm_up_images",
                        lambda cfg: warmed.append((threading.current_thread().name, cfg)))
    llm = LLM(make_tiny_model_dir(tmp_path), progress=False)
    engine = AsyncEngine(llm)
    engine.pool.shutdown(wait=True)  # the warm-up has run
    engine.shutdown()
    assert len(warmed) == 1
    thread, cfg = warmed[0]
    assert thread.startswith("glmv-media") and cfg is llm.processor.image_config
