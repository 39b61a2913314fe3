"""The compiled decode step (glmv/engine/compiled_step.py) against the eager engine: the same greedy tokens and
logprobs for a batch of conversations of different lengths (text, image, video), alone and batched, with prefix
caching; two graphs only (batch 1 and batch >= 2), whatever the context lengths, in both modes ("default" and
"max-autotune": weights frozen into the graph, Inductor's C++ GEMM templates); the gathered experts equal the
grouped ones; a frozen step's cache key follows the weights."""

from __future__ import annotations

import types

import pytest
import torch

from glmv import LLM, SamplingParams
from glmv.config import TextConfig
from glmv.errors import ConfigError
from glmv.model.moe import Experts
from glmv.testing.tiny_checkpoint import make_tiny_model_dir

from tests.engine.test_engine_paged import conversations

PARAMS = SamplingParams(temperature=0, max_tokens=10, ignore_eos=True, logprobs=0)


@pytest.fixture(scope="module", params=[("glm4v_moe", "default"), ("glm4v_moe", "max-autotune"),
                                        pytest.param(("glm4v", "default"), marks=pytest.mark.slow),
                                        pytest.param(("glm4v", "max-autotune"), marks=pytest.mark.slow)],
                ids=lambda p: "-".join(p))
def pair(request, tmp_path_factory):
    """(eager, compiled) LLMs over one tiny random checkpoint."""
    model_type, mode = request.param
    path = make_tiny_model_dir(tmp_path_factory.mktemp(model_type), model_type)
    torch._dynamo.reset()
    return LLM(path, progress=False), LLM(path, progress=False, compile=True, compile_mode=mode)


def step_code(decode) -> types.CodeType:
    """The code object Dynamo keeps a compiled decode step's graphs on."""
    return decode.fn._torchdynamo_orig_callable.__code__


def outputs(llm: LLM, convs: list) -> list[tuple[list[int], list[float]]]:
    outs = [o.outputs[0] for o in llm.chat(convs, PARAMS)]
    return [(o.token_ids, [lp[t] for lp, t in zip(o.logprobs, o.token_ids)]) for o in outs]


def test_compiled_decode_equals_eager(pair):
    eager, compiled = pair
    frames = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    convs = conversations()
    for batch in ([convs[0]], convs, convs[1:3], convs):  # alone, batched, again from the prefix cache
        want, got = outputs(eager, batch), outputs(compiled, batch)
        for (ids_w, lp_w), (ids_g, lp_g) in zip(want, got):
            assert ids_g == ids_w
            assert max(abs(a - b) for a, b in zip(lp_w, lp_g)) <= 1e-4
    # nothing compiled past the warm-up's two graphs: contexts of every length reuse them
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == frames


def test_compile_takes_the_sdpa_backend(tmp_path):
    path = make_tiny_model_dir(tmp_path)
    with pytest.raises(ConfigError, match="sdpa"):
        LLM(path, progress=False, compile=True, attention_backend="flex")
    with pytest.raises(ConfigError, match="compile mode 'fast': use one of default, max-autotune"):
        LLM(path, progress=False, compile=True, compile_mode="fast")


def test_frozen_step_cache_key_follows_the_weights(tmp_path):
    """Inductor's cache keys a frozen graph by its code alone; the weights' fingerprint in the key keeps another
    checkpoint of the same shapes from loading this one's weights."""
    from glmv.engine.compiled_step import _WeightsKey
    from glmv.weights import load_model

    model = load_model(make_tiny_model_dir(tmp_path / "a"), progress=False)
    same = _WeightsKey(load_model(make_tiny_model_dir(tmp_path / "b"), progress=False)).uuid()
    other = _WeightsKey(load_model(make_tiny_model_dir(tmp_path / "c", seed=1), progress=False)).uuid()
    assert _WeightsKey(model).uuid() == same != other
    with torch.no_grad():
        model.language_model.layers[-1].self_attn.o_proj.weight[3, 5] += 1e-6
    assert _WeightsKey(model).uuid() != same


def test_each_frozen_step_compiles_its_own_code(pair):
    """Dynamo keeps graphs on the code object and the guards skip the model, so a frozen graph (weights baked in)
    must live on a code object of its own instance: never found by another model's call."""
    from glmv.engine.compiled_step import CompiledDecode

    eager, compiled = pair
    decode = compiled.engine.runner.decode
    if decode.mode == "default":
        assert step_code(decode) is CompiledDecode._step.__code__
    else:
        other = CompiledDecode(eager.model, eager.engine.kv, "max-autotune")
        # equal, not the same
        assert len({id(step_code(decode)), id(step_code(other)), id(CompiledDecode._step.__code__)}) == 3


def test_the_step_takes_no_float_inputs(pair):
    """The warm-up specialises floats: no model attribute (an RMSNorm's eps) is boxed into a tensor on each call.
    Read from the code Dynamo runs before each graph (where it would call torch._as_tensor_fullprec)."""
    from torch._dynamo.eval_frame import _debug_get_cache_entry_list

    decode = pair[1].engine.runner.decode
    entries = _debug_get_cache_entry_list(step_code(decode))
    assert len(entries) >= 2  # batch 1 and batch >= 2
    for entry in entries:
        assert "_as_tensor_fullprec" not in entry.code.co_names


