"""`glmv.ImagePipeline`: GLM-Image text-to-image and image-to-image.

    from glmv import ImagePipeline
    pipe = ImagePipeline("/path/to/GLM-Image")
    image = pipe.generate('a poster that says "glmv"', height=1024, width=768, steps=50, guidance=1.5, seed=7)[0]
    edited = pipe.generate("make the sky purple", height=1024, width=1024, images=["photo.png"], seed=7)[0]

prompt -> processor.py (prompt ids, grids, source-image rows) -> generate.py (the prior on glmv's engine: visual
tokens, preview then large grid, x2 upsample) -> dit.py (diffusers' glyph encoder, DiT, scheduler and VAE) -> PIL.

Seeds: image k of a call with seed s is drawn with seed s + k in both stages (the prior's sequence generator and
the DiT's initial noise), so it equals image 0 of a call with seed s + k; with seed None one is drawn at random
and written into each image's `info["seed"]`.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from glmv.device import resolve_device
from glmv.engine.sampling import INT64
from glmv.errors import InputError
from glmv.image.config import prior_dir
from glmv.image.dit import DiTStage, image_dtype
from glmv.image.generate import PriorGenerator, PriorTokens, Progress
from glmv.image.processor import GlmImageProcessor, PriorPrompt
from glmv.image.sampling import prior_sampling
from glmv.image.sizes import check_size
from glmv.image.weights import load_prior
from glmv.inputs.media import load_image

MAX_STEPS, MAX_IMAGES_PER_CALL, MAX_REFERENCES = 1000, 16, 8
DEFAULT_STEPS, DEFAULT_GUIDANCE = 50, 1.5  # diffusers' and the model card's


class ImagePipeline:
    def __init__(self, path: str | Path, *, device: str | torch.device = "auto", dtype: str | torch.dtype | None = None,
                 vae_dtype: str | torch.dtype | None = None, offload: str = "none", vae_tiling: bool = False,
                 vae_slicing: bool = False, max_model_len: int = 16384, kv_cache_memory: int | None = None):
        """path: a GLM-Image checkpoint (diffusers layout). dtype: bfloat16 or float32 for the prior, glyph
        encoder and DiT (default: bfloat16 on a GPU, float32 on the CPU); vae_dtype: the VAE's (default: dtype).
        offload "model": each component on the GPU only while it runs (diffusers' model CPU offload).
        vae_tiling / vae_slicing: decode in tiles / one image at a time (less memory at large sizes).
        max_model_len, kv_cache_memory: the prior's context and paged KV cache (bytes; default room for 4 contexts)."""
        self.path = Path(path)
        self.device = resolve_device(device)
        default = "bfloat16" if self.device.type == "cuda" else "float32"
        self.dtype = image_dtype(dtype or default, "dtype")
        vae = image_dtype(vae_dtype or self.dtype, "vae_dtype")
        self.offload = offload
        self.processor = GlmImageProcessor.from_pretrained(self.path)
        self.dit = DiTStage(self.path, self.device, self.dtype, vae, offload, vae_tiling, vae_slicing)
        prior = load_prior(self.path, self.dtype, self.device)
        self.prior = PriorGenerator(prior, prior_sampling(prior_dir(self.path)), max_model_len, kv_cache_memory)
        if offload == "model":  # its KV cache stays on the GPU (allocated above); the weights wait on the CPU
            prior.to("cpu")

    # --- the two stages ---------------------------------------------------------------------------------------
    def prompt(self, prompt: str, height: int, width: int, references: Sequence[Image.Image] = ()) -> PriorPrompt:
        check_size(height, width)
        return self.processor(prompt, height, width, list(references))

    def references(self, images: Sequence[Any] | None) -> list[Image.Image]:
        """Reference images (PIL images, paths or bytes) loaded and resized to sizes both stages agree on."""
        images = list(images or [])
        if len(images) > MAX_REFERENCES:
            raise InputError(f"{len(images)} reference images given; GLM-Image takes at most {MAX_REFERENCES}")
        return [self.processor.prepare_reference(load_image(i)) for i in images]

    def prior_tokens(self, prompt: PriorPrompt, seeds: Sequence[int], progress: Progress | None = None,
                     cancelled: Callable[[], bool] | None = None, **sampling) -> list[PriorTokens]:
        """The prior's tokens for each seed (decoded as one batch). sampling: temperature, top_p, top_k overrides."""
        samples = [self.prior.params(seed, **sampling) for seed in seeds]
        if self.offload == "model":  # diffusers' sequence starts with the prior: on the GPU only while it runs
            self.prior.prior.to(self.device)
        try:
            return self.prior.generate(prompt, samples, progress, cancelled)
        finally:
            if self.offload == "model":
                self.prior.prior.to("cpu")

    def render(self, prompt: str, tokens: PriorTokens, height: int, width: int, steps: int = DEFAULT_STEPS,
               guidance: float = DEFAULT_GUIDANCE, seed: int = 0, references: Sequence[Image.Image] = (),
               progress: Progress | None = None, cancelled: Callable[[], bool] | None = None) -> Image.Image:
        """One image from prior tokens (diffusers' DiT, scheduler and VAE)."""
        check_render(steps, guidance)
        image = self.dit.render(prompt, tokens, height, width, steps, guidance, seed, list(references), progress,
                                cancelled)
        image.info.update(seed=str(seed), steps=str(steps), guidance=str(guidance))
        return image

    # --- the whole pipeline -------------------------------------------------------------------------------------
    def generate(self, prompt: str, height: int = 1024, width: int = 1024, steps: int = DEFAULT_STEPS,
                 guidance: float = DEFAULT_GUIDANCE, seed: int | None = None, images: Sequence[Any] | None = None,
                 n: int = 1, *, temperature: float | None = None, top_p: float | None = None, top_k: int | None = None,
                 progress: Progress | None = None, cancelled: Callable[[], bool] | None = None) -> list[Image.Image]:
        """n images for `prompt` at height x width px (multiples of 32). images: reference images to edit or
        combine (image-to-image). steps, guidance: the DiT's denoising steps and classifier-free guidance scale.
        temperature / top_p / top_k: override the prior's sampling (the checkpoint's generation_config).
        progress(stage, done, total) is called as the prior writes tokens ("prior") and per DiT step
        ("diffusion"); cancelled() is polled between steps (GenerationCancelled is raised when it says so)."""
        check_request(steps, guidance, n, seed)
        seed = random.randrange(2**63 - MAX_IMAGES_PER_CALL) if seed is None else seed
        refs = self.references(images)
        prior_prompt = self.prompt(prompt, height, width, refs)
        seeds = [seed + k for k in range(n)]
        tokens = self.prior_tokens(prior_prompt, seeds, progress, cancelled, temperature=temperature, top_p=top_p,
                                   top_k=top_k)
        return [self.render(prompt, t, height, width, steps, guidance, s, refs, progress, cancelled)
                for t, s in zip(tokens, seeds)]


def check_request(steps: int, guidance: float, n: int, seed: int | None) -> None:
    """InputError for settings generate() cannot draw with (checked before any work)."""
    check_render(steps, guidance)
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_IMAGES_PER_CALL:
        raise InputError(f"n must be an integer from 1 to {MAX_IMAGES_PER_CALL}, got {n!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)
                             or not INT64[0] <= seed <= INT64[1] - n):
        raise InputError(f"seed must be an integer in [{INT64[0]}, {INT64[1] - n}], got {seed!r}")


def check_render(steps: int, guidance: float) -> None:
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= MAX_STEPS:
        raise InputError(f"steps must be an integer from 1 to {MAX_STEPS}, got {steps!r}")
    if isinstance(guidance, bool) or not isinstance(guidance, (int, float)) or not math.isfinite(guidance) \
            or not 0 <= guidance <= 100:
        raise InputError(f"guidance must be a number from 0 to 100, got {guidance!r}")
