"""End to end: one image and a question in, 32 tokens out, on the bundled nano model (or --model). glmv's
`LLM.chat` (eager, and with the compiled decode step in both modes) against transformers: its PIL image processor
(Glm4vImageProcessorPil), its tokenizer on the expanded prompt, then `generate`. Both sides start from the same
PIL image and question and decode greedily a fixed number of tokens (end tokens decoded through); their ids are
compared (they must be equal). The variants alternate within each repeat; medians are printed, and each ratio is
the median of the repeats' own ratios (the machine's drift between repeats cancels).

    python benchmarks/bench_chat.py [--threads 2] [--new 32] [--repeats 5] [--size 448] [--model PATH]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from PIL import Image

from glmv import LLM, SamplingParams
from glmv.model_path import resolve_model_path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="a GLM-V checkpoint (default: the bundled nano model)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--new", type=int, default=32, help="tokens generated per answer")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--size", type=int, default=448, help="the image's side in pixels")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import transformers
    from transformers.models.glm4v.image_processing_pil_glm4v import Glm4vImageProcessorPil

    path = resolve_model_path(args.model)
    eager, compiled = LLM(path, progress=False), LLM(path, progress=False, compile=True)
    autotuned = LLM(path, progress=False, compile=True, compile_mode="max-autotune")
    ref = transformers.AutoModelForImageTextToText.from_pretrained(path, dtype=torch.float32).eval()
    ref.generation_config.eos_token_id = None  # decode through end tokens, as glmv's ignore_eos does
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    processor = eager.processor
    cfg = processor.image_config
    image_processor = Glm4vImageProcessorPil(size={"shortest_edge": cfg.min_pixels, "longest_edge": cfg.max_pixels})

    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (args.size, args.size, 3), dtype=np.uint8))
    question = "What colour is the shape in the picture, and where is it?"
    messages = [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": question}]}]
    params = SamplingParams(temperature=0, max_tokens=args.new, ignore_eos=True)
    # the prompt text transformers' processor builds: the chat template with each image placeholder expanded
    # to its merged patches (glmv's expansion is tested equal to Glm4vProcessor's)
    expanded = processor.decode(processor.apply_chat_template(messages, enable_thinking=False)["input_ids"][0])

    def transformers_chat() -> list[int]:
        pixels = image_processor([image], return_tensors="pt")
        enc = tokenizer(expanded, return_tensors="pt", add_special_tokens=False)
        types = (enc.input_ids == processor.tokenizer.token_id("<|image|>")).long()
        with torch.inference_mode():
            out = ref.generate(**enc, mm_token_type_ids=types, pixel_values=pixels.pixel_values,
                               image_grid_thw=pixels.image_grid_thw, max_new_tokens=args.new, do_sample=False)
        return out[0, enc.input_ids.shape[1]:].tolist()

    def glmv_chat(llm: LLM) -> list[int]:
        return llm.chat(messages, params, enable_thinking=False)[0].outputs[0].token_ids

    runs = {"transformers": transformers_chat, "glmv eager": lambda: glmv_chat(eager),
            "glmv compiled": lambda: glmv_chat(compiled), "glmv max-autotune": lambda: glmv_chat(autotuned)}
    ids = {name: f() for name, f in runs.items()}  # also the warm-up
    times = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, f in runs.items():
            t = time.perf_counter()
            f()
            times[name].append(time.perf_counter() - t)
    ms = {name: 1e3 * statistics.median(v) for name, v in times.items()}
    print(f"{path.name}: one {args.size}x{args.size} image + question, {args.new} tokens, {args.threads} threads "
          f"(median of {args.repeats})")
    for name in runs:  # the ratio: transformers / this within each repeat (run back to back), then the median
        ratio = statistics.median(t / g for t, g in zip(times["transformers"], times[name]))
        print(f"  {name:17} {ms[name]:8.1f} ms   {ratio:5.2f}x transformers")
    print(f"  ids equal: {len({str(v) for v in ids.values()}) == 1}")


if __name__ == "__main__":
    main()