def test_a_call_outside_inference_mode_reuses_the_graphs(pair):
    """The runner's inference tensors, passed from outside inference mode: the key mask is still made under it
    (one made outside would fail a guard of the warm-up's graph and compile a third one)."""
    decode = pair[1].engine.runner.decode
    frames = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    pad = decode.cache.pad_slot
    with torch.inference_mode():
        ids, write, read = torch.zeros(3, 1, dtype=torch.long), torch.full((3, 1), pad), torch.full((3, 5), pad)
        args = (ids, ids.clone(), torch.zeros(3, 3, 1, dtype=torch.long), write, read, torch.ones_like(read))
    assert decode(*args).shape[0] == 3
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == frames


@pytest.mark.slow
def test_max_autotune_of_two_checkpoints_alike_in_shape(tmp_path):
    """The second checkpoint compiles its own step (no cache hit on the first one's frozen weights)."""
    for seed in (0, 1):
        path = make_tiny_model_dir(tmp_path / str(seed), seed=seed)
        convs = [conversations()[0]]
        want = outputs(LLM(path, progress=False), convs)
        got = outputs(LLM(path, progress=False, compile=True, compile_mode="max-autotune"), convs)
        assert got[0][0] == want[0][0]


@pytest.mark.parametrize("tokens", [1, 3, 9])
def test_gathered_experts_equal_grouped(tokens):
    cfg = TextConfig(moe=True, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                     num_key_value_heads=1, head_dim=16, vocab_size=64, moe_intermediate_size=16,
                     n_routed_experts=8, num_experts_per_tok=3, n_shared_experts=1, first_k_dense_replace=0)
    experts = Experts(cfg)
    torch.nn.init.normal_(experts.gate_up_proj, std=0.2)
    torch.nn.init.normal_(experts.down_proj, std=0.2)
    gen = torch.Generator().manual_seed(tokens)
    x = torch.randn(tokens, 32, generator=gen)
    ids = torch.stack([torch.randperm(8, generator=gen)[:3] for _ in range(tokens)])
    weights = torch.rand(tokens, 3, generator=gen)
    with torch.inference_mode():
        torch.testing.assert_close(experts._gathered(x, weights, ids), experts(x, weights, ids), atol=1e-6, rtol=1e-5)


def test_a_failed_compile_falls_back_to_eager(tmp_path, monkeypatch, caplog):
    """A machine without a C++ compiler, or an operator Inductor cannot lower, costs the speed, not the engine."""
    from glmv.engine.compiled_step import CompiledDecode

    def broken(self):
        raise RuntimeError("InductorError: no compiler here\nmore details")

    monkeypatch.setattr(CompiledDecode, "warm_up", broken)
    path = make_tiny_model_dir(tmp_path)
    with caplog.at_level("WARNING", logger="glmv.engine.engine"):
        llm = LLM(path, progress=False, compile=True)
    assert llm.engine.runner.decode is None and "decoding eagerly: InductorError: no compiler here" in caplog.text
    assert outputs(llm, [conversations()[0]]) == outputs(LLM(path, progress=False), [conversations()[0]])


def test_decode_inputs_read_the_same_keys_as_the_general_path():
    """The decode step's vectorised inputs (right-padded keys) against the general path's (left-padded): per row
    the same token, position (a model's own decode schedule included), write slot and set of real key slots;
    a batch with a row that is not plain decoding goes the general way."""
    from glmv.engine.model_runner import ModelRunner
    from glmv.engine.paged_kv import PagedKVCache
    from glmv.engine.sequence import Layout, Sequence

    cache = PagedKVCache(1, num_blocks=12, block_size=4, kv_heads=1, head_dim=2, dtype=torch.float32, device="cpu")
    runner = ModelRunner.__new__(ModelRunner)
    runner.cache = cache
    work = []
    schedule = torch.tensor([[50, 51, 52], [60, 62, 64], [70, 73, 76]])  # a model's own decode positions [3, D]
    for prompt, out, blocks, delta, own in ((5, 3, [7, 2], 0, None), (2, 1, [4], -3, None),
                                            (9, 4, [0, 11, 5, 9], 6, None), (3, 2, [6, 1], 0, schedule)):
        seq = Sequence(prompt_ids=list(range(100, 100 + prompt)), params=SamplingParams(),
                       output_ids=list(range(200, 200 + out)), block_table=blocks, num_computed=prompt + out - 1)
        seq.layout = Layout(types=torch.zeros(prompt, dtype=torch.long), positions=torch.zeros(3, prompt, dtype=torch.long),
                            delta=delta, image_rows=None, video_rows=None, image_before=[0] * (prompt + 1),
                            video_before=[0] * (prompt + 1), decode_positions=own)
        work.append((seq, 1))
    ids, types, positions, write, read, real = runner._decode_inputs(work)
    want_write = torch.stack([cache.slots(s.block_table, s.num_computed + 1)[-1:] for s, _ in work])
    want_read, want_real = runner._sdpa_slots(work, want_write, 1)
    assert ids.flatten().tolist() == [s.output_ids[-1] for s, _ in work]
    assert torch.equal(positions, torch.stack([s.positions(s.num_computed, s.num_computed + 1) for s, _ in work], 1))
    assert positions[:, -1, 0].tolist() == [51, 62, 73]
    assert torch.equal(write, want_write) and not types.any()
    for i in range(len(work)):
        assert sorted(read[i][real[i].bool()].tolist()) == sorted(want_read[i][want_real[i].bool()].tolist())
        assert (read[i][~real[i].bool()] == cache.pad_slot).all()
    prefill = Sequence(prompt_ids=[1, 2, 3], params=SamplingParams(), block_table=[3], num_computed=2)
    assert runner._decode_inputs([*work, (prefill, 1)]) is None
