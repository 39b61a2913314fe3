"""Several adapters served at once, chosen per request (glmv/lora/serving.py): one batch mixing two adapters and
the base model gives each row the logits (fp32, <= 1e-5) and greedy tokens of a model carrying only that adapter
(loaded by load_adapter, the path peft's tests pin) or of the base model; the prefix and vision caches never hand
one adapter's work to another; the server lists the adapters and the request's `model` picks one."""

from __future__ import annotations

import logging

import openai
import pytest
import torch

import glmv
from glmv import LLM, SamplingParams
from glmv.errors import ConfigError, InputError
from glmv.lora import LoraConfig, apply_lora, load_adapter, save_adapter
from glmv.lora.mapping import LoraMapping
from glmv.lora.serving import serve_adapters
from glmv.testing.media_urls import image_part, png_bytes
from glmv.testing.server import serve_process
from glmv.testing.tiny_checkpoint import make_tiny_model_dir

TOL = 1e-5
# per model type, adapter name -> (targets, rank, DoRA): ranks differ (the stacks pad to the largest), "a" leaves
# the vision side alone and "b" adapts it; the MoE's "a" adapts the routed experts, the dense "b" is DoRA
ADAPTERS = {
    "glm4v_moe": {"a": (["attention", "experts"], 4, False), "b": (["attention", "mlp", "vit", "projector"], 8, False)},
    "glm4v": {"a": (["attention", "mlp"], 4, False), "b": (["attention", "mlp", "vit", "projector"], 8, True)},
}
GREEDY = SamplingParams(temperature=0, max_tokens=6, ignore_eos=True)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, random_adapter):
    """model type -> (model directory, {adapter name: adapter directory}), made once."""
    made = {}

    def make(model_type: str):
        if model_type not in made:
            root = tmp_path_factory.mktemp(model_type)
            path = make_tiny_model_dir(root / "base", model_type)
            dirs = {}
            for seed, (name, (targets, r, dora)) in enumerate(ADAPTERS[model_type].items(), start=1):
                model = glmv.load_model(path, progress=False)
                torch.manual_seed(seed)
                apply_lora(model, LoraConfig(r=r, lora_alpha=2 * r, targets=targets, use_dora=dora))
                random_adapter(model, seed)
                dirs[name] = save_adapter(model, root / name)
            made[model_type] = (path, dirs)
        return made[model_type]

    return make


def conversation(text: str) -> list[dict]:
    return [{"role": "user", "content": [image_part(png_bytes(56, 56, (30, 200, 90))), {"type": "text", "text": text}]}]


def recorded(llm: LLM) -> list[list[tuple[object, torch.Tensor]]]:
    """Every forward of llm's engine from now on: [(sequence, its logits row)] per forward."""
    forwards, forward = [], llm.engine.runner.forward

    def spy(work):
        logits = forward(work)
        forwards.append([(seq, row.clone()) for (seq, _), row in zip(work, logits)])
        return logits

    llm.engine.runner.forward = spy
    return forwards


def logits_of(forwards, seq) -> torch.Tensor:
    return torch.stack([row for step in forwards for s, row in step if s is seq])


def reference(path, adapter_dir) -> LLM:
    """An LLM whose model carries one adapter through load_adapter (LoraLinear / LoraExperts), or none."""
    model = glmv.load_model(path, progress=False)
    if adapter_dir is not None:
        load_adapter(model, adapter_dir)
    return LLM.from_model(model, path)


def answered(llm: LLM, text: str) -> tuple[list[int], torch.Tensor]:
    """(greedy token ids, logits of every step) of one conversation answered alone."""
    forwards = recorded(llm)
    out = llm.chat(conversation(text), GREEDY)[0]
    return out.outputs[0].token_ids, logits_of(forwards, forwards[0][0][0])


@pytest.mark.parametrize("model_type", ["glm4v_moe", "glm4v"])
def test_one_batch_mixing_adapters_equals_one_adapter_per_model(model_type, checkpoints):
    path, dirs = checkpoints(model_type)
    llm = LLM(path, lora=dirs, progress=False)
    picks = ["a", "b", None]
    texts = ["What colour is this?", "Describe the image.", "Is it a square?"]  # other lengths: rows are padded
    requests = [llm.prepare_chat([conversation(t)], GREEDY, lora=name)[0] for name, t in zip(picks, texts)]
    forwards = recorded(llm)
    outputs = llm.run_requests(requests)
    # the three ran as rows of the same forwards (prefill and every decode step), not one after another
    assert all({s.lora for s, _ in step} == set(picks) for step in forwards)
    base = reference(path, None)
    for name, text, request, out in zip(picks, texts, requests, outputs):
        ids, logits = answered(base if name is None else reference(path, dirs[name]), text)
        diff = (logits_of(forwards, request.seqs[0]) - logits).abs().max().item()
        print(f"{model_type} {name or 'base'}: max |logit diff| vs the one-adapter model {diff:.2e}")
        assert diff <= TOL and out.outputs[0].token_ids == ids
        if name is not None:  # the adapter moves the logits far beyond the tolerance: the rows really differ
            assert (logits - answered(base, text)[1]).abs().max() > 100 * TOL


