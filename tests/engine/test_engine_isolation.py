"""One request never hurts another inside the shared engine loop: a sample count over the batch size is refused,
one that fits is admitted (over several steps if need be), and a request that raises inside a batched prefill
or sampling step fails alone while the others finish with the text they get alone."""

from __future__ import annotations

import asyncio
import sys
import threading

import pytest
from PIL import Image

from glmv import LLM, SamplingParams
from glmv.engine.async_engine import AsyncEngine
from glmv.errors import GlmvError, InputError
from glmv.testing.tiny_checkpoint import make_tiny_model_dir

GREEDY = SamplingParams(temperature=0, max_tokens=6, ignore_eos=True)


@pytest.fixture(scope="module")
def llm(tmp_path_factory):
    return LLM(make_tiny_model_dir(tmp_path_factory.mktemp("isolation")), progress=False)


def conv(i: int, image: bool = False) -> list[dict]:
    parts = [{"type": "text", "text": f"Innocent question {i}"}]
    if image:
        parts.insert(0, {"type": "image", "image": Image.new("RGB", (48, 56), (30 * i, 90, 40))})
    return [{"role": "user", "content": parts}]


async def texts(handle) -> list[str]:
    out: dict[int, str] = {}
    async for d in handle:
        out[d.index] = out.get(d.index, "") + d.text
    return [out[k] for k in sorted(out)]


async def outcome(handle) -> list[str] | GlmvError:
    try:
        return await texts(handle)
    except GlmvError as e:
        return e


def idle(engine: AsyncEngine) -> bool:
    """The engine thread is blocked waiting for work (not spinning)."""
    frame = sys._current_frames().get(engine.thread.ident)
    while frame is not None:
        if frame.f_code.co_name == "wait" and frame.f_code.co_filename.endswith("threading.py"):
            return True
        frame = frame.f_back
    return False


def run(llm, max_batch: int, body):
    async def main():
        engine = AsyncEngine(llm, max_batch=max_batch)
        try:
            return await body(engine), engine
        finally:
            engine.shutdown()
    return asyncio.run(main())


def test_n_over_the_batch_is_refused_and_the_engine_sleeps(llm):
    alone = llm.chat(conv(0), GREEDY)[0].outputs[0].text

    async def body(engine):
        for n in (5, 1000):
            with pytest.raises(InputError, match=r"n is \d+.*n <= 4"):
                await engine.submit(conv(0), SamplingParams(n=n, temperature=0, max_tokens=4))
        out = await texts(await engine.submit(conv(0), GREEDY))
        for _ in range(200):  # the thread reaches its wait at once; polled, never timed
            if idle(engine) and engine.queue_depth == 0:
                break
            await asyncio.sleep(0.05)
        return out, idle(engine)

    (out, slept), _ = run(llm, 4, body)
    assert out == [alone] and slept


def test_samples_join_over_several_steps_when_the_batch_is_partly_full(llm):
    """n = 3 with max_batch 4 while another n = 3 runs: it joins as rows free up, nobody waits forever."""
    params = SamplingParams(n=3, temperature=0, max_tokens=5, ignore_eos=True)
    alone = [llm.chat(conv(i), params)[0].outputs[0].text for i in range(3)]

    async def body(engine):
        handles = [await engine.submit(conv(i), params) for i in range(3)]
        return await asyncio.gather(*(texts(h) for h in handles))

    got, engine = run(llm, 4, body)
    assert got == [[a] * 3 for a in alone]
    assert engine.running == 0 and engine.queue_depth == 0


def gated(engine: AsyncEngine, monkeypatch) -> threading.Event:
    """Hold the engine thread before it takes the first submitted requests, so that all requests submitted
    before `open.set()` join the engine together and run in one batch."""
    opened = threading.Event()
    admit = engine._admit

    def wait_then_admit():
        opened.wait()
        admit()

    monkeypatch.setattr(engine, "_admit", wait_then_admit)
    with engine.wake:  # wake the thread (idle in its first _admit) so that it picks up the gated one
        engine.wake.notify()
    return opened


def test_a_request_that_breaks_sampling_fails_alone(llm, monkeypatch):
    """A parameter that slipped past validation (top_k over int64) raises in the batched sampler: only its
    request fails, with a message that hides the internal error; the others get their text."""
    alone = [llm.chat(conv(i, image=i == 1), GREEDY)[0].outputs[0].text for i in range(3)]
    bad = SamplingParams(temperature=0.7, max_tokens=6, top_k=5)
    bad.top_k = 2**64  # past __post_init__'s check, as a bug elsewhere might let it

    async def body(engine):
        opened = gated(engine, monkeypatch)
        handles = [await engine.submit(conv(0), bad)]
        handles += [await engine.submit(conv(i, image=i == 1), GREEDY) for i in range(3)]
        opened.set()
        return await asyncio.gather(*(outcome(h) for h in handles))

    (failed, *innocent), engine = run(llm, 8, body)
    assert innocent == [[a] for a in alone]
    assert isinstance(failed, GlmvError) and "internal error" in str(failed) and "Overflow" not in str(failed)
    assert engine.running == 0


def test_a_request_that_breaks_the_forward_fails_alone(llm, monkeypatch):
    """A sequence whose forward raises (simulated: the runner refuses any batch holding its marker prompt) in a
    batch with others: the engine reruns the batch sequence by sequence and only that request fails."""
    alone = [llm.chat(conv(i, image=i == 1), GREEDY)[0].outputs[0].text for i in range(3)]
    marker = [7, 7, 7, 7, 7]
    forward = llm.engine.runner.forward
    batched_failures = []

    def faulty(work):
        if any(seq.prompt_ids == marker for seq, _ in work):
            batched_failures.append(len(work))
            raise RuntimeError("simulated fault in one sequence")
        return forward(work)

    async def body(engine):
        monkeypatch.setattr(engine.llm.engine.runner, "forward", faulty)
        opened = gated(engine, monkeypatch)
        good = [await engine.submit(conv(i, image=i == 1), GREEDY) for i in range(3)]
        evil = await engine.submit_prompt(marker, GREEDY)
        opened.set()
        return await asyncio.gather(*(outcome(h) for h in [evil, *good]))

    (failed, *innocent), engine = run(llm, 8, body)
    assert innocent == [[a] for a in alone]
    assert isinstance(failed, GlmvError) and "simulated" not in str(failed)
    assert max(batched_failures) > 1  # it did fail inside a batch, and was isolated
    assert engine.running == 0


def test_placeholders_that_do_not_match_the_media_are_refused_before_joining(llm):
    image_token = llm.processor.media_tokens.image

    async def body(engine):
        with pytest.raises(InputError, match="placeholder"):
            await engine.submit_prompt([image_token] * 3 + [5, 6], GREEDY)
        return engine.queue_depth

    depth, _ = run(llm, 4, body)
    assert depth == 0


def test_when_every_row_breaks_sampling_each_fails_alone(llm):
    bad = SamplingParams(temperature=0.7, max_tokens=4, top_k=5)
    bad.top_k = 2**64
    for request in llm.prepare_chat([conv(0), conv(1)], bad):
        llm.engine.add(request.seqs[0])
    while llm.engine.has_work():
        llm.engine.step()
    failed = llm.engine.take_failed()
    assert len(failed) == 2 and all(s.error is not None and s.finish_reason == "abort" for s in failed)
    assert llm.engine.blocks.num_free == llm.engine.kv.num_blocks
