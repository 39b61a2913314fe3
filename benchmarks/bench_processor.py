"""Image preprocessing: glmv vs transformers' PIL processor (Glm4vImageProcessorPil) on the same images.

Checks first that both give bit-identical pixel_values, then alternates everything in one process (the machine
may be shared: each round runs every variant once, starting one further along each time) and prints, per size,
the best wall time of each phase and of the whole call, the ratios transformers/glmv (of the best and of the
median wall times), and CPU time per call (all threads; less disturbed by other processes than wall time). The
last line estimates 3 threads on idle cores: the CPU time of the split plus one thread's channel.

Run: python benchmarks/bench_processor.py [--repeats N] [--threads 1,2,3]. Uses the GLM-4.1V/4.5V pixel budget.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Callable

import numpy as np
from PIL import Image

from glmv.inputs.image import VisionConfig, normalize_lut, patch_blocks, process_image, target_size

MIN_PIXELS, MAX_PIXELS = 12544, 9633792
SIZES = {"250px": (250, 250), "1080p": (1080, 1920), "4K": (2160, 3840)}


def transformers_phases(ref, image: Image.Image) -> dict[str, Callable[[], object]]:
    """The steps of Glm4vImageProcessorPil._preprocess, each on the previous step's output."""
    p, m, t = ref.patch_size, ref.merge_size, ref.temporal_patch_size
    array = ref.process_image(image, do_convert_rgb=True)

    def resize() -> np.ndarray:
        return ref.resize(array, ref.size, ref.resample, factor=p * m, temporal_factor=t)

    def rescale_normalize(resized: np.ndarray) -> np.ndarray:
        return ref.normalize(ref.rescale(resized, ref.rescale_factor), ref.image_mean, ref.image_std)

    resized = resize()
    normalized = rescale_normalize(resized)
    return {
        "resize": resize,
        "rescale+normalise": lambda: rescale_normalize(resized),
        "patchify+concat": lambda: np.concatenate([ref.patchify(normalized, p, m, t)[0]]),
    }


def glmv_phases(image: Image.Image, cfg: VisionConfig) -> dict[str, Callable[[], object]]:
    """process_image's steps on one thread: the whole image resized (PIL's arithmetic in numba), looked up into the
    rows; and the work of one thread of two, which resizes and looks up half of the output rows."""
    from glmv.inputs import _image_kernels as kernels
    from glmv.inputs import resample

    h, w = target_size(image.height, image.width, cfg)
    p, t, f = cfg.patch_size, cfg.temporal_patch_size, cfg.factor
    plan = resample.plan(image.size, (w, h), cfg.resample)
    src = np.asarray(image)
    pixels = plan.rows(src, 0, h)
    lut = normalize_lut(cfg)
    half = h // f // 2 * f

    def fresh_blocks() -> np.ndarray:  # each call allocates its rows, as process_image does
        return patch_blocks(np.empty(((h // p) * (w // p), 3 * t * p * p), dtype=np.float32), h, w, cfg)[0]

    def one_band() -> None:
        kernels.patches(plan.rows(np.asarray(image), 0, half), lut, fresh_blocks()[:half // f], 0, t)

    return {
        "to numpy": lambda: np.asarray(image),
        "resize": lambda: plan.rows(src, 0, h),
        "lookup": lambda: kernels.patches(pixels, lut, fresh_blocks(), 0, t),
        "1 band of 2": one_band,
    }


def alternate(fns: dict[str, Callable[[], object]], rounds: int) -> dict[str, list[tuple[float, float]]]:
    """(wall, CPU) seconds of each fn over `rounds` rounds; each round runs every fn once, in rotating order."""
    for fn in fns.values():
        fn()  # warm-up
    names, times = list(fns), {name: [] for name in fns}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            wall, cpu = time.perf_counter(), time.process_time()
            fns[name]()
            times[name].append((time.perf_counter() - wall, time.process_time() - cpu))
    return times


def check_identical(ref, image: Image.Image, cfg: VisionConfig, threads: list[int]) -> None:
    expected = ref(image, return_tensors="np")["pixel_values"].view(np.uint32)
    for k in threads:
        ours = process_image(image, cfg, threads=k).pixel_values.numpy().view(np.uint32)
        if ours.shape != expected.shape or not np.array_equal(ours, expected):
            raise SystemExit(f"pixel_values differ from transformers at {image.width}x{image.height}, threads={k}")


def report(label: str, image: Image.Image, cfg: VisionConfig, times: dict[str, list[tuple[float, float]]]) -> None:
    h, w = target_size(image.height, image.width, cfg)
    best = {name: min(wall for wall, _ in ts) * 1e3 for name, ts in times.items()}
    median = {name: statistics.median(wall for wall, _ in ts) * 1e3 for name, ts in times.items()}
    cpu = {name: min(c for _, c in ts) * 1e3 for name, ts in times.items()}
    print(f"\n{label}: {image.width}x{image.height} -> {w}x{h}; best of {len(times['transformers'])} rounds, ms")
    for side in ("transformers", "glmv"):
        phases = [(name.split(": ", 1)[1], ms) for name, ms in best.items() if name.startswith(side + ": ")]
        print(f"  {side + ' phases':20s} " + "   ".join(f"{name} {ms:.1f}" for name, ms in phases))
    for name in (n for n in times if ": " not in n):
        ratios = "" if name == "transformers" else (
            f"   ratio {best['transformers'] / best[name]:5.2f}x best, "
            f"{median['transformers'] / median[name]:5.2f}x median, {cpu['transformers'] / cpu[name]:5.2f}x CPU")
        print(f"  {name:20s} wall {best[name]:7.1f}   CPU {cpu[name]:7.1f}{ratios}")
    # What 2 threads take when each has a core of its own, from CPU times (other processes inflate wall times):
    # one thread's band, converted to numpy by itself.
    critical = cpu["glmv: 1 band of 2"]
    print(f"  {'2 idle cores (est.)':20s} 1 band of 2, CPU {critical:5.1f}"
          f"   ratio {cpu['transformers'] / critical:5.2f}x transformers' CPU")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=10, help="rounds per size (default 10)")
    parser.add_argument("--threads", default="1,2,3", help="glmv thread counts to run (default 1,2,3)")
    args = parser.parse_args()
    threads = [int(k) for k in args.threads.split(",")]
    from transformers.models.glm4v.image_processing_pil_glm4v import Glm4vImageProcessorPil

    ref = Glm4vImageProcessorPil(size={"shortest_edge": MIN_PIXELS, "longest_edge": MAX_PIXELS})
    cfg = VisionConfig(min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS)
    rng = np.random.default_rng(0)
    print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} (other processes skew wall times)")
    for label, (height, width) in SIZES.items():
        image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
        check_identical(ref, image, cfg, threads)
        fns = {"transformers": lambda: ref(image, return_tensors="np")}
        for k in threads:
            fns[f"glmv {k} thread{'s' if k > 1 else ''}"] = lambda k=k: process_image(image, cfg, threads=k)
        fns |= {f"transformers: {n}": fn for n, fn in transformers_phases(ref, image).items()}
        fns |= {f"glmv: {n}": fn for n, fn in glmv_phases(image, cfg).items()}
        report(label, image, cfg, alternate(fns, args.repeats))


if __name__ == "__main__":
    main()
