"""SamplingParams validation and the batched sampler's arithmetic, on crafted logits (no model needed)."""

from __future__ import annotations

import math

import pytest
import torch

from glmv.engine.sampling import (
    PenaltyCache,
    Row,
    Sampler,
    SamplingParams,
    apply_penalties,
    filter_logits,
)
from glmv.errors import InputError


def row(prompt=(), output=(), **kw) -> Row:
    return Row(SamplingParams(**kw), list(prompt), list(output))


# --- SamplingParams ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kw,msg", [
    ({"max_tokens": 0}, "max_tokens must be >= 1, got 0"), ({"max_tokens": 2.5}, "max_tokens"),
    ({"temperature": -0.1}, "temperature must be >= 0"), ({"temperature": "hot"}, "temperature"),
    ({"temperature": float("nan")}, "temperature"),
    ({"top_p": 0}, r"top_p must be in \(0, 1\]"), ({"top_p": 1.5}, "top_p"),
    ({"top_k": -2}, "top_k"), ({"top_k": 1.5}, "top_k"), ({"min_p": 2}, "min_p"), ({"min_p": -0.1}, "min_p"),
    ({"n": 0}, "n must"), ({"n": True}, "n must"),
    ({"repetition_penalty": 0}, "repetition_penalty"), ({"presence_penalty": 3}, "presence_penalty"),
    ({"frequency_penalty": -2.5}, "frequency_penalty"),
    ({"logprobs": 21}, "logprobs"), ({"logprobs": -1}, "logprobs"),
    ({"stop": [""]}, "stop"), ({"stop": [3]}, "stop"), ({"stop": 5}, "stop"),
    ({"stop_token_ids": [-1]}, "stop_token_ids"), ({"stop_token_ids": ["x"]}, "stop_token_ids"),
    ({"seed": "x"}, "seed"), ({"min_tokens": 10, "max_tokens": 5}, "min_tokens"),
])
def test_invalid_params_raise_input_error(kw, msg):
    with pytest.raises(InputError, match=msg):
        SamplingParams(**kw)


def test_params_are_normalised():
    p = SamplingParams(stop="END", top_k=-1, stop_token_ids=(7, 8))
    assert p.stop == ["END"] and p.top_k == 0 and p.stop_token_ids == [7, 8]
    assert SamplingParams(stop=("a", "b")).stop == ["a", "b"]
    assert SamplingParams(temperature=0).greedy and SamplingParams(temperature=5e-6).greedy
    assert not SamplingParams(temperature=1e-4).greedy


# --- penalties --------------------------------------------------------------------------------------------------
def test_repetition_penalty_divides_positive_and_multiplies_negative_logits_once_per_token():
    logits = torch.tensor([[2.0, -2.0, 3.0, 1.0, -1.0]])
    # token 0 in the prompt three times, token 1 in the output: each is penalised once, token 4 not at all
    out = apply_penalties(logits, [row(prompt=[0, 0, 0], output=[1], repetition_penalty=2.0)])
    assert out.tolist() == [[1.0, -4.0, 3.0, 1.0, -1.0]]


def test_presence_and_frequency_penalties_use_output_counts_only():
    logits = torch.full((1, 4), 1.0)
    r = row(prompt=[3, 3, 3], output=[1, 1, 2], presence_penalty=0.5, frequency_penalty=0.25)
    out = apply_penalties(logits, [r])
    assert out.tolist() == [[1.0, 1.0 - 0.5 - 2 * 0.25, 1.0 - 0.5 - 0.25, 1.0]]  # token 3 is only in the prompt


def test_negative_presence_and_frequency_reward_repeats():
    out = apply_penalties(torch.zeros(1, 3), [row(output=[2, 2], presence_penalty=-1.0, frequency_penalty=-0.5)])
    assert out.tolist() == [[0.0, 0.0, 2.0]]


def test_penalties_compose_repetition_first_then_openai():
    logits = torch.tensor([[4.0, -1.0]])
    out = apply_penalties(logits, [row(prompt=[1], output=[0, 0], repetition_penalty=2.0,
                                       presence_penalty=0.5, frequency_penalty=0.25)])
    assert out.tolist() == [[4.0 / 2 - 0.5 - 0.5, -1.0 * 2]]


def test_penalties_are_per_row_and_leave_other_rows_untouched():
    logits = torch.tensor([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0], [1.0, 2.0, 3.0]])
    rows = [row(output=[2], repetition_penalty=3.0), row(output=[2]), row(output=[0], frequency_penalty=1.0)]
    out = apply_penalties(logits, rows)
    assert out.tolist() == [[1.0, 2.0, 1.0], [1.0, 2.0, 3.0], [0.0, 2.0, 3.0]]
    assert logits.tolist()[0] == [1.0, 2.0, 3.0]  # the input is not modified


