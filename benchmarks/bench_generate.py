"""glmv vs transformers generation on the same small MoE checkpoint: prefill time and decode tokens/s at
batch 1 and 8 (greedy, fixed lengths). Prints both and the ratio (>1: glmv faster).

    python benchmarks/bench_generate.py [--threads 2] [--prompt 128] [--new 32]
"""

from __future__ import annotations

import argparse
import tempfile

import torch

from glmv import LLM, SamplingParams
from glmv.testing.tiny_checkpoint import BENCH_TEXT, BENCH_VISION, make_tiny_model_dir
from glmv.timing import median_time

TEXT, VISION = BENCH_TEXT, BENCH_VISION


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--new", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import transformers

    path = make_tiny_model_dir(tempfile.mkdtemp(), "glm4v_moe", text=TEXT, vision=VISION)
    ref = transformers.AutoModelForImageTextToText.from_pretrained(path).eval()
    llm = LLM(path, progress=False)
    gen = torch.Generator().manual_seed(0)
    print(f"glm4v_moe {sum(p.numel() for p in llm.model.parameters()) / 1e6:.1f}M params; prompt {args.prompt} tokens, "
          f"{args.new} new tokens, {args.threads} threads")
    print(f"{'case':28} {'transformers':>13} {'glmv':>10} {'ratio':>7}")
    for batch in (1, 8):
        prompts = torch.randint(10, 29, (batch, args.prompt), generator=gen)  # ordinary tokens of the tiny vocab

        def tf_run(n):
            with torch.inference_mode():
                ref.generate(input_ids=prompts, attention_mask=torch.ones_like(prompts), max_new_tokens=n,
                             min_new_tokens=n, do_sample=False, pad_token_id=0)

        def glmv_run(n):
            llm.generate(prompts.tolist(), SamplingParams(temperature=0, max_tokens=n, ignore_eos=True))

        tf_prefill, glmv_prefill = median_time(lambda: tf_run(1), args.repeats), median_time(lambda: glmv_run(1), args.repeats)
        tf_full, glmv_full = median_time(lambda: tf_run(args.new), args.repeats), median_time(lambda: glmv_run(args.new), args.repeats)
        tf_tps = batch * (args.new - 1) / (tf_full - tf_prefill)
        glmv_tps = batch * (args.new - 1) / (glmv_full - glmv_prefill)
        print(f"{f'prefill s, batch {batch}':28} {tf_prefill:13.4f} {glmv_prefill:10.4f} {tf_prefill / glmv_prefill:6.2f}x")
        print(f"{f'decode tokens/s, batch {batch}':28} {tf_tps:13.1f} {glmv_tps:10.1f} {glmv_tps / tf_tps:6.2f}x")


if __name__ == "__main__":
    main()
