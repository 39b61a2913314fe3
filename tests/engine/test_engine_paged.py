"""The paged engine: any block size gives the same greedy tokens (the default one equals transformers, see
test_engine_generate); prefix caching shares blocks only where tokens and media agree; preemption and chunked
prefill change no output; KV memory is the budget, and a sequence's blocks grow with its tokens."""

from __future__ import annotations

import pytest
from PIL import Image

from glmv import LLM, SamplingParams
from glmv.engine.paged_kv import PagedKVCache
from glmv.errors import ContextLengthError
from glmv.testing.tiny_checkpoint import make_tiny_model_dir

GREEDY = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True)


@pytest.fixture(scope="module")
def path(tmp_path_factory):
    return make_tiny_model_dir(tmp_path_factory.mktemp("paged"))


@pytest.fixture(scope="module")
def reference(path):
    return LLM(path, progress=False)


def picture(w: int, h: int, shade: int) -> Image.Image:
    return Image.new("RGB", (w, h), (shade, 255 - shade, 90))


def conversations() -> list[list[dict]]:
    user = lambda *parts: [{"role": "user", "content": list(parts)}]
    text = lambda t: {"type": "text", "text": t}
    image = lambda *a: {"type": "image", "image": picture(*a)}
    frames = [picture(56, 56, 20 * i) for i in range(4)]
    return [
        user(text("Hello there, how are you today?")),
        user(image(70, 50, 10), text("What is in this image?")),
        user(image(56, 84, 80), text("and"), image(84, 56, 160), text("Compare the two.")),
        user({"type": "video", "video": frames, "fps": 2}, text("What happens?")),
    ]


def token_ids(llm: LLM, convs=None, params=GREEDY) -> list[list[int]]:
    return [o.outputs[0].token_ids for o in llm.chat(convs or conversations(), params)]


@pytest.mark.parametrize("block_size", [1, 64])
def test_any_block_size_gives_the_same_tokens(path, reference, block_size):
    llm = LLM(path, progress=False, block_size=block_size)
    assert token_ids(llm) == token_ids(reference)


@pytest.mark.parametrize("block_size", [pytest.param(1, marks=pytest.mark.slow), 16,
                                        pytest.param(64, marks=pytest.mark.slow)])  # unfused on CPU: ~5 s a pass
def test_flex_attention_backend_gives_the_same_tokens_and_logprobs(path, reference, block_size):
    """FlexAttention reading the pool in place (a physical -> logical block map per row) against gather + SDPA:
    text, one and two images, video, batched; with chunked prefill, and with a shared prefix from the cache."""
    params = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True, logprobs=0)
    # A small pool: on CPU, flex evaluates its mask over every slot of the pool.
    flex = LLM(path, progress=False, block_size=block_size, attention_backend="flex", max_num_batched_tokens=24,
               kv_cache_memory="1MiB")
    want = reference.chat(conversations(), params)
    for _ in range(2):  # the second time the prompts' blocks come from the prefix cache
        got = flex.chat(conversations(), params)
        for g, w in zip(got, want):
            assert g.outputs[0].token_ids == w.outputs[0].token_ids
            assert g.outputs[0].cumulative_logprob == pytest.approx(w.outputs[0].cumulative_logprob, abs=1e-4)
    assert flex.engine.blocks.hits > 0 or block_size == 64  # 64: no prompt fills a block


def test_unknown_attention_backend_is_a_config_error(path):
    from glmv.errors import ConfigError

    with pytest.raises(ConfigError, match="flex"):
        LLM(path, progress=False, attention_backend="paged")


def test_chunked_prefill_and_mid_flight_joins_give_the_same_tokens(path, reference):
    """A step budget of 8 tokens: every prompt is prefilled in chunks (cutting through image runs), and
    sequences join while others decode."""
    llm = LLM(path, progress=False, max_num_batched_tokens=8)
    expected = token_ids(reference)
    engine = llm.engine
    requests = [llm.prepare_chat([c], GREEDY)[0] for c in conversations()]
    engine.add(requests[0].seqs[0])
    joined, steps_with_both = 1, 0
    while engine.has_work():
        produced = engine.step()
        if joined < len(requests) and requests[0].seqs[0].output_ids:
            engine.add(requests[joined].seqs[0])
            joined += 1
        prefilling = any(s.num_computed < len(s.prompt_ids) for s in engine.scheduler.running)
        steps_with_both += bool(produced) and prefilling
    assert [r.seqs[0].output_ids for r in requests] == expected
    assert steps_with_both > 0  # running streams got tokens while a prompt was being prefilled


