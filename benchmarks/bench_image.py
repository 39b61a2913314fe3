"""GLM-Image's prior: tokens/s of glmv's engine against transformers' `generate`, same weights, same run.

    python benchmarks/bench_image.py [--rounds 2] [--batch 1 4] [--skip-shaped]

Two priors, random weights: the tiny test prior (hidden 64, 2 layers), and a GLM-Image-shaped one with a few
layers (hidden 4096, 32 heads / 2 KV heads of 128, intermediate 13696, partial rotary 0.5, M-RoPE [8, 12, 12],
the 16,512-id visual vocabulary; its text vocabulary cut to 512 ids, as embedding rows cost no decode time).
Each run generates one text-to-image target of 32x32 px: the 16x16 preview, the 1x1 grid and EOS, 258 tokens per
image, greedily (glmv's grid rule; transformers with the same ids suppressed). The two are alternated `--rounds`
times and the best of each is kept; the ratio is glmv / transformers.
"""

from __future__ import annotations

import argparse
import time

import torch

from glmv.engine.sampling import SamplingParams
from glmv.image.config import GlmImageConfig
from glmv.image.generate import PriorGenerator
from glmv.image.positions import target_grids
from glmv.image.prior import GlmImagePrior
from glmv.image.processor import PriorPrompt
from glmv.image.tiny_checkpoint import reference_config, reference_model
from glmv.image.weights import checkpoint_name

SHAPED = dict(
    text={"vocab_size": 17024, "vision_vocab_size": 16512, "hidden_size": 4096, "intermediate_size": 13696,
          "num_hidden_layers": 2, "num_attention_heads": 32, "num_key_value_heads": 2, "head_dim": 128,
          "pad_token_id": 17000, "eos_token_id": 16385,
          "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5,
                              "mrope_section": [8, 12, 12]}},
    vq={"num_embeddings": 16384},
    image_token_id=17010, image_start_token_id=16384, image_end_token_id=16385,
)


def pair(config_kw: dict):
    """(transformers model, glmv prior) with the same weights, fp32."""
    ref = reference_model(reference_config(**config_kw))
    ours = GlmImagePrior(GlmImageConfig.from_dict(ref.config.to_dict()))
    state = ref.state_dict()
    ours.load_state_dict({k: state[checkpoint_name(k)] for k in ours.state_dict()})
    return ref, ours.eval()


def prompt(ref) -> PriorPrompt:
    c = ref.config
    low = c.text_config.vision_vocab_size  # ordinary text ids, below `<|image|>` and the pad
    text = torch.randint(low, min(low + 400, c.image_token_id, c.text_config.pad_token_id), (24,)).tolist()
    return PriorPrompt(text + [c.image_start_token_id], target_grids(32, 32), None)


def run_transformers(ref, p: PriorPrompt, batch: int) -> float:
    n = p.grid_tokens + 1
    codebook = ref.config.vq_config.num_embeddings
    ids = torch.tensor([p.ids] * batch)
    start = time.perf_counter()
    with torch.inference_mode():
        out = ref.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n,
                           image_grid_thw=torch.tensor(p.grids * batch), images_per_sample=torch.tensor([2] * batch),
                           do_sample=False, top_k=None, top_p=None, temperature=None,
                           suppress_tokens=list(range(codebook, ref.config.text_config.vision_vocab_size)))
    elapsed = time.perf_counter() - start
    assert out.shape[1] - ids.shape[1] == n
    return batch * n / elapsed


def run_glmv(gen: PriorGenerator, p: PriorPrompt, batch: int) -> float:
    start = time.perf_counter()
    out = gen.generate(p, [SamplingParams(temperature=0.0)] * batch)
    elapsed = time.perf_counter() - start
    assert all(len(o.generated) == p.grid_tokens + 1 for o in out)
    return batch * (p.grid_tokens + 1) / elapsed


def bench(name: str, config_kw: dict, batches: list[int], rounds: int) -> None:
    torch.manual_seed(0)
    ref, ours = pair(config_kw)
    p = prompt(ref)
    gen = PriorGenerator(ours, SamplingParams(temperature=0.0), max_model_len=1024)
    for batch in batches:
        best = {"glmv": 0.0, "transformers": 0.0}
        for _ in range(rounds):  # alternated, so that a busy machine slows both alike
            best["transformers"] = max(best["transformers"], run_transformers(ref, p, batch))
            best["glmv"] = max(best["glmv"], run_glmv(gen, p, batch))
        print(f"{name:28s} batch {batch}: glmv {best['glmv']:8.1f} tok/s   transformers {best['transformers']:8.1f} "
              f"tok/s   ratio {best['glmv'] / best['transformers']:.2f}x", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--skip-shaped", action="store_true", help="only the tiny prior")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; 258 tokens per image (32x32 px target)")
    bench("tiny prior", {}, args.batch, args.rounds)
    if not args.skip_shaped:
        bench("GLM-Image-shaped, 2 layers", SHAPED, [1], args.rounds)


if __name__ == "__main__":
    main()
