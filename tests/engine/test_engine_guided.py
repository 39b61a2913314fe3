"""Structured output at the sampler: whatever the logits, a constrained row writes what its grammar allows.

Random logits on the bundled nano model's tokenizer stand for "any model"; a bias towards closing characters that
grows with the length makes every rollout end (a grammar cannot make a model stop, only keep it valid).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest
import torch

from glmv.engine.guided import GrammarVocab, GuidedDecoding
from glmv.engine.sampling import Row, Sampler, SamplingParams
from glmv.errors import InputError
from glmv.config import GlmvConfig
from glmv.inputs.tokenizer import Tokenizer
from glmv.testing.schemas import ENFORCED, SCHEMAS

NANO = Path(__file__).resolve().parents[2] / "glmv" / "assets" / "nano"
ROLLOUTS = 50
MAX_TOKENS = 300



@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return Tokenizer.from_pretrained(NANO)


@pytest.fixture(scope="module")
def vocab(tok) -> GrammarVocab:
    return GrammarVocab.from_pretrained(NANO, tok.eos_token_ids)


def closing_tokens(tok: Tokenizer, size: int) -> torch.Tensor:
    """[size] float: 1 for tokens made only of characters that close a JSON value, -1 for tokens that open an
    object or array: the rollouts' drift toward an end (with digits split the nano vocabulary has few merged
    closers, and a drift toward closers alone kept reopening nested values past MAX_TOKENS)."""
    texts = [tok.decode([i]) for i in range(size)]
    return torch.tensor([1.0 if t and all(c in '"}],' for c in t) else -1.0 if ("{" in t or "[" in t) else 0.0
                         for t in texts])


@pytest.fixture(scope="module")
def width() -> int:
    """The model's logits width: the nano tokenizer's ids have a hole below the special tokens (as GLM's padded
    embedding does), so its vocab_size (a count of ids) is smaller."""
    return GlmvConfig.from_pretrained(NANO).text.vocab_size


@pytest.fixture(scope="module")
def closers(tok, width) -> torch.Tensor:
    return closing_tokens(tok, width)


def prompt(tok: Tokenizer, thinking: bool | None) -> list[int]:
    """The nano chat template's prompt ends: thinking on (the model chooses), off (`<think></think>`), or an open
    `<think>` (a template that starts the answer inside the block)."""
    tail = {True: "<|assistant|>\n", False: "/nothink<|assistant|>\n<think></think>\n", None: "<|assistant|>\n<think>"}
    return tok.encode("[gMASK]<sop><|user|>\nDescribe it." + tail[thinking])


def rollouts(sampler: Sampler, rows: list[Row], vocab: GrammarVocab, closers: torch.Tensor, seed: int = 0,
             bias_ids: list[int] = ()) -> None:
    """Run rows like the engine does: sample the live ones together, append, stop on eos or MAX_TOKENS."""
    gen = torch.Generator().manual_seed(seed)
    eos = torch.tensor(vocab.eos_token_ids)
    for step in range(MAX_TOKENS):
        live = [r for r in rows if not (r.output_ids and r.output_ids[-1] in vocab.eos_token_ids)]
        if not live:
            return
        logits = torch.randn(len(live), closers.shape[0], generator=gen) * 2 + closers * (step / 20)
        logits[:, eos] += step / 20
        logits[:, list(bias_ids)] += 10
        tokens, _ = sampler(logits, live)
        for r, t in zip(live, tokens.tolist()):
            r.output_ids.append(t)
    raise AssertionError("a rollout did not end")


def answer(tok: Tokenizer, row: Row, vocab: GrammarVocab) -> str:
    """The text after any thinking, without the final eos."""
    ids = row.output_ids
    if vocab.think_end in ids:
        ids = ids[ids.index(vocab.think_end) + 1 :]
    assert ids[-1] in vocab.eos_token_ids
    return tok.decode(ids[:-1])


# --- parameters -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kw,msg", [
    ({"json_schema": "{"}, "json_schema is not valid JSON"), ({"json_schema": [1]}, "json_schema must be a JSON object"),
    ({"json_schema": {"type": "bogus"}}, "json_schema cannot be used.*bogus"),
    ({"json_schema": {"type": "integer", "minimum": 5, "maximum": 1}}, "Unsatisfiable"),
    ({"json_schema": {"type": "string", "pattern": "[a-"}}, "unclosed character class"),
    ({"json_schema": {"type": "array", "uniqueItems": True}}, "uniqueItems"),  # refused, not silently ignored
    ({"json_schema": {"$ref": "#/$defs/Missing"}}, "does not exist"),
    ({"regex": "[a-"}, "regex cannot be used"), ({"regex": ""}, "regex must be"),
    ({"choice": []}, "choice must be"), ({"choice": ["a", 1]}, "choice must be"),
    ({"grammar": "start: missing_rule"}, "grammar cannot be used"), ({"grammar": " "}, "grammar must be"),
    ({"json_object": "yes"}, "json_object must be"),
    ({"json_schema": {"enum": ["x" * 70_000]}}, "too large"), ({"regex": "a" * 70_000}, "too large"),
    ({"json_object": True, "regex": "a"}, "at most one"),
])
def test_bad_constraints_are_input_errors(kw, msg):
    with pytest.raises(InputError, match=msg):
        SamplingParams(**kw)


def test_constraints_are_normalised():
    a = SamplingParams(json_schema='{"type": "object", "required": ["x"]}')
    b = SamplingParams(json_schema={"type": "object", "required": ["x"]})
    assert a.json_schema == b.json_schema and a.structured == b.structured  # text or dict: one cache key
    assert SamplingParams(choice=("y", "n")).choice == ["y", "n"]
    assert SamplingParams().structured is None and not SamplingParams().constrained
    assert SamplingParams(grammar='root ::= "yes" | "no"').structured.kind == "grammar"  # GBNF is accepted too


def test_a_constrained_row_needs_the_vocabulary():
    with pytest.raises(InputError, match="vocabulary"):
        Sampler()(torch.zeros(1, 10), [Row(SamplingParams(json_object=True))])


# --- any model writes valid output ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ENFORCED)
def test_every_rollout_parses_and_validates(name, tok, vocab, closers):
    """50 rows (half greedy, half sampled with seeds) from random logits: every answer validates."""
    schema = SCHEMAS[name]
    rows = [Row(SamplingParams(json_schema=schema, temperature=0 if i % 2 else 1.0, seed=i, max_tokens=MAX_TOKENS),
                prompt(tok, False)) for i in range(ROLLOUTS)]
    rollouts(Sampler(vocab), rows, vocab, closers, seed=list(ENFORCED).index(name))
    texts = [answer(tok, r, vocab) for r in rows]
    for text in texts:
        jsonschema.validate(json.loads(text), schema)
    assert len(set(texts)) > 2  # the rows really wrote different things
    assert all(", " in t or ": " in t for t in texts)  # the one JSON layout: ", " and ": "


def test_properties_come_in_the_schemas_order(tok, vocab, closers):
    """As with OpenAI: a field meant to be written first (say, the reasoning before the answer) is written first."""
    schema = {"type": "object", "additionalProperties": False, "required": ["zeta", "alpha", "mid"],
              "properties": {"zeta": {"type": "integer"}, "alpha": {"type": "boolean"}, "mid": {"enum": ["x"]}}}
    rows = [Row(SamplingParams(json_schema=schema, seed=i), prompt(tok, False)) for i in range(5)]
    rollouts(Sampler(vocab), rows, vocab, closers)
    assert all(list(json.loads(answer(tok, r, vocab))) == ["zeta", "alpha", "mid"] for r in rows)


def test_json_object_regex_and_choice(tok, vocab, closers):
    choices = ['say "yes"', "naïve → ok", "back\\slash", "no"]
    regex = r"[A-Z]{2}-\d{3}( [a-z]+)?"
    rows = ([Row(SamplingParams(json_object=True, seed=i), prompt(tok, False)) for i in range(10)]
            + [Row(SamplingParams(regex=regex, seed=i), prompt(tok, False)) for i in range(10)]
            + [Row(SamplingParams(choice=choices, temperature=0 if i % 2 else 1, seed=i), prompt(tok, False))
               for i in range(20)])
    rollouts(Sampler(vocab), rows, vocab, closers)
    texts = [answer(tok, r, vocab) for r in rows]
    assert all(isinstance(json.loads(t), dict) for t in texts[:10])
    assert all(re.fullmatch(regex, t) for t in texts[10:20]), texts[10:20]
    assert set(texts[20:]) <= set(choices) and len(set(texts[20:])) > 1


def test_lark_grammar(tok, vocab, closers):
    grammar = 'start: "move(" NUM ", " NUM ")"\nNUM: /[0-9]{1,3}/'
    rows = [Row(SamplingParams(grammar=grammar, seed=i), prompt(tok, False)) for i in range(10)]
    rollouts(Sampler(vocab), rows, vocab, closers)
    assert all(re.fullmatch(r"move\(\d{1,3}, \d{1,3}\)", answer(tok, r, vocab)) for r in rows)


def test_a_vocabulary_with_holes_and_padded_logits(tmp_path):
    """The test tokenizer: special tokens at scattered ids (unused ids between them), and logits wider than the
    vocabulary, as a checkpoint's padded vocab_size gives. No hole nor padding id is ever chosen."""
    from glmv.testing.tiny_tokenizer import TINY_VOCAB_SIZE, make_tiny_tokenizer

    special = make_tiny_tokenizer(tmp_path)
    tok = Tokenizer.from_pretrained(tmp_path)
    vocab = GrammarVocab.from_pretrained(tmp_path, [special["<|endoftext|>"], special["<|user|>"]])
    real = {i for i in range(TINY_VOCAB_SIZE) if tok.id_to_token(i) is not None}
    rows = [Row(SamplingParams(json_schema=SCHEMAS["required, optional"], seed=i), tok.encode("hi")) for i in range(10)]
    rollouts(Sampler(vocab), rows, vocab, closing_tokens(tok, TINY_VOCAB_SIZE))
    for r in rows:
        assert set(r.output_ids) <= real
        jsonschema.validate(json.loads(answer(tok, r, vocab)), SCHEMAS["required, optional"])