def test_prefix_cache_shares_text_but_not_other_images(path):
    llm = LLM(path, progress=False, block_size=4)
    long_text = "A long shared system prompt that many users send word for word. " * 3
    ask = lambda img: [{"role": "system", "content": long_text},
                       {"role": "user", "content": [{"type": "image", "image": img}, {"type": "text", "text": "What?"}]}]
    params = SamplingParams(temperature=0, max_tokens=2)
    first = llm.chat(ask(picture(56, 56, 10)), params)[0]
    same = llm.chat(ask(picture(56, 56, 10)), params)[0]
    other = llm.chat(ask(picture(56, 56, 200)), params)[0]
    image_at = first.prompt_token_ids.index(llm.processor.media_tokens.image)
    assert first.cached_tokens == 0
    assert same.cached_tokens == (len(same.prompt_token_ids) - 1) // 4 * 4  # everything but the last block
    assert image_at // 4 * 4 <= other.cached_tokens <= image_at  # the text before the image, nothing after
    assert other.outputs[0].token_ids == LLM(path, progress=False).chat(ask(picture(56, 56, 200)), params)[0].outputs[0].token_ids


def test_n_samples_share_their_prompt(path):
    llm = LLM(path, progress=False, block_size=4)
    out = llm.chat(conversations()[1], SamplingParams(n=3, temperature=1.0, seed=5, max_tokens=4))[0]
    assert len(out.outputs) == 3
    hits = llm.engine.blocks.hits
    assert hits == 2 * ((len(out.prompt_token_ids) - 1) // 4 * 4)  # samples 2 and 3 found the prompt cached


def test_preemption_under_a_tiny_pool_changes_no_output(path, reference):
    """16 requests needing about 4x the pool: all complete, identical to running alone; some were preempted."""
    convs = [[{"role": "user", "content": f"Request number {i}: " + "tell me more " * (i % 4)}] for i in range(16)]
    params = SamplingParams(temperature=0, max_tokens=40, ignore_eos=True)
    alone = token_ids(reference, convs, params)
    cfg = reference.model.config.text
    per_block = PagedKVCache.bytes_per_block(cfg.num_hidden_layers, 4, cfg.num_key_value_heads, cfg.head_dim,
                                             reference.model.dtype)
    need = sum(-(-(len(p) + 40) // 4) for p in (llm_prompt(reference, c) for c in convs))
    llm = LLM(path, progress=False, block_size=4, kv_cache_memory=per_block * (need // 4))
    assert token_ids(llm, convs, params) == alone
    assert llm.engine.scheduler.preemptions > 0
    assert llm.engine.blocks.num_free == llm.engine.kv.num_blocks


def llm_prompt(llm: LLM, conv: list[dict]) -> list[int]:
    return llm.prepare_chat([conv], GREEDY)[0].prompt_ids


def test_kv_memory_is_the_budget_and_blocks_grow_with_tokens(path):
    budget = 3 << 20
    llm = LLM(path, progress=False, kv_cache_memory="3MiB", max_model_len=4096)
    kv = llm.engine.kv
    allocated = sum(t.numel() * t.element_size() for t in kv.k + kv.v)
    per_block = allocated // (kv.num_blocks + 1)  # the pools hold one scratch block beyond the budget's blocks
    assert kv.num_blocks * per_block <= budget < (kv.num_blocks + 1) * per_block
    seq = llm.prepare_chat([conversations()[0]], SamplingParams(temperature=0, max_tokens=40, ignore_eos=True))[0].seqs[0]
    llm.engine.add(seq)
    sizes = []
    while llm.engine.has_work():
        llm.engine.step()
        sizes.append(len(seq.block_table))
    bs = llm.engine.config.block_size
    assert sizes[0] == -(-len(seq.prompt_ids) // bs)  # the prompt's blocks, not the context's
    assert max(sizes) == -(-(len(seq) - 1) // bs)  # grown one block at a time as tokens came


def test_a_prompt_larger_than_the_pool_is_refused_at_once(path):
    llm = LLM(path, progress=False, block_size=4, kv_cache_memory="64KiB")
    assert llm.engine.max_model_len == llm.engine.kv.num_blocks * 4
    long = [{"role": "user", "content": "word " * (llm.engine.max_model_len + 10)}]
    with pytest.raises(ContextLengthError):
        llm.chat(long, GREEDY)
