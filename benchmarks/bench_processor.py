"""Images per second: glmv's image processor vs transformers' PIL one (Glm4vImageProcessorPil), same images.

Run: python benchmarks/bench_processor.py [--repeats N]. Uses the GLM-4.1V/4.5V checkpoint pixel budget.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from PIL import Image

from glmv.inputs.image import VisionConfig, process_image

MIN_PIXELS, MAX_PIXELS = 12544, 9633792
SIZES = [(224, 224), (480, 640), (720, 1280), (1080, 1920), (2048, 1536), (600, 4000)]


def rate(fn, images, repeats: int) -> float:
    fn(images[0])  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for image in images:
            fn(image)
        best = min(best, time.perf_counter() - start)
    return len(images) / best


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from transformers.models.glm4v.image_processing_pil_glm4v import (
        Glm4vImageProcessorPil,
    )

    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in SIZES]
    reference = Glm4vImageProcessorPil(size={"shortest_edge": MIN_PIXELS, "longest_edge": MAX_PIXELS})
    cfg = VisionConfig(min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS)
    ours = rate(lambda im: process_image(im, cfg), images, args.repeats)
    ref = rate(lambda im: reference(im, return_tensors="np"), images, args.repeats)
    print(f"images: {len(images)} sizes {SIZES}")
    print(f"glmv         {ours:8.1f} images/s")
    print(f"transformers {ref:8.1f} images/s")
    print(f"ratio        {ours / ref:8.2f}x")


if __name__ == "__main__":
    main()
