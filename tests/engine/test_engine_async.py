"""The shared engine loop: concurrent requests batched together give the same text as alone; cancellation
frees the rows; a full queue is refused at once."""

from __future__ import annotations

import asyncio

import pytest
from PIL import Image

from glmv import LLM, SamplingParams
from glmv.engine.async_engine import AsyncEngine, QueueFullError, _put_all
from glmv.testing.tiny_checkpoint import make_tiny_model_dir


@pytest.fixture(scope="module")
def llm(tmp_path_factory):
    return LLM(make_tiny_model_dir(tmp_path_factory.mktemp("async")), progress=False)


def conv(i: int) -> list[dict]:
    parts = [{"type": "text", "text": f"Question number {i}: " + "what " * i}]
    if i % 2:
        parts.insert(0, {"type": "image", "image": Image.new("RGB", (40 + 10 * i, 60), (20 * i, 100, 50))})
    return [{"role": "user", "content": parts}]


async def collect(handle) -> str:
    return "".join([d.text async for d in handle])


def test_concurrent_requests_equal_running_alone_and_cancel_frees_rows(llm):
    params = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True)
    alone = [llm.chat(conv(i), params)[0].outputs[0].text for i in range(6)]

    async def main():
        engine = AsyncEngine(llm, max_batch=4)
        try:
            handles = await asyncio.gather(*(engine.submit(conv(i), params) for i in range(6)))
            victim = handles[2]

            async def cancel_soon():
                async for d in victim:
                    victim.cancel()  # after its first delta
                return victim

            texts = await asyncio.gather(*(collect(h) for i, h in enumerate(handles) if i != 2), cancel_soon())
            return texts[:-1], engine.output(victim), engine
        finally:
            pass

    texts, cancelled, engine = asyncio.run(main())
    try:
        assert texts == [alone[i] for i in range(6) if i != 2]
        assert cancelled.outputs[0].finish_reason == "abort" and len(cancelled.outputs[0].token_ids) < 12
        assert engine.running == 0 and engine.queue_depth == 0
    finally:
        engine.shutdown()


def test_full_queue_is_refused_immediately(llm):
    async def main():
        engine = AsyncEngine(llm, max_queue=0)
        try:
            with pytest.raises(QueueFullError, match="busy"):
                await engine.submit(conv(1), SamplingParams(max_tokens=2))
        finally:
            engine.shutdown()

    asyncio.run(main())


def test_one_wake_up_of_the_event_loop_per_step(llm):
    """Deltas of all requests reach the event loop together, once per engine step, not once per token each."""
    params = SamplingParams(temperature=0, max_tokens=8, ignore_eos=True)

    async def main():
        loop = asyncio.get_running_loop()
        calls, steps = [], []
        original = loop.call_soon_threadsafe
        loop.call_soon_threadsafe = lambda *args: (calls.append(args[0]), original(*args))[1]
        engine = AsyncEngine(llm, max_batch=4)
        step = engine.llm.engine.step
        engine.llm.engine.step = lambda: (steps.append(1), step())[1]
        try:
            handles = [await engine.submit(conv(i), params) for i in (0, 2)]
            texts = await asyncio.gather(*(collect(h) for h in handles))
        finally:
            engine.shutdown()
            engine.llm.engine.step = step
        return texts, sum(c is _put_all for c in calls), len(steps)  # the rest: run_in_executor's own

    texts, wake_ups, steps = asyncio.run(main())
    assert all(texts) and 0 < wake_ups <= steps < 16  # per token per stream: 2 x 8 = 16 or more


def test_a_reader_behind_the_engine_gets_what_waits_in_one_delta():
    """Deltas already queued for the same sample join the one in hand (a busy event loop writes fewer chunks);
    another sample's delta, the end, or an error after them are kept, in order."""
    from types import SimpleNamespace

    from glmv.engine.async_engine import Handle
    from glmv.engine.llm import StreamDelta
    from glmv.errors import InputError

    async def read(items: list) -> list:
        handle = Handle(SimpleNamespace(seqs=[None, None]), asyncio.get_running_loop())
        for item in items:
            handle.queue.put_nowait(item)
        got = []
        try:
            async for d in handle:
                got.append((d.index, d.text, d.finish_reason))
        except InputError as e:
            got.append(str(e))
        return got

    d = lambda i, text, reason=None: StreamDelta(0, i, text, reason)  # noqa: E731
    assert asyncio.run(read([d(0, "a"), d(0, "b"), d(1, "x"), d(0, "c"), d(0, "d", "stop"), d(0, "e"), None])) == [
        (0, "ab", None), (1, "x", None), (0, "cd", "stop"), (0, "e", None)]
    assert asyncio.run(read([d(0, "a"), d(0, "b"), InputError("bad"), d(0, "never")])) == [(0, "ab", None), "bad"]