def test_penalty_cache_folds_in_new_tokens_and_forgets_rows_that_left():
    cache = PenaltyCache()
    a = row(prompt=[0], output=[1], repetition_penalty=2.0, frequency_penalty=0.5)
    b = row(output=[2], presence_penalty=1.0)
    logits = torch.full((2, 4), 4.0)
    for new_a, new_b in [(None, None), (1, 3), (3, None)]:
        if new_a is not None:
            a.output_ids.append(new_a)
        if new_b is not None:
            b.output_ids.append(new_b)
        cached = apply_penalties(logits, [a, b], cache)
        assert torch.equal(cached, apply_penalties(logits, [a, b]))  # same as computing from scratch
    assert cached.tolist() == [[2.0, 2.0 - 1.0, 4.0, 2.0 - 0.5], [4.0, 4.0, 3.0, 3.0]]
    apply_penalties(logits[:1], [b], cache)
    assert len(cache._rows) == 1  # a left the batch


# --- filters ----------------------------------------------------------------------------------------------------
def _kept(logits, top_k, top_p, min_p) -> list[list[bool]]:
    n = logits.shape[0]
    out = filter_logits(logits, torch.tensor([top_k] * n), torch.tensor([top_p] * n), torch.tensor([min_p] * n))
    return torch.isfinite(out).tolist()


PROBS = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))


@pytest.mark.parametrize("top_k,top_p,min_p,kept", [
    (2, 1.0, 0.0, [True, True, False, False]),
    (0, 0.8, 0.0, [True, True, False, False]),  # 0.5 + 0.3 reaches 0.8: token 2 is not needed
    (0, 0.81, 0.0, [True, True, True, False]),
    (0, 1e-9, 0.0, [True, False, False, False]),
    (0, 1.0, 0.2, [True, True, True, False]),  # threshold 0.2 * 0.5 = 0.1
    (0, 1.0, 0.7, [True, False, False, False]),  # threshold 0.35
    (2, 0.6, 0.0, [True, False, False, False]),  # after top-k the mass is 0.625 / 0.375: top-p sees that
    (0, 1.0, 0.0, [True, True, True, True]),
])
def test_filters_top_k_top_p_min_p(top_k, top_p, min_p, kept):
    assert _kept(PROBS, top_k, top_p, min_p) == [kept]


def test_filters_take_per_row_parameters_and_keep_surviving_logits():
    logits = PROBS.repeat(3, 1)
    out = filter_logits(logits, torch.tensor([1, 0, 0]), torch.tensor([1.0, 0.81, 1.0]), torch.tensor([0.0, 0.0, 0.2]))
    assert torch.isfinite(out).tolist() == [[True, False, False, False], [True, True, True, False],
                                            [True, True, True, False]]
    assert torch.equal(out[1, :3], logits[1, :3])  # filters mask, they do not change what stays


# --- sampling ---------------------------------------------------------------------------------------------------
def test_greedy_top_k_one_and_tiny_top_p_all_pick_the_argmax():
    torch.manual_seed(0)
    logits = torch.randn(6, 50)
    greedy, _ = Sampler()(logits, [row(temperature=0) for _ in range(6)])
    topk1, _ = Sampler()(logits, [row(temperature=1.5, top_k=1) for _ in range(6)])
    topp, _ = Sampler()(logits, [row(temperature=1.0, top_p=1e-6) for _ in range(6)])
    assert greedy.tolist() == logits.argmax(-1).tolist() == topk1.tolist() == topp.tolist()


def test_greedy_takes_the_argmax_of_the_penalised_logits():
    logits = torch.tensor([[3.0, 2.0, 0.0]])
    tokens, _ = Sampler()(logits, [row(output=[0], temperature=0, repetition_penalty=2.0)])
    assert tokens.tolist() == [1]  # 3 / 2 = 1.5 < 2


def _frequencies(logits: torch.Tensor, rows: int, **kw) -> torch.Tensor:
    torch.manual_seed(0)
    params = SamplingParams(**kw)  # shared, as by the n samples of one request
    tokens, _ = Sampler()(logits.repeat(rows, 1), [Row(params) for _ in range(rows)])
    return torch.bincount(tokens, minlength=logits.shape[-1]).float() / rows