def test_a_complete_answer_allows_only_the_stop_tokens(tok, vocab):
    schema = {"type": "object", "additionalProperties": False, "required": ["a"], "properties": {"a": {"const": 1}}}
    done = Row(SamplingParams(json_schema=schema), prompt(tok, False), tok.encode('{"a": 1}'))
    own = Row(SamplingParams(json_schema=schema, stop_token_ids=[5]), prompt(tok, False), tok.encode('{"a": 1}'))
    allowed = allowed_ids(vocab, [done, own])
    assert allowed[0] == set(vocab.eos_token_ids)
    assert allowed[1] == set(vocab.eos_token_ids) | {5}  # a row's own stop ids end it too


# --- unconstrained rows are untouched ---------------------------------------------------------------------------
def test_unconstrained_rows_are_bit_identical_beside_constrained_ones(tok, vocab, width):
    """The same batch twice, with and without grammars on rows 1 and 3: rows 0, 2, 4 (greedy, seeded with
    penalties and filters, unseeded) draw exactly the same tokens and logprobs."""
    plain = [SamplingParams(temperature=0, logprobs=2),
             SamplingParams(temperature=0.8, seed=3),
             SamplingParams(temperature=1.2, top_k=50, top_p=0.9, repetition_penalty=1.3, presence_penalty=0.5, seed=4),
             SamplingParams(temperature=0.7),
             SamplingParams(temperature=1.0, min_p=0.05, frequency_penalty=0.4, logprobs=1)]
    guided = {1: SamplingParams(temperature=0.8, seed=3, json_object=True), 3: SamplingParams(temperature=0.7, regex="[a-z]+")}

    def run(params: list[SamplingParams]):
        torch.manual_seed(0)  # the unseeded rows' noise
        gen = torch.Generator().manual_seed(1)
        rows, sampler = [Row(p, prompt(tok, False)) for p in params], Sampler(vocab)
        tokens, logprobs = [], []
        for _ in range(12):
            t, lp = sampler(torch.randn(len(rows), width, generator=gen) * 3, rows)
            for r, x in zip(rows, t.tolist()):
                r.output_ids.append(x)
            tokens.append(t)
            logprobs.append(lp)
        return torch.stack(tokens), logprobs

    base_tokens, base_lp = run(plain)
    mixed_tokens, mixed_lp = run([guided.get(i, p) for i, p in enumerate(plain)])
    keep = [0, 2, 4]
    assert torch.equal(base_tokens[:, keep], mixed_tokens[:, keep])
    assert [[lp[i] for i in keep] for lp in base_lp] == [[lp[i] for i in keep] for lp in mixed_lp]
    assert not torch.equal(base_tokens[:, [1, 3]], mixed_tokens[:, [1, 3]])  # the grammars did act


