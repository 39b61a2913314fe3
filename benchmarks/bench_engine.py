"""The paged engine against the same engine without prefix caching (how the previous design served an OpenAI
client, which resends the whole conversation each turn) and against transformers `generate`, on one small MoE
checkpoint, in one run:

- multi-turn: 5 turns of one conversation with an image, each sent whole (greedy, 16 new tokens a turn);
- 32 clients: 32 conversations at once (greedy, 32 new tokens each), output tokens/s;
- KV memory: what glmv allocates (its budget) vs the size of transformers' cache after the 32-client run;
- chunked prefill: the largest gap between tokens of a running stream while a 1,500-token prompt joins (with a
  256-token step budget), next to that prompt's unchunked prefill time.

    python benchmarks/bench_engine.py [--threads 2] [--repeats 3]

Variants alternate within each repeat so that a busy machine slows all alike; medians are printed, with ratios
over transformers (>1: faster than transformers).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch
from PIL import Image

from glmv import LLM, SamplingParams
from glmv.testing.tiny_checkpoint import BENCH_TEXT, BENCH_VISION, make_tiny_model_dir

TURNS, TURN_TOKENS, CLIENTS, CLIENT_TOKENS = 5, 16, 32, 32


def conversation(turns: int) -> list[list[dict]]:
    """The whole conversation as sent at each turn (answers filled with fixed text: the same for every variant)."""
    image = Image.new("RGB", (224, 168), (40, 120, 200))
    messages = [{"role": "user", "content": [{"type": "image", "image": image},
                                             {"type": "text", "text": "Describe this picture."}]}]
    out = []
    for t in range(turns):
        out.append(list(messages))
        messages += [{"role": "assistant", "content": f"Answer number {t}: it is a blue picture."},
                     {"role": "user", "content": f"Question {t + 1}: tell me more about it, please."}]
    return out


def clients(n: int) -> list[list[dict]]:
    return [[{"role": "user", "content": f"Client {i} asks: " + "what about this? " * (1 + i % 5)}] for i in range(n)]


class Transformers:
    def __init__(self, path: str, llm: LLM):
        import transformers

        self.model = transformers.AutoModelForImageTextToText.from_pretrained(path).eval()
        self.llm = llm  # glmv's processor builds the inputs (identical to transformers', tested)
        self.kv_bytes = 0

    def chat(self, convs: list[list[dict]], new: int) -> int:
        inputs = self.llm.processor.apply_chat_template(convs)
        inputs = {k: v for k, v in inputs.items() if v is not None}
        with torch.inference_mode():
            out = self.model.generate(**inputs, max_new_tokens=new, min_new_tokens=new, do_sample=False,
                                      pad_token_id=0, return_dict_in_generate=True)
        cache = out.past_key_values
        self.kv_bytes = sum(t.numel() * t.element_size() for layer in cache.layers for t in (layer.keys, layer.values))
        return len(convs) * new


class Glmv:
    def __init__(self, path: str, prefix_caching: bool):
        self.llm = LLM(path, progress=False)
        self.llm.engine.blocks.prefix_caching = prefix_caching

    def chat(self, convs: list[list[dict]], new: int) -> int:
        params = SamplingParams(temperature=0, max_tokens=new, ignore_eos=True)
        return sum(len(o.outputs[0].token_ids) for o in self.llm.chat(convs, params))


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    path = make_tiny_model_dir(tempfile.mkdtemp(), "glm4v_moe", text=BENCH_TEXT, vision=BENCH_VISION)
    paged, plain = Glmv(path, True), Glmv(path, False)
    variants = {"glmv paged + prefix cache": paged, "glmv, no prefix cache": plain,
                "transformers": Transformers(path, paged.llm)}
    turns, many = conversation(TURNS), clients(CLIENTS)
    multi = {k: [] for k in variants}
    rate = {k: [] for k in variants}
    for _ in range(args.repeats + 1):  # the first round warms up
        for name, v in variants.items():
            if isinstance(v, Glmv):
                v.llm.engine.weights_changed()  # each multi-turn run starts with an empty prefix cache
            multi[name].append(timed(lambda: [v.chat([conv], TURN_TOKENS) for conv in turns]))
            seconds = timed(lambda: v.chat(many, CLIENT_TOKENS))
            rate[name].append(CLIENTS * CLIENT_TOKENS / seconds)
    med = lambda xs: statistics.median(xs[1:])
    base_multi, base_rate = med(multi["transformers"]), med(rate["transformers"])
    print(f"{sum(p.numel() for p in paged.llm.model.parameters()) / 1e6:.1f}M-parameter glm4v_moe, "
          f"{args.threads} threads, {args.repeats} repeats (medians)")
    print(f"{'variant':28} {'5 turns s':>10} {'x':>6} {'32 clients tok/s':>17} {'x':>6}")
    for name in variants:
        print(f"{name:28} {med(multi[name]):10.3f} {base_multi / med(multi[name]):5.2f}x "
              f"{med(rate[name]):17.1f} {med(rate[name]) / base_rate:5.2f}x")
    kv = paged.llm.engine.kv
    glmv_kv = sum(t.numel() * t.element_size() for t in kv.k + kv.v)
    used = paged.llm.engine.blocks.peak_used * glmv_kv / (kv.num_blocks + 1)
    print(f"KV memory: glmv reserves {glmv_kv / 2**20:.1f} MiB once (its budget, {kv.num_blocks} blocks) and held at "
          f"most {used / 2**20:.1f} MiB; transformers' cache after the 32-client run: "
          f"{variants['transformers'].kv_bytes / 2**20:.1f} MiB")
    blocks = paged.llm.engine.blocks
    print(f"prefix cache: {blocks.hits} of {blocks.queries} prompt tokens served from it over the whole run")
    gap, prefill = join_gap(path, args.repeats)
    print(f"chunked prefill: largest inter-token gap of a running stream while a {JOIN_PROMPT}-token prompt joins "
          f"{gap * 1e3:.1f} ms; that prompt's unchunked prefill {prefill * 1e3:.1f} ms ({gap / prefill:.2f}x)")


JOIN_PROMPT, JOIN_BUDGET = 1500, 256


def join_gap(path: str, repeats: int) -> tuple[float, float]:
    """(median over repeats of the largest gap between a running stream's tokens while a long prompt is
    prefilled in JOIN_BUDGET-token chunks, median time of that prompt's prefill in one piece)."""
    llm = LLM(path, progress=False, max_num_batched_tokens=JOIN_BUDGET)
    engine = llm.engine
    params = SamplingParams(temperature=0, max_tokens=1, ignore_eos=True)
    gaps, prefills = [], []
    for r in range(repeats + 1):
        engine.weights_changed()  # no prefix hits: the long prompt is computed every time
        long = llm.prepare_prompt([20 + (i + r) % 9 for i in range(JOIN_PROMPT)], params)
        stream = llm.prepare_prompt([11, 12, 13], SamplingParams(temperature=0, max_tokens=10_000, ignore_eos=True))
        engine.add(stream.seqs[0])
        engine.step()  # the stream is decoding
        engine.add(long.seqs[0])
        last, worst = time.perf_counter(), 0.0
        while not long.seqs[0].output_ids:
            engine.step()
            now = time.perf_counter()
            worst, last = max(worst, now - last), now
        stream.seqs[0].finish_reason = "abort"
        engine.step()
        engine.scheduler.max_num_batched_tokens = 10 * JOIN_PROMPT  # the same prompt in one piece
        engine.weights_changed()
        alone = llm.prepare_prompt([20 + (i + r) % 9 for i in range(JOIN_PROMPT)], params)
        prefills.append(timed(lambda: llm.run_requests([alone])))
        engine.scheduler.max_num_batched_tokens = JOIN_BUDGET
        gaps.append(worst)
    return statistics.median(gaps[1:]), statistics.median(prefills[1:])


if __name__ == "__main__":
    main()