@pytest.mark.parametrize("temperature", [0.5, 1.0, 3.0])
def test_sampled_frequencies_follow_softmax_of_logits_over_temperature(temperature):
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    freq = _frequencies(logits, 20000, temperature=temperature)
    expected = (logits[0] / temperature).softmax(-1)
    assert torch.allclose(freq, expected, atol=0.015), (freq, expected)


def test_min_p_and_top_k_restrict_what_is_sampled_and_renormalise():
    freq = _frequencies(PROBS, 20000, min_p=0.2)  # token 3 (p = 0.05 < 0.1) can never come out
    assert freq[3] == 0 and torch.allclose(freq[:3], torch.tensor([0.5, 0.3, 0.15]) / 0.95, atol=0.015)
    freq = _frequencies(PROBS, 20000, top_k=2)
    assert freq[2:].sum() == 0 and torch.allclose(freq[:2], torch.tensor([0.625, 0.375]), atol=0.015)


def test_seeded_rows_are_reproducible_whatever_else_is_in_the_batch():
    torch.manual_seed(1)
    logits = torch.randn(1, 1000)

    def run(batch_of: list[Row], at: int, steps: int = 6) -> list[int]:
        sampler, out = Sampler(), []
        for _ in range(steps):
            tokens, _ = sampler(logits.repeat(len(batch_of), 1), batch_of)
            out.append(int(tokens[at]))
            for r, t in zip(batch_of, tokens.tolist()):
                r.output_ids.append(t)
        return out

    alone = run([row(seed=7)], 0)
    assert run([row(seed=7)], 0) == alone
    assert run([row(), row(temperature=0), row(seed=7), row(seed=3, top_k=5)], 2) == alone
    assert run([row(seed=8)], 0) != alone
    assert len(set(alone)) > 1  # it really samples


def test_seeded_draw_matches_the_exponential_race_on_the_processed_distribution():
    logits = torch.tensor([[1.0, 0.5, 0.0, -0.5, 2.0]])
    r = row(seed=123, temperature=0.7, top_k=3)
    token, _ = Sampler()(logits, [r])
    probs = filter_logits(logits / 0.7, torch.tensor([3]), torch.tensor([1.0]), torch.tensor([0.0])).softmax(-1)
    noise = torch.empty_like(probs[0]).exponential_(generator=torch.Generator().manual_seed(123))
    assert token.tolist() == [int((probs[0] / noise).argmax())]


# --- logprobs ---------------------------------------------------------------------------------------------------
def test_logprobs_are_raw_log_softmax_with_top_k_and_the_chosen_token():
    logits = torch.tensor([[3.0, 2.0, 1.0, 0.0], [3.0, 2.0, 1.0, 0.0], [3.0, 2.0, 1.0, 0.0]])
    raw = torch.log_softmax(logits, -1)[0].tolist()
    rows = [
        row(temperature=0, logprobs=2),
        row(temperature=0, logprobs=1, output=[0], repetition_penalty=10.0),  # chosen: 1, outside the top-1
        row(temperature=0),  # did not ask: the chosen token only
    ]
    tokens, lps = Sampler()(logits, rows)
    assert tokens.tolist() == [0, 1, 0]
    assert lps[0] == pytest.approx({0: raw[0], 1: raw[1]}, rel=1e-6)
    assert lps[1] == pytest.approx({1: raw[1], 0: raw[0]}, rel=1e-6)  # raw, not penalised, values
    assert lps[2] == pytest.approx({0: raw[0]}, rel=1e-6)
    assert math.isclose(sum(math.exp(v) for v in raw), 1.0, rel_tol=1e-6)


def test_no_logprobs_unless_asked_and_zero_means_the_chosen_token_only():
    logits = torch.tensor([[0.0, 1.0]])
    assert Sampler()(logits, [row(temperature=0)])[1] is None
    _, lps = Sampler()(logits, [row(temperature=0, logprobs=0)])
    assert list(lps[0]) == [1]


def test_sampler_rebuilds_its_parameter_tensors_when_the_rows_change():
    sampler = Sampler()
    logits = torch.tensor([[0.0, 5.0, 1.0]]).repeat(2, 1)
    greedy, banned = row(temperature=0), row(temperature=0, output=[1, 1], presence_penalty=2.0, frequency_penalty=2.0)
    assert sampler(logits, [greedy, greedy])[0].tolist() == [1, 1]
    assert sampler(logits, [greedy, banned])[0].tolist() == [1, 2]  # 5 - 2 - 2 * 2 = -1 < 1
    assert sampler(logits[:1], [banned])[0].tolist() == [2]
