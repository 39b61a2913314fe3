"""The engine in its own process (EngineProcess, what `glmv serve` runs) answers as the engine in this process
(AsyncEngine) does: the same streamed text, token ids, logprobs, outputs, embeddings, scores and errors; a
cancelled request ends with "abort"; a dead engine process fails what waits on it instead of hanging."""

from __future__ import annotations

import asyncio
import os
import signal

import numpy as np
import pytest
import torch
from PIL import Image

from glmv import LLM, SamplingParams
from glmv.engine.async_engine import AsyncEngine
from glmv.engine.engine_process import EngineProcess, EngineStoppedError
from glmv.errors import ConfigError, ContextLengthError, InputError
from glmv.testing.tiny_checkpoint import make_tiny_model_dir


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_tiny_model_dir(tmp_path_factory.mktemp("engine-process") / "tiny")


@pytest.fixture(scope="module")
def llm(model_dir):
    return LLM(model_dir, progress=False)


@pytest.fixture(scope="module")
def remote(model_dir):
    # this process's thread count: the same reductions, so the same bits for the same batch
    engine = EngineProcess({"model": model_dir, "progress": False}, max_batch=4, threads=torch.get_num_threads())
    yield engine
    engine.shutdown()


def conv(i: int) -> list[dict]:
    parts = [{"type": "text", "text": f"Question {i}: " + "which colour " * i}]
    if i % 2:
        parts.insert(0, {"type": "image", "image": Image.new("RGB", (48 + 8 * i, 56), (30 * i, 90, 60))})
    return [{"role": "user", "content": parts}]


async def stream(engine, messages, params) -> tuple[list[str], object]:
    """Each sample's streamed text, and the request's output."""
    handle = await engine.submit(messages, params)
    texts = ["" for _ in range(params.n)]
    async for d in handle:
        texts[d.index] += d.text
    return texts, handle, engine.output(handle)


def run_both(llm, remote, coro):
    async def main():
        local = AsyncEngine(llm, max_batch=4)
        try:
            return await coro(local), await coro(remote)
        finally:
            local.shutdown()
    return asyncio.run(main())


def test_streams_outputs_and_logprobs_equal_the_engine_in_this_process(llm, remote):
    params = SamplingParams(temperature=0, max_tokens=10, ignore_eos=True, logprobs=2)
    sampled = SamplingParams(temperature=1.0, seed=7, n=2, max_tokens=6, ignore_eos=True)

    async def requests(engine):
        greedy = await asyncio.gather(*(stream(engine, conv(i), params) for i in range(4)))
        return greedy, await stream(engine, conv(5), sampled)

    (local, local_n), (remote_greedy, remote_n) = run_both(llm, remote, requests)
    for (texts, _, out), (r_texts, r_handle, r_out) in zip(local, remote_greedy):
        assert r_texts == texts and r_texts[0] == out.outputs[0].text
        assert [c.token_ids for c in r_out.outputs] == [c.token_ids for c in out.outputs]
        # (the same tokens; the values may differ in the last bits: batches form as requests arrive)
        for lps, r_lps in zip(out.outputs[0].logprobs, r_out.outputs[0].logprobs):
            assert r_lps.keys() == lps.keys() and r_lps == pytest.approx(lps, abs=1e-4)
        assert r_out.usage == out.usage
        # what the server's stream reads: every token and logprob arrived with the deltas
        seq = r_handle.request.seqs[0]
        assert seq.output_ids == r_out.outputs[0].token_ids and seq.logprobs == r_out.outputs[0].logprobs
        assert r_handle.request.prompt == out.prompt and r_handle.request.prompt_tokens == out.prompt_tokens
    assert remote_n[0] == local_n[0] and len(remote_n[0]) == 2


def test_embeddings_scores_and_stats_equal_the_engine_in_this_process(llm, remote):
    async def pooled(engine):
        vectors, tokens = await engine.embed(["a red square", [5, 6, 7]], False, None)
        scores = await engine.score([("What colour?", ["red", "blue"])], None)
        return vectors, tokens, scores, await engine.stats()

    (vectors, tokens, scores, stats), (r_vectors, r_tokens, r_scores, r_stats) = run_both(llm, remote, pooled)
    assert all(np.array_equal(a, b) for a, b in zip(vectors, r_vectors)) and r_tokens == tokens
    assert r_scores == scores
    assert r_stats.keys() == stats.keys() and r_stats["running"] == 0 and r_stats["queue_depth"] == 0


def test_errors_cross_with_their_class(remote):
    async def main():
        with pytest.raises(ContextLengthError):
            await remote.submit([{"role": "user", "content": "word " * 5000}], SamplingParams(max_tokens=4))
        with pytest.raises(InputError, match="at most 4 sequences"):
            await remote.submit(conv(0), SamplingParams(n=5, max_tokens=4))
        texts, _, out = await stream(remote, conv(1), SamplingParams(temperature=0, max_tokens=3))  # still serving
        return out

    assert asyncio.run(main()).outputs[0].finish_reason == "length"


def test_cancel_ends_the_request_with_abort_and_frees_its_rows(remote):
    params = SamplingParams(temperature=0, max_tokens=200, ignore_eos=True)

    async def main():
        handle = await remote.submit(conv(2), params)
        async for _ in handle:
            handle.cancel()  # after the first delta; the engine process ends it at its next step
        return remote.output(handle), await remote.stats()

    out, stats = asyncio.run(main())
    assert out.finished and out.outputs[0].finish_reason == "abort" and len(out.outputs[0].token_ids) < 200
    assert stats["running"] == 0


def test_a_load_error_is_raised_in_the_parent(tmp_path):
    with pytest.raises(ConfigError, match="no config.json"):
        EngineProcess({"model": tmp_path, "progress": False}, threads=1)


def test_a_dead_engine_process_fails_what_waits_on_it(model_dir):
    engine = EngineProcess({"model": model_dir, "progress": False}, threads=1)
    params = SamplingParams(temperature=0, max_tokens=engine.info.max_model_len // 2, ignore_eos=True)

    async def main():
        handle = await engine.submit(conv(0), params)
        os.kill(engine.process.pid, signal.SIGKILL)
        with pytest.raises(EngineStoppedError):
            async for _ in handle:
                pass
        with pytest.raises(EngineStoppedError):
            await engine.submit(conv(0), params)

    try:
        asyncio.run(main())
        assert not engine.alive
    finally:
        engine.shutdown()


def test_a_failed_preparation_frees_its_queue_slot_before_the_client_hears(llm):
    """A client told that its request failed may send the next one at once: by then the failed one must no longer
    hold a place in the queue (a one-place queue answered that next request 503 on a loaded machine)."""
    from glmv.engine.engine_process import _Core

    core = _Core(None, llm, {"max_queue": 1})
    try:
        sent = []
        core._send = lambda message: sent.append((message[0], core.engine.queue_depth))
        core.engine.reserve(SamplingParams())
        core.preparing.add(7)

        def prepare():
            raise InputError("the image could not be fetched: timed out")

        core._prepare(7, prepare)
        assert sent == [("error", 0)]
    finally:
        core.engine.shutdown()
