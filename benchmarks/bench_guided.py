"""What structured output costs: decode tokens/s with and without a JSON schema, and the sampler's step time.

    python benchmarks/bench_guided.py [--batch 1 8] [--tokens 96] [--rounds 3] [--threads 1] [--big-vocab PATH]

1. End to end, the bundled nano model on CPU: the same chart questions (thinking off), sampled with and without
   the chart schema, alternating rounds so a busy machine slows both alike; decode tokens/s is (tokens - batch) /
   (time - the time of a 1-token run), i.e. without the prefill. The nano model's step is a few ms, so any
   per-token cost weighs far more than beside a real model's.
2. The sampler alone, on random logits: one step for the batch with every row constrained vs none (alternating
   rounds, medians), on the nano vocabulary and, if given, a GLM-sized one (benchmarks/bench_grammar_libs.py
   writes it).
The ratios are constrained / plain.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from glmv import LLM, SamplingParams
from glmv.engine.guided import GrammarVocab
from glmv.engine.sampling import Row, Sampler
from glmv.model_path import BUNDLED
from glmv.world import sample

SCHEMA = {"type": "object", "additionalProperties": {"type": "integer", "minimum": 0, "maximum": 20}}
# For the sampler alone: long strings and numbers keep the matcher inside values, where masks cost the most.
LONG = {"type": "object", "additionalProperties": False, "required": ["items"],
        "properties": {"items": {"type": "array", "items": {"type": "object", "additionalProperties": False,
                                                            "required": ["name", "value"],
                                                            "properties": {"name": {"type": "string"},
                                                                           "value": {"type": "number"}}}}}}


def decode_rate(llm: LLM, batch: int, tokens: int, schema: dict | None, seed: int) -> tuple[float, int]:
    """(decode tokens/s, tokens generated) for one batch; `ignore_eos` keeps every row to `tokens`."""
    convs = [sample("chart_json", "test", i).messages() for i in range(batch)]
    extra = {"json_schema": schema} if schema else {}
    t = time.perf_counter()
    llm.chat(convs, SamplingParams(max_tokens=1, seed=seed, temperature=0.8, **extra), enable_thinking=False)
    prefill = time.perf_counter() - t
    t = time.perf_counter()
    outs = llm.chat(convs, SamplingParams(max_tokens=tokens, seed=seed, temperature=0.8, ignore_eos=True, **extra),
                    enable_thinking=False)
    total = time.perf_counter() - t
    n = sum(len(o.outputs[0].token_ids) for o in outs)
    return (n - batch) / max(total - prefill, 1e-9), n


def end_to_end(batches: list[int], tokens: int, rounds: int) -> None:
    llm = LLM(progress=False)
    decode_rate(llm, 1, 4, SCHEMA, 0)  # warm-up: the grammar vocabulary is built on first use
    print(f"\n== nano model, decode tokens/s (median of {rounds} rounds, {tokens} tokens per row, ignore_eos)")
    print(f"{'batch':>5} {'plain':>10} {'schema':>10} {'ratio':>7}")
    for b in batches:
        plain, guided = [], []
        for r in range(rounds):
            plain.append(decode_rate(llm, b, tokens, None, r)[0])
            guided.append(decode_rate(llm, b, tokens, SCHEMA, r)[0])
        p, g = statistics.median(plain), statistics.median(guided)
        print(f"{b:>5} {p:>10.1f} {g:>10.1f} {g / p:>6.2f}x")


def sampler_step(vocab: GrammarVocab, size: int, batch: int, steps: int, constrained: bool) -> float:
    """Mean seconds per sampler call for `batch` rows over `steps` steps of random logits."""
    params = SamplingParams(temperature=0.8, json_schema=LONG if constrained else None)
    rows = [Row(params, [vocab.assistant or 0, vocab.think_start or 0, vocab.think_end or 0]) for _ in range(batch)]
    sampler, gen = Sampler(vocab), torch.Generator().manual_seed(0)
    logits = [torch.randn(batch, size, generator=gen) for _ in range(steps)]
    t = time.perf_counter()
    for step in logits:
        tokens, _ = sampler(step, rows)
        for row, token in zip(rows, tokens.tolist()):
            row.output_ids.append(token)
    return (time.perf_counter() - t) / steps


def sampler_alone(batches: list[int], steps: int, rounds: int, big_vocab: Path | None) -> None:
    eos = json.loads((BUNDLED / "generation_config.json").read_text())["eos_token_id"]
    vocabs = {"nano (2,485)": GrammarVocab.from_pretrained(BUNDLED, eos)}
    if big_vocab is not None and big_vocab.exists():
        glm = big_vocab.parent / "glm_sized"
        glm.mkdir(exist_ok=True)
        (glm / "tokenizer.json").write_text(big_vocab.read_text())
        ids = {t["content"]: t["id"] for t in json.loads(big_vocab.read_text())["added_tokens"]}
        vocabs["GLM-sized (151,552)"] = GrammarVocab.from_pretrained(glm, [ids["<|endoftext|>"], ids["<|user|>"]])
    print(f"\n== sampler alone, ms per step (median of {rounds} rounds of {steps} steps, random logits, every row "
          "constrained or none)")
    print(f"{'vocabulary':>22} {'batch':>5} {'plain':>8} {'schema':>8} {'ratio':>7}")
    for name, vocab in vocabs.items():
        size = vocab.tokenizer.vocab_size
        for b in batches:
            plain, guided = [], []
            for _ in range(rounds):
                plain.append(sampler_step(vocab, size, b, steps, False))
                guided.append(sampler_step(vocab, size, b, steps, True))
            plain, guided = statistics.median(plain), statistics.median(guided)
            print(f"{name:>22} {b:>5} {plain * 1e3:>8.2f} {guided * 1e3:>8.2f} {guided / plain:>6.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--tokens", type=int, default=96)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--big-vocab", type=Path, default=Path("/tmp/glmv_bench_bpe_151552.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    end_to_end(args.batch, args.tokens, args.rounds)
    sampler_alone(args.batch + [32], 40, args.rounds, args.big_vocab)


if __name__ == "__main__":
    main()
