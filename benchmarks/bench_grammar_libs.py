"""llguidance vs xgrammar on CPU: JSON-schema coverage and per-token mask time, the numbers behind glmv's choice.

    pip install llguidance xgrammar jsonschema   # xgrammar is not a glmv dependency (it pulls in transformers)
    python benchmarks/bench_grammar_libs.py [--rollouts 20] [--big-vocab PATH]

Two vocabularies: the bundled nano model's tokenizer (2,485 ids) and a GLM-sized one (151,552 ids) - a byte-level
BPE trained here, offline, on the installed Python sources, with GLM-V's added tokens (real checkpoints cannot be
downloaded on our machines; the mask cost depends on the vocabulary's size and shape, not on which text trained
it). Each schema gets `--rollouts` generations from random logits (with a bias towards closing characters that
grows with the length, so a rollout ends) through each library's mask; every output is checked with `jsonschema`.
Both libraries get the same JSON layout: separators ", " and ": ", no free whitespace.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import jsonschema
import numpy as np
import torch

from glmv.testing.schemas import SCHEMAS

NANO = Path(__file__).resolve().parents[1] / "glmv" / "assets" / "nano" / "tokenizer.json"
SEPARATORS = (", ", ": ")
MAX_TOKENS = 400



def big_tokenizer(path: Path) -> Path:
    """A 151,552-id byte-level BPE (GLM-4.5V's vocabulary size) trained on the installed Python sources."""
    if path.exists():
        return path
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    specials = [t["content"] for t in json.loads(NANO.read_text())["added_tokens"]]
    files = sorted(str(p) for root in {Path(json.__file__).parents[1], Path(torch.__file__).parents[1]}
                   for p in root.rglob("*.py") if p.stat().st_size < 400_000)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=151_552 - len(specials), min_frequency=2, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    print(f"training a GLM-sized BPE on {len(files)} Python files (about a minute)...", flush=True)
    tok.train(files[:16000], trainer)
    tok.add_special_tokens(specials)
    tok.save(str(path))
    return path


class Llg:
    name = "llguidance"

    def __init__(self, tokenizer_json: str, eos: list[int]):
        import llguidance

        self.llg = llguidance
        self.tok = llguidance.LLTokenizer(tokenizer_json, eos_token=eos)

    def compile(self, schema: dict):
        options = {"whitespace_flexible": False, "item_separator": SEPARATORS[0], "key_separator": SEPARATORS[1]}
        grammar = self.llg.LLMatcher.grammar_from_json_schema(schema, overrides=options)
        error = self.llg.LLMatcher.validate_grammar(grammar, self.tok)
        if error:
            raise ValueError(error)
        return self.llg.LLMatcher(self.tok, grammar)

    def start(self, compiled):
        return compiled.deep_copy()

    def mask(self, m, out: torch.Tensor) -> None:
        m.unsafe_compute_mask_ptr(out.data_ptr(), out.numel() * 4)

    def accept(self, m, token: int) -> None:
        assert m.consume_token(token), m.get_error()

    def done(self, m) -> bool:
        return m.is_stopped()


class Xgr:
    name = "xgrammar"

    def __init__(self, tokenizer_json: str, eos: list[int]):
        import xgrammar

        self.xgr = xgrammar
        spec = json.loads(tokenizer_json)
        vocab = dict(spec["model"]["vocab"]) | {t["content"]: t["id"] for t in spec.get("added_tokens", [])}
        encoded = [""] * (max(vocab.values()) + 1)
        for text, i in vocab.items():
            encoded[i] = text
        meta = xgrammar.TokenizerInfo._detect_metadata_from_hf(tokenizer_json)
        info = xgrammar.TokenizerInfo(encoded, meta["vocab_type"], vocab_size=len(encoded), stop_token_ids=eos,
                                      add_prefix_space=meta["add_prefix_space"])
        self.compiler = xgrammar.GrammarCompiler(info, cache_enabled=False)

    def compile(self, schema: dict):
        # strict_mode=False: follow the schema as written (an object without additionalProperties stays open)
        return self.compiler.compile_json_schema(json.dumps(schema), any_whitespace=False, separators=SEPARATORS,
                                                 strict_mode=False)

    def start(self, compiled):
        return self.xgr.GrammarMatcher(compiled)

    def mask(self, m, out: torch.Tensor) -> None:
        m.fill_next_token_bitmask(out[None])

    def accept(self, m, token: int) -> None:
        assert m.accept_token(token)

    def done(self, m) -> bool:
        return m.is_terminated()


def closers(tokenizer_json: str) -> torch.Tensor:
    """[V] bool: tokens made only of characters that close a JSON value (so biased rollouts end)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(tokenizer_json)
    size = tok.get_vocab_size(with_added_tokens=True)
    return torch.tensor([bool(s) and all(c in '"}],' for c in s)
                         for s in (tok.decode([i]) for i in range(size))])


def rollout(lib, compiled, close: torch.Tensor, eos: list[int], decode, gen: torch.Generator) -> tuple[str, bool, list[float]]:
    """(text, whether it ended with eos, seconds per mask) of one generation from biased random logits."""
    vocab = close.shape[0]
    m = lib.start(compiled)
    words = torch.zeros((vocab + 31) // 32, dtype=torch.int32)
    shifts = torch.arange(32, dtype=torch.int32)
    ids, times = [], []
    for step in range(MAX_TOKENS):
        t = time.perf_counter()
        lib.mask(m, words)
        times.append(time.perf_counter() - t)
        allowed = ((words[:, None] >> shifts) & 1).flatten()[:vocab].bool()
        logits = torch.randn(vocab, generator=gen) * 2 + close * (step / 20)
        logits[eos] += step / 20
        token = int(logits.masked_fill(~allowed, float("-inf")).argmax())
        if token in eos:
            return decode(ids), True, times
        lib.accept(m, token)
        ids.append(token)
    return decode(ids), False, times


def run(lib_cls, tokenizer_json: str, eos: list[int], rollouts: int) -> dict:
    from tokenizers import Tokenizer

    decode = Tokenizer.from_str(tokenizer_json).decode
    t = time.perf_counter()
    lib = lib_cls(tokenizer_json, eos)
    setup = time.perf_counter() - t
    close = closers(tokenizer_json)
    gen = torch.Generator().manual_seed(0)
    rows, all_times = {}, []
    for name, schema in SCHEMAS.items():
        t = time.perf_counter()
        try:
            compiled = lib.compile(schema)
        except Exception as e:  # a library that refuses a schema: reported, not fatal
            rows[name] = ("refused", str(e).splitlines()[0][:60], 0.0)
            continue
        compile_ms = (time.perf_counter() - t) * 1000
        valid, bad = 0, ""
        for _ in range(rollouts):
            text, ended, times = rollout(lib, compiled, close, eos, decode, gen)
            all_times += times
            try:
                jsonschema.validate(json.loads(text), schema, format_checker=jsonschema.FormatChecker())
                valid += 1
            except ValueError as e:  # json.JSONDecodeError
                bad = f"{'invalid JSON' if ended else f'cut at {MAX_TOKENS} tokens'} ({e}): {text[:60]!r}"
            except jsonschema.ValidationError as e:
                bad = f"schema violated ({e.message[:50]}): {text[:60]!r}"
        rows[name] = (f"{valid}/{rollouts}", bad, compile_ms)
    us = np.array(all_times) * 1e6
    return {"setup_s": setup, "rows": rows, "mean_us": us.mean(), "p50_us": np.percentile(us, 50),
            "p99_us": np.percentile(us, 99), "tokens": len(us)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rollouts", type=int, default=20)
    ap.add_argument("--big-vocab", type=Path, default=Path("/tmp/glmv_bench_bpe_151552.json"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    libs = []
    for cls, module in ((Llg, "llguidance"), (Xgr, "xgrammar")):
        try:
            __import__(module)
            libs.append(cls)
        except ImportError:
            print(f"{module} is not installed: skipped (pip install {module})")
    vocabs = {"nano (2,485)": NANO.read_text(), "GLM-sized BPE (151,552)": big_tokenizer(args.big_vocab).read_text()}
    for vname, tokenizer_json in vocabs.items():
        ids = {t["content"]: t["id"] for t in json.loads(tokenizer_json)["added_tokens"]}
        eos = [ids[t] for t in ("<|endoftext|>", "<|user|>", "<|observation|>")]  # GLM-4.5V's eos ids
        results = {lib.name: run(lib, tokenizer_json, eos, args.rollouts) for lib in libs}
        print(f"\n== vocabulary: {vname}, {args.rollouts} rollouts per schema, 1 thread")
        names = list(results)
        print(f"{'schema':26}" + "".join(f"{n + ' valid':>18}{'compile ms':>12}" for n in names))
        for schema in SCHEMAS:
            line = f"{schema:26}"
            for n in names:
                valid, _, ms = results[n]["rows"][schema]
                line += f"{valid:>18}{ms:>12.1f}"
            print(line)
        for n in names:
            r = results[n]
            print(f"{n}: tokenizer setup {r['setup_s'] * 1000:.0f} ms; mask per token mean {r['mean_us']:.0f} us, "
                  f"p50 {r['p50_us']:.0f} us, p99 {r['p99_us']:.0f} us over {r['tokens']} tokens")
            for schema, (valid, example, _) in r["rows"].items():
                if example:
                    print(f"  {schema}: {valid}; {example}")


if __name__ == "__main__":
    sys.exit(main())
