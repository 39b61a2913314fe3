"""glmv vs transformers forward time on the same small MoE checkpoint, and peak memory of glmv's loader.

    python benchmarks/bench_model.py [--threads 2] [--repeats 5]

Prints seconds per forward for both and the ratio (transformers / glmv: >1 means glmv is faster), the peak RSS
growth while loading relative to the model's size in bytes, and the first load's time in a fresh process.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile

import torch

import glmv
from glmv.testing.prompts import (
    image_tokens,
    mm_token_types,
    random_pixels,
    random_text,
)
from glmv.testing.tiny_checkpoint import (
    BENCH_TEXT,
    BENCH_VISION,
    reference_config,
    reference_model,
)
from glmv.timing import median_time

TEXT = dict(BENCH_TEXT, vocab_size=8192)
VISION = BENCH_VISION


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    ref = reference_model(reference_config("glm4v_moe", text=TEXT, vision=VISION))
    path = tempfile.mkdtemp()
    ref.save_pretrained(path)
    ours = glmv.load_model(path, progress=False)

    grid = torch.tensor([(1, 16, 16)])
    ids = torch.tensor([random_text(100, 0) + image_tokens(16, 16) + random_text(300, 1)])
    pv = random_pixels(grid.tolist())
    types = mm_token_types(ids)
    batch = torch.tensor([random_text(256, i) for i in range(8)])
    print(f"checkpoint: glm4v_moe, {sum(p.numel() for p in ours.parameters()) / 1e6:.1f}M params, "
          f"prompt {ids.shape[1]} tokens incl. one {grid[0, 1]}x{grid[0, 2]}-patch image; {args.threads} threads")
    rows = [
        ("prefill, image prompt, batch 1",
         lambda: ref(input_ids=ids, pixel_values=pv, image_grid_thw=grid, mm_token_type_ids=types),
         lambda: ours(ids, pixel_values=pv, image_grid_thw=grid)),
        ("forward, text, batch 8",
         lambda: ref(input_ids=batch), lambda: ours(batch)),
        ("vision tower only",
         lambda: ref.model.visual(pv, grid_thw=grid), lambda: ours.visual(pv, grid)),
    ]
    print(f"{'case':34} {'transformers s':>15} {'glmv s':>10} {'ratio':>7}")
    with torch.inference_mode():
        for name, a, b in rows:
            ta, tb = median_time(a, args.repeats), median_time(b, args.repeats)
            print(f"{name:34} {ta:15.4f} {tb:10.4f} {ta / tb:7.2f}x")

    script = ("import sys,glmv,glmv.weights;from glmv.testing.memory import peak,reset_peak,warm_up_model_code;"
              "warm_up_model_code(sys.argv[1]);b=reset_peak();"
              "m=glmv.load_model(sys.argv[1],progress=False);"
              "print(sum(t.numel()*t.element_size() for t in m.state_dict().values()),peak()-b)")
    size, growth = map(int, subprocess.run([sys.executable, "-c", script, path], capture_output=True, text=True,
                                           check=True).stdout.split())
    print(f"load: model {size / 1e6:.1f} MB, peak RSS growth {growth / 1e6:.1f} MB = {growth / size:.2f}x model size")
    print_load_times(path, args.repeats)


LOADERS = {  # the first load in a fresh process, after the libraries are imported (their import is not the load)
    "transformers from_pretrained": "import transformers as tf;t=time.perf_counter();"
                                    "tf.AutoModelForImageTextToText.from_pretrained(p)",
    "glmv load_model": "import glmv.weights as w;t=time.perf_counter();w.load_model(p,progress=False)",
    "glmv load_model(mmap=True)": "import glmv.weights as w;t=time.perf_counter();w.load_model(p,progress=False,mmap=True)",
}


def print_load_times(path: str, repeats: int) -> None:
    times = {name: [] for name in LOADERS}
    for _ in range(repeats):  # alternate, so machine load hits every loader alike
        for name, code in LOADERS.items():
            script = f"import sys,time;p=sys.argv[1];{code};print(time.perf_counter()-t)"
            out = subprocess.run([sys.executable, "-c", script, path], capture_output=True, text=True, check=True)
            times[name].append(float(out.stdout.split()[-1]))
    base = sorted(times["transformers from_pretrained"])[repeats // 2]
    for name, ts in times.items():
        t = sorted(ts)[repeats // 2]
        print(f"first load, {name:30} {t:7.3f} s  ({base / t:.2f}x transformers)")


if __name__ == "__main__":
    main()
