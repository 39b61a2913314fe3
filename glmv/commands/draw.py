"""`glmv draw`: GLM-Image text-to-image, image-to-image and sweep grids from the command line."""

from __future__ import annotations

import argparse
from pathlib import Path

from glmv.commands._common import DEVICE_HELP

EXAMPLES = """examples:
  glmv draw "a poster that says 'glmv'" --model PATH --out poster.png --height 1024 --width 768 --seed 7
  glmv draw "make the sky purple" --model PATH --image photo.png --out edited.png
  glmv draw "a red fox" --model PATH --out grid.png --sweep steps=20,50 --sweep guidance=1.5,3 --sweep seed=1,2,3"""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "draw", help="draw images with GLM-Image (text-to-image, image-to-image, sweep grids)",
        description="Draw with a GLM-Image checkpoint: its autoregressive prior on glmv's engine, then diffusers' "
                    "DiT and VAE (pip install 'glmv[image]').\n\n" + EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("prompt", help="what to draw; text to be written in the image goes in quotes")
    p.add_argument("--model", "-m", required=True, help="GLM-Image checkpoint directory (diffusers layout)")
    p.add_argument("--out", "-o", default="image.png", help="output PNG (with --n > 1: OUT-0.png, OUT-1.png, ...)")
    p.add_argument("--height", type=int, default=1024, help="pixels, a multiple of 32 up to 2048 (default 1024)")
    p.add_argument("--width", type=int, default=1024, help="pixels, a multiple of 32 up to 2048 (default 1024)")
    p.add_argument("--image", action="append", default=[], metavar="PATH",
                   help="a reference image to edit or combine (repeatable: image-to-image)")
    p.add_argument("--steps", type=int, default=50, help="DiT denoising steps (default 50)")
    p.add_argument("--guidance", type=float, default=1.5, help="classifier-free guidance scale (default 1.5)")
    p.add_argument("--seed", type=int, default=None, help="makes the image reproducible (default: random, printed)")
    p.add_argument("--n", type=int, default=1, help="images to draw (seeds SEED, SEED+1, ...)")
    p.add_argument("--temperature", type=float, default=None, help="the prior's (default: the checkpoint's)")
    p.add_argument("--top-p", type=float, default=None, help="the prior's (default: the checkpoint's)")
    p.add_argument("--top-k", type=int, default=None, help="the prior's (default: the checkpoint's)")
    p.add_argument("--sweep", action="append", default=[], metavar="NAME=V1,V2,...",
                   help="render every combination into one labelled grid: up to 3 axes (columns, rows, panels) "
                        "over steps, guidance, seed, temperature, top_p, top_k")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--dtype", default=None, help="bfloat16 or float32 (default: bfloat16 on a GPU, else float32)")
    p.add_argument("--vae-dtype", default=None, help="bfloat16 or float32 (default: --dtype; never float16)")
    p.add_argument("--offload", choices=("none", "model"), default="none",
                   help="model: keep each component on the GPU only while it runs (diffusers' CPU offload)")
    p.add_argument("--vae-tiling", action="store_true", help="decode the VAE in tiles (less memory at large sizes)")
    p.add_argument("--vae-slicing", action="store_true", help="decode one image at a time")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


class Bars:
    """tqdm bars, one per stage: the prior's tokens, then the DiT's steps of each image."""

    def __init__(self, enabled: bool):
        self.enabled, self.bar, self.stage = enabled, None, None

    def __call__(self, stage: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        if self.bar is None or stage != self.stage or done < self.bar.n:
            self.close()
            unit = "tok" if stage == "prior" else "step"
            self.bar, self.stage = tqdm(total=total, desc=stage, unit=unit, leave=True), stage
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def run(args: argparse.Namespace) -> int:
    from PIL.PngImagePlugin import PngInfo

    from glmv.image.pipeline import ImagePipeline
    from glmv.image.sizes import check_size
    from glmv.image.sweep import parse_axes, sweep

    check_size(args.height, args.width)  # bad sizes and sweeps fail before the model loads
    axes = parse_axes(args.sweep) if args.sweep else None
    pipe = ImagePipeline(args.model, device=args.device, dtype=args.dtype, vae_dtype=args.vae_dtype,
                         offload=args.offload, vae_tiling=args.vae_tiling, vae_slicing=args.vae_slicing)
    bars = Bars(not args.no_progress)
    out = Path(args.out)
    sampling = dict(temperature=args.temperature, top_p=args.top_p, top_k=args.top_k)
    try:
        if axes:
            settings = dict(steps=args.steps, guidance=args.guidance, seed=args.seed or 0, **sampling)
            grid = sweep(pipe, args.prompt, args.height, args.width, axes, settings, args.image, bars)
            info = PngInfo()
            info.add_text("glmv.sweep", grid.info["glmv.sweep"])
            info.add_text("prompt", args.prompt)
            grid.save(out, pnginfo=info)
            shape = " x ".join(f"{len(a.values)} {a.name}" for a in axes)
            print(f"glmv: wrote {out} ({grid.width}x{grid.height} px: {shape})")
            return 0
        images = pipe.generate(args.prompt, args.height, args.width, args.steps, args.guidance, args.seed,
                               args.image, args.n, progress=bars, **sampling)
    finally:
        bars.close()
    for k, image in enumerate(images):
        path = out if len(images) == 1 else out.with_name(f"{out.stem}-{k}{out.suffix or '.png'}")
        info = PngInfo()
        for key in ("seed", "steps", "guidance"):
            info.add_text(key, image.info[key])
        info.add_text("prompt", args.prompt)
        image.save(path, pnginfo=info)
        print(f"glmv: wrote {path} (seed {image.info['seed']})")
    return 0