def test_logprobs_are_the_models_own(tok, vocab, width):
    """Logprobs come from the raw logits, before the mask (as before any penalty): the model's view."""
    logits = torch.randn(1, width, generator=torch.Generator().manual_seed(0))
    tokens, lp = Sampler(vocab)(logits, [Row(SamplingParams(temperature=0, json_object=True, logprobs=3), prompt(tok, False))])
    raw = logits.log_softmax(-1)[0]
    assert tok.decode([int(tokens[0])]).startswith("{")  # the mask chose the token...
    assert lp[0][int(tokens[0])] == pytest.approx(float(raw[tokens[0]]))  # ...its logprob is the model's
    assert set(lp[0]) >= set(raw.topk(3).indices.tolist())


# --- thinking ---------------------------------------------------------------------------------------------------
def allowed_ids(vocab: GrammarVocab, rows: list[Row]) -> list[set[int]]:
    masked = GuidedDecoding(vocab).apply(torch.zeros(len(rows), vocab.tokenizer.vocab_size), rows, list(range(len(rows))))
    return [set(torch.isfinite(m).nonzero().flatten().tolist()) for m in masked]


def test_thinking_comes_before_the_grammar(tok, vocab, width):
    params = SamplingParams(json_object=True)
    on, off, opened = (Row(params, prompt(tok, t)) for t in (True, False, None))
    raw = Row(params, tok.encode("The answer is"))
    first_on, first_off, first_open, first_raw = allowed_ids(vocab, [on, off, opened, raw])
    # thinking off, or a raw text with no assistant turn to think in: the answer starts at once
    assert tok.encode("{")[0] in first_off and all(tok.decode([i]).startswith("{") for i in first_off)
    assert first_raw == first_off
    # thinking on: the model may open <think> or answer at once; an open block: it is thinking
    assert first_on == first_off | {vocab.think_start}
    assert first_open == set(range(width)) - set(vocab.eos_token_ids)
    # inside the block anything but eos goes, typed tags included; after </think> the grammar applies
    on.output_ids = [vocab.think_start, *tok.encode("red, not {json} <|begin_of_box|>")]
    assert allowed_ids(vocab, [on])[0] == set(range(width)) - set(vocab.eos_token_ids)
    on.output_ids.append(vocab.think_end)
    assert allowed_ids(vocab, [on])[0] == first_off


