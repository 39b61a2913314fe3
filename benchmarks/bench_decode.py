"""Decode speed on the bundled nano model (or --model): glmv eager, glmv with the compiled decode step,
transformers `generate`, and the floor: a tight loop of the same matmuls one decode step does (attention
projections, dense / shared / the routed experts' MLPs, router, LM head), at batch 1 and 8. Greedy, fixed
lengths; the variants alternate within each repeat so a busy machine slows all alike; medians are printed with
ratios. Greedy ids of the three generators are compared (they must be identical).

    python benchmarks/bench_decode.py [--threads 2] [--new 64] [--repeats 3] [--model PATH]
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace

import torch
import torch.nn.functional as F

from glmv import LLM, SamplingParams
from glmv.model_path import resolve_model_path


def matmul_floor(model, batch: int) -> callable:
    """One decode step's matmuls and nothing else: every projection the step multiplies by, with the routed
    experts of each MoE layer taken as its first `top-k` (one token picks k experts)."""
    cfg = model.config.text
    weights = []
    for layer in model.language_model.layers:
        attn, mlp = layer.self_attn, layer.mlp
        weights += [attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight, attn.o_proj.weight]
        if hasattr(mlp, "experts"):
            weights += [mlp.gate.weight, mlp.shared_experts.gate_proj.weight, mlp.shared_experts.up_proj.weight,
                        mlp.shared_experts.down_proj.weight]
            for e in range(cfg.num_experts_per_tok):
                weights += [mlp.experts.gate_up_proj[e], mlp.experts.down_proj[e]]
        else:
            weights += [mlp.gate_proj.weight, mlp.up_proj.weight, mlp.down_proj.weight]
    weights.append(model.lm_head.weight)
    xs = {w.shape[1]: torch.randn(batch, w.shape[1], dtype=w.dtype) for w in weights}

    def run() -> None:
        with torch.inference_mode():
            for w in weights:
                F.linear(xs[w.shape[1]], w)

    return run, len(weights)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="a GLM-V checkpoint (default: the bundled nano model)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--new", type=int, default=64, help="tokens decoded per run")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import transformers

    path = resolve_model_path(args.model)
    t0 = time.perf_counter()
    eager = LLM(path, progress=False)
    compiled = LLM(path, progress=False, compile=True)
    print(f"compiled LLM ready in {time.perf_counter() - t0:.1f} s (includes torch.compile warm-up)")
    ref = transformers.AutoModelForImageTextToText.from_pretrained(path, dtype=torch.float32).eval()
    # glmv's ignore_eos decodes through end tokens as any other; min_new_tokens would instead forbid them
    ref.generation_config.eos_token_id = None
    gen = torch.Generator().manual_seed(0)
    print(f"{path.name}: {args.new} new tokens, {args.threads} threads; ms per decode step (median of {args.repeats})")
    print(f"{'batch':>5} {'transformers':>13} {'eager':>8} {'compiled':>9} {'matmuls':>8}   "
          f"{'compiled vs tf':>14} {'vs eager':>9} {'vs matmuls':>10}  ids equal")
    for batch in (1, 8):
        prompts = torch.randint(10, 200, (batch, 16), generator=gen)
        params = SamplingParams(temperature=0, max_tokens=args.new, ignore_eos=True)

        def tf_ids(n: int) -> list[list[int]]:
            with torch.inference_mode():
                out = ref.generate(input_ids=prompts, attention_mask=torch.ones_like(prompts), max_new_tokens=n,
                                   do_sample=False, pad_token_id=0)
            return out[:, prompts.shape[1]:].tolist()

        def glmv_ids(llm: LLM, n: int) -> list[list[int]]:
            return [o.outputs[0].token_ids for o in llm.generate(prompts.tolist(), replace(params, max_tokens=n))]

        floor, n_mm = matmul_floor(eager.model, batch)
        runs = {"transformers": tf_ids, "eager": lambda n: glmv_ids(eager, n),
                "compiled": lambda n: glmv_ids(compiled, n)}
        same = len({str(f(args.new)) for f in runs.values()}) == 1
        per_step = {name: [] for name in (*runs, "matmuls")}
        for _ in range(args.repeats):
            for name, f in runs.items():  # a step's cost: the full run minus a 1-token run (prefill + sampling once)
                t = time.perf_counter(); f(1); one = time.perf_counter() - t
                t = time.perf_counter(); f(args.new); full = time.perf_counter() - t
                per_step[name].append((full - one) / (args.new - 1))
            t = time.perf_counter()
            for _ in range(20):
                floor()
            per_step["matmuls"].append((time.perf_counter() - t) / 20)
        ms = {name: 1e3 * statistics.median(v) for name, v in per_step.items()}
        print(f"{batch:5d} {ms['transformers']:13.2f} {ms['eager']:8.2f} {ms['compiled']:9.2f} {ms['matmuls']:8.2f}   "
              f"{ms['transformers'] / ms['compiled']:13.2f}x {ms['eager'] / ms['compiled']:8.2f}x "
              f"{ms['compiled'] / ms['matmuls']:9.2f}x  {same}")
    print(f"(the matmul floor is {n_mm} matmuls; 'vs matmuls' is compiled ms / floor ms, 1.0 = nothing but matmuls)")


if __name__ == "__main__":
    main()
