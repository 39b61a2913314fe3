"""Decode speed on the bundled nano model (or --model): glmv eager, glmv with the compiled decode step (both
modes: "default" and "max-autotune"), transformers `generate`, and the floor: a loop of the same matmuls the decode
steps do (attention projections, dense / shared MLPs, router, LM head, and each step's routed experts as the model
picked them: at batch 8 that is about nine experts per layer, not two), at batch 1 and 8. Greedy, fixed lengths;
the variants alternate within each repeat so a busy machine slows all alike. Medians are printed, and each ratio is
the median of the repeats' own ratios (a repeat's variants ran back to back, so the machine's drift between repeats
cancels). The greedy ids of the four generators are compared (they must be identical).

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


def decode_routing(llm: LLM, prompts: list[list[int]], params: SamplingParams) -> list[list[torch.Tensor]]:
    """The experts each MoE layer picked at every decode step of this generation: [step][moe layer] ids [B, k]
    (read from the eager model's routers; the compiled run decodes the same ids)."""
    batch, picks = len(prompts), []
    routers = [layer.mlp.gate for layer in llm.model.language_model.layers if hasattr(layer.mlp, "experts")]
    hooks = [r.register_forward_hook(lambda m, args, out: picks.append(out[1]) if out[1].shape[0] == batch else None)
             for r in routers]
    try:
        llm.generate(prompts, params)
    finally:
        for h in hooks:
            h.remove()
    return [picks[i : i + len(routers)] for i in range(0, len(picks), len(routers))]


def matmul_floor(model, batch: int, routing: list[list[torch.Tensor]]) -> tuple[callable, int]:
    """The decode steps' matmuls and nothing else: every projection a step multiplies by (attention projections,
    dense / shared MLPs, router, LM head) on its batch rows, and the routed experts each MoE layer really picked
    at that step (`routing`), each expert once on the rows routed to it. run() does every recorded step once."""
    dense, moe_layers = [], []
    for layer in model.language_model.layers:
        attn, mlp = layer.self_attn, layer.mlp
        dense += [attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight, attn.o_proj.weight]
        if hasattr(mlp, "experts"):
            dense += [mlp.gate.weight, mlp.shared_experts.gate_proj.weight, mlp.shared_experts.up_proj.weight,
                      mlp.shared_experts.down_proj.weight]
            moe_layers.append(mlp.experts)
        else:
            dense += [mlp.gate_proj.weight, mlp.up_proj.weight, mlp.down_proj.weight]
    dense.append(model.lm_head.weight)
    steps = []
    for picked in routing:
        work = [(w, batch) for w in dense]
        for experts, ids in zip(moe_layers, picked):
            for e, rows in zip(*ids.flatten().unique(return_counts=True)):
                work += [(experts.gate_up_proj[e], int(rows)), (experts.down_proj[e], int(rows))]
        steps.append(work)
    xs = {w.shape[1]: torch.randn(batch, w.shape[1], dtype=w.dtype) for w in dense}
    xs.update({e.down_proj.shape[2]: torch.randn(batch, e.down_proj.shape[2]) for e in moe_layers})

    def run() -> None:
        with torch.inference_mode():
            for work in steps:
                for w, rows in work:
                    F.linear(xs[w.shape[1]][:rows], w)

    return run, sum(len(w) for w in steps) / len(steps)


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
    t1 = time.perf_counter()
    autotuned = LLM(path, progress=False, compile=True, compile_mode="max-autotune")
    print(f"compiled LLMs ready in {t1 - t0:.1f} s (default) and {time.perf_counter() - t1:.1f} s (max-autotune), "
          "torch.compile warm-up included")
    ref = transformers.AutoModelForImageTextToText.from_pretrained(path, dtype=torch.float32).eval()
    # glmv's ignore_eos decodes through end tokens as any other; min_new_tokens would instead forbid them
    ref.generation_config.eos_token_id = None
    gen = torch.Generator().manual_seed(0)
    print(f"{path.name}: {args.new} new tokens, {args.threads} threads; ms per decode step (median of {args.repeats})")
    print(f"{'batch':>5} {'transformers':>13} {'eager':>8} {'compiled':>9} {'max-autotune':>13} {'matmuls':>8}   "
          f"{'compiled vs tf':>14} {'vs matmuls':>10}   {'max-autotune vs tf':>18} {'vs matmuls':>10}  ids equal")
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

        routing = decode_routing(eager, prompts.tolist(), replace(params, max_tokens=args.new))
        floor, n_mm = matmul_floor(eager.model, batch, routing)
        runs = {"transformers": tf_ids, "eager": lambda n: glmv_ids(eager, n),
                "compiled": lambda n: glmv_ids(compiled, n), "max-autotune": lambda n: glmv_ids(autotuned, n)}
        same = len({str(f(args.new)) for f in runs.values()}) == 1
        per_step = {name: [] for name in (*runs, "matmuls")}
        for _ in range(args.repeats):
            for name, f in runs.items():  # a step's cost: the full run minus a 1-token run (prefill + sampling once)
                t = time.perf_counter(); f(1); one = time.perf_counter() - t
                t = time.perf_counter(); f(args.new); full = time.perf_counter() - t
                per_step[name].append((full - one) / (args.new - 1))
            t = time.perf_counter()
            floor()
            per_step["matmuls"].append((time.perf_counter() - t) / len(routing))
        ms = {name: 1e3 * statistics.median(v) for name, v in per_step.items()}

        def ratio(a: str, b: str) -> float:  # paired: a/b within each repeat, then the median (drift cancels)
            return statistics.median(x / y for x, y in zip(per_step[a], per_step[b]))

        print(f"{batch:5d} {ms['transformers']:13.2f} {ms['eager']:8.2f} {ms['compiled']:9.2f} "
              f"{ms['max-autotune']:13.2f} {ms['matmuls']:8.2f}   {ratio('transformers', 'compiled'):13.2f}x "
              f"{ratio('compiled', 'matmuls'):9.2f}x   {ratio('transformers', 'max-autotune'):17.2f}x "
              f"{ratio('max-autotune', 'matmuls'):9.2f}x  {same}")
        print(f"      (the floor's step: {n_mm:.1f} matmuls)")
    print("'vs tf' is transformers ms / glmv ms; 'vs matmuls' is glmv ms / floor ms (1.0 = nothing but the step's "
          "matmuls, as ATen runs them); each ratio is the median of the repeats' own ratios")


if __name__ == "__main__":
    main()
