"""LLM.embed and LLM.score: last-token / mean pooling of the final hidden state and the mean log-probability of
candidates, checked against the model's own forward over the processor's batch (itself equal to transformers)."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from glmv import LLM
from glmv.errors import InputError
from glmv.testing.tiny_checkpoint import make_tiny_model_dir


def conv(colour: str, text: str = "What is in this image?") -> list[dict]:
    return [{"role": "user", "content": [{"type": "image", "image": Image.new("RGB", (60, 45), colour)},
                                         {"type": "text", "text": text}]}]


@pytest.fixture(scope="module")
def path(tmp_path_factory):
    return make_tiny_model_dir(tmp_path_factory.mktemp("pool"))


@pytest.fixture(scope="module")
def llm(path):
    return LLM(path, progress=False, max_model_len=128)


def reference_states(llm: LLM, messages: list[dict], add_generation_prompt: bool = False) -> torch.Tensor:
    batch = llm.processor.apply_chat_template(messages, add_generation_prompt=add_generation_prompt)
    with torch.inference_mode():
        out = llm.model(**{k: v for k, v in batch.items() if v is not None}, return_hidden=True)
    return out.hidden_states[0]


def test_embedding_is_the_normalised_last_hidden_state(llm):
    for agp in (False, True):
        got = torch.tensor(llm.embed(conv("red"), add_generation_prompt=agp)[0].outputs.embedding)
        want = reference_states(llm, conv("red"), agp)[-1]
        torch.testing.assert_close(got, want / want.norm(), atol=1e-6, rtol=1e-5)
    mean = torch.tensor(llm.embed(conv("red"), pooling="mean", normalize=False)[0].outputs.embedding)
    torch.testing.assert_close(mean, reference_states(llm, conv("red")).mean(0), atol=1e-6, rtol=1e-5)


def test_batch_and_single_give_the_same_vectors(llm):
    inputs = [conv("red"), "a plain text of several words", conv("blue", "Describe it."), [5, 6, 7, 8]]
    batch = [o.outputs.embedding for o in llm.embed(inputs)]
    for x, vec in zip(inputs, batch):
        alone = llm.embed(x)[0].outputs.embedding
        torch.testing.assert_close(torch.tensor(vec), torch.tensor(alone), atol=1e-5, rtol=1e-4)
        assert abs(torch.tensor(vec).norm().item() - 1) < 1e-5
    assert torch.tensor(batch[0]) @ torch.tensor(batch[2]) < 0.9999  # different inputs, different vectors


def test_text_and_token_ids_embed_alike(llm):
    text = "the same words"
    ids = llm.tokenizer.encode(text)
    out = llm.embed([text, ids])
    # Two rows of one batch: with 2+ threads their reductions may split differently (last bits of a unit vector).
    assert out[0].prompt_token_ids == ids
    assert out[0].outputs.embedding == pytest.approx(out[1].outputs.embedding, rel=1e-5, abs=1e-7)


def test_score_is_the_mean_log_probability_of_the_candidate_and_its_end(llm):
    candidates = ["a red square.", "two blue circles and a line"]
    outs = llm.score(conv("red"), candidates)
    prompt = llm.processor.render(conv("red"), add_generation_prompt=True, enable_thinking=False)
    end = llm.tokenizer.token_id("<|user|>")
    for out, c in zip(outs, candidates):
        answer = llm.tokenizer.encode(c) + [end]
        batch = llm.processor.apply_chat_template(conv("red"), add_generation_prompt=True, enable_thinking=False)
        ids = torch.cat([batch["input_ids"], torch.tensor([answer])], 1)
        with torch.inference_mode():
            logits = llm.model(ids, pixel_values=batch["pixel_values"], image_grid_thw=batch["image_grid_thw"]).logits
        logp = logits[0, -len(answer) - 1 : -1].log_softmax(-1).gather(-1, torch.tensor(answer)[:, None])
        assert out.outputs.score == pytest.approx(logp.mean().item(), abs=1e-5)
        assert out.prompt_token_ids[-len(answer):] == answer and prompt.endswith("<think></think>\n")
    assert outs[0].outputs.score != outs[1].outputs.score
    # a text query is one user message
    assert llm.score("Hello", "Hi there")[0].outputs.score == pytest.approx(
        llm.score([{"role": "user", "content": "Hello"}], ["Hi there"])[0].outputs.score)


@pytest.mark.parametrize("bad", ["", [], [10**9], [[]], 3.5])
def test_bad_inputs_are_input_errors(llm, bad):
    with pytest.raises(InputError):
        llm.embed(bad)


def test_bad_score_inputs(llm):
    for query, candidates in (("q", []), ("q", [3]), ([], ["a"])):
        with pytest.raises(InputError):
            llm.score(query, candidates)
    with pytest.raises(InputError, match="pooling"):
        llm.embed("x", pooling="max")


def test_retrieval_recall_through_embed_and_score(llm):
    from glmv.world.retrieval import evaluate_retrieval

    r = evaluate_retrieval(llm, "test", sets=1, n=3)
    assert (r["sets"], r["candidates"], r["chance"]) == (1, 3, 1 / 3)
    for key in ("embed_recall_at_1", "score_recall_at_1"):
        assert r[key] in (0.0, 1 / 3, 2 / 3, 1.0)


def test_eval_prints_retrieval_recall(path, tmp_path, capsys):
    import json

    from glmv.cli import main

    out = tmp_path / "r.json"
    assert main(["eval", "--model", str(path), "--retrieval", "1", "--out", str(out), "--device", "cpu"]) == 0
    assert "recall@1 by embedding" in capsys.readouterr().out
    assert set(json.loads(out.read_text())["retrieval"]) >= {"embed_recall_at_1", "score_recall_at_1"}
    assert main(["eval", "--endpoint", "http://127.0.0.1:9", "--retrieval", "1"]) == 1


def test_request_ids_are_never_reused(llm):
    from glmv import SamplingParams

    chat_id = llm.chat([{"role": "user", "content": "hi"}], SamplingParams(max_tokens=1))[0].request_id
    embed_ids = [o.request_id for o in llm.embed(["a", "b"])]
    score_ids = [o.request_id for o in llm.score("q", ["a", "b"])]
    ids = [chat_id, *embed_ids, *score_ids]
    assert len(set(ids)) == len(ids)