@pytest.mark.parametrize("grad", [False, True], ids=["grouped-experts", "looped-experts"])
def test_model_forward_under_a_batch_mapping(grad, checkpoints):
    """The model alone, with the mapping the runner sets: both routed-expert paths (grouped GEMMs without grad,
    expert by expert with it) give each row its adapter's logits."""
    path, dirs = checkpoints("glm4v_moe")
    ids = torch.randint(10, 200, (4, 9), generator=torch.Generator().manual_seed(0))
    picks = ["b", None, "a", "a"]
    refs = {}
    for name in set(picks):
        model = glmv.load_model(path, progress=False)
        if name is not None:
            load_adapter(model, dirs[name])
        with torch.no_grad():
            refs[name] = model(ids).logits
    model = glmv.load_model(path, progress=False)
    served = serve_adapters(model, dirs)
    with torch.set_grad_enabled(grad), served.batch(picks, ids.shape[1], "cpu"):
        out = model(ids).logits.detach()
    for i, name in enumerate(picks):
        assert (out[i] - refs[name][i]).abs().max() <= TOL
    assert (refs["a"] - refs[None]).abs().max() > 100 * TOL
    with torch.no_grad():  # nothing set: the base model
        assert (model(ids).logits - refs[None]).abs().max() <= TOL


def test_prefix_cache_is_not_shared_across_adapters(checkpoints):
    path, dirs = checkpoints("glm4v_moe")
    llm = LLM(path, lora=dirs, progress=False)
    prompt = {"prompt_token_ids": list(range(20, 60))}  # 40 tokens: two full blocks of 16 could be reused

    def run(name):
        return llm.generate(prompt, GREEDY, lora=name)[0]

    first = run("a")
    others = {name: run(name) for name in ("b", None)}
    again = run("a")
    assert first.cached_tokens == 0
    assert [out.cached_tokens for out in others.values()] == [0, 0]  # a's blocks are a's alone
    assert again.cached_tokens == 32 and again.outputs[0].token_ids == first.outputs[0].token_ids
    ref = reference(path, dirs["b"]).generate(prompt, GREEDY)[0]
    assert others["b"].outputs[0].token_ids == ref.outputs[0].token_ids


def test_vision_cache_is_keyed_on_adapters_that_adapt_the_vision_tower(checkpoints):
    path, dirs = checkpoints("glm4v_moe")
    llm = LLM(path, lora=dirs, progress=False)
    vision = llm.engine.vision

    def embeds(name):
        return llm.prepare_chat([conversation("Hi")], GREEDY, lora=name)[0].seqs[0].image_embeds[0]

    base = embeds(None)
    assert vision.encoder_calls == 1
    assert embeds("a") is base and vision.encoder_calls == 1  # "a" leaves the ViT alone: the base embeddings
    adapted = embeds("b")
    assert vision.encoder_calls == 2 and (adapted - base).abs().max() > 100 * TOL
    assert embeds("b") is adapted and embeds(None) is base and vision.encoder_calls == 2


def test_one_directory_is_the_default_adapter_and_names_are_checked(checkpoints, caplog):
    path, dirs = checkpoints("glm4v")
    llm = LLM(path, lora=dirs["a"], progress=False)
    assert llm.adapters.names == ("a",) and llm.default_lora == "a"  # named after its directory
    messages = [{"role": "user", "content": "Hello there."}]
    adapted, base = (llm.chat(messages, GREEDY, lora=name)[0].outputs[0].token_ids for name in ("a", None))
    assert llm.chat(messages, GREEDY)[0].outputs[0].token_ids == adapted != base
    with pytest.raises(InputError, match="no LoRA adapter named 'c'.*served adapters: a"):
        llm.chat(messages, GREEDY, lora="c")
    with pytest.raises(ConfigError, match="already serves adapters"):
        serve_adapters(llm.model, {"b": dirs["b"]})
    with caplog.at_level(logging.WARNING, logger="glmv.engine.llm"):  # glmv serve compiles by default
        assert LLM(path, lora=dirs["a"], compile=True, progress=False).engine.runner.decode is None
    assert "decode steps are not compiled" in caplog.text


def test_a_mapping_that_does_not_fit_the_layer_input_is_an_error():
    mapping = LoraMapping.batch([0, -1, 1], query_len=4, device="cpu")
    assert [a for a, _ in mapping.groups(12)] == [0, 1] and mapping.groups(3)[1][1].tolist() == [2]
    with pytest.raises(RuntimeError, match="3 sequences of 4 positions"):
        mapping.groups(7)
    assert LoraMapping.batch([-1, -1], query_len=4, device="cpu") is None  # no adapter: no mapping, no work


# --- the server ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(checkpoints):
    path, dirs = checkpoints("glm4v_moe")
    with serve_process(path, "--lora", f"a={dirs['a']}", "--lora-modules", f"b={dirs['b']}", "--device", "cpu",
                       "--dtype", "float32") as s:
        yield s, path, dirs


def test_server_lists_adapters_and_the_model_field_picks_one(server):
    s, path, dirs = server
    client = openai.OpenAI(base_url=s.url + "/v1", api_key="none", max_retries=0, timeout=120)
    base = path.name
    cards = client.models.list().data
    assert [m.id for m in cards] == [base, "a", "b"]
    assert cards[1].model_extra["parent"] == base and cards[1].model_extra["root"] == str(dirs["a"])
    assert client.models.retrieve("b").model_extra["parent"] == base

    def answer(model):
        out = client.chat.completions.create(model=model, messages=conversation("Describe it."), temperature=0,
                                             max_tokens=6, extra_body={"ignore_eos": True})
        assert out.model == model
        return out.choices[0].message.content

    texts = {name: answer(name) for name in (base, "a", "b")}
    llm = LLM(path, lora=dirs, progress=False)  # the same adapters in this process
    for name, text in texts.items():
        lora = None if name == base else name
        assert text == llm.chat(conversation("Describe it."), GREEDY, lora=lora)[0].outputs[0].content
    assert len(set(texts.values())) == 3
    with pytest.raises(openai.NotFoundError, match="'c' does not exist"):
        answer("c")
    embedded = {m: client.embeddings.create(model=m, input="hello").data[0].embedding for m in (base, "b")}
    assert embedded[base] != embedded["b"]