def test_thinking_rows_answer_with_valid_json(tok, vocab, closers):
    """Rows that think (pushed to open <think> and, later, to close it) still answer with valid JSON."""
    schema = SCHEMAS["enum and const"]
    rows = [Row(SamplingParams(json_schema=schema, seed=i), prompt(tok, True)) for i in range(10)]
    sampler = Sampler(vocab)
    for r in rows:  # the model opened and wrote some thinking; the sampler joins from here
        r.output_ids = [vocab.think_start, *tok.encode("The colour is red.")]
    rollouts(sampler, rows, vocab, closers, bias_ids=[vocab.think_end])
    for r in rows:
        assert vocab.think_end in r.output_ids
        jsonschema.validate(json.loads(answer(tok, r, vocab)), schema)


def test_a_new_sampler_catches_up_with_a_rows_output(tok, vocab):
    """Row state follows output_ids: a row re-sampled by a fresh sampler (the engine's dry run, a preempted and
    resumed row) continues from where its output is."""
    row = Row(SamplingParams(json_schema=SCHEMAS["required, optional"]), prompt(tok, False), tok.encode('{"a": true'))
    after = allowed_ids(vocab, [row])[0]
    assert tok.encode("}")[0] in after and tok.encode("1")[0] not in after and tok.encode("{")[0] not in after
