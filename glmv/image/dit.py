"""The DiT side: prior ids -> pixels through diffusers' own GlmImagePipeline components (spec 2).

The glyph encoder (ByT5), GlmImageTransformer2DModel, the VAE and the flow-matching scheduler are loaded from the
checkpoint's subfolders by diffusers itself, and glmv calls diffusers' pipeline with its prior tokens
(`prior_token_ids`, and for image-to-image the reference images' ids and grids): the DiT side then is diffusers'
code, step for step, so glmv's images equal diffusers' for the same prior tokens by construction (tests compare
whole pipelines). diffusers never loads its own copy of the prior or the GLM processor (`None` components).

Memory strategies: model CPU offload in diffusers' sequence (text_encoder -> transformer -> vae; glmv's prior is
moved off the GPU before it, see pipeline.py), VAE tiling / slicing, and the dtype (bfloat16 or float32; never
float16 for the VAE, whose decode overflows to NaN there, spec 2.5).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from PIL import Image

from glmv.errors import CheckpointError, ConfigError
from glmv.image.generate import GenerationCancelled, PriorTokens, Progress

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
OFFLOAD = ("none", "model")


def require_diffusers():
    """diffusers' GlmImagePipeline, or a ConfigError that says how to install it (an optional extra)."""
    try:
        from diffusers import GlmImagePipeline
    except ImportError as e:
        raise ConfigError(f"GLM-Image's diffusion side needs diffusers >= 0.37 ({e}); install it with "
                          "pip install 'glmv[image]'") from None
    return GlmImagePipeline


def image_dtype(dtype: torch.dtype | str, what: str) -> torch.dtype:
    """bfloat16 or float32 (float16 is refused: the VAE's decode overflows to NaN in it, spec 2.5)."""
    name = str(dtype).removeprefix("torch.")
    if name not in DTYPES:
        raise ConfigError(f"{what} {name!r} is not supported for GLM-Image: use bfloat16 or float32 (float16 makes "
                          "the VAE overflow to NaN)")
    return DTYPES[name]


class DiTStage:
    def __init__(self, root: str | Path, device: torch.device, dtype: torch.dtype, vae_dtype: torch.dtype,
                 offload: str = "none", vae_tiling: bool = False, vae_slicing: bool = False):
        if offload not in OFFLOAD:
            raise ConfigError(f"offload {offload!r}: use one of {', '.join(OFFLOAD)}")
        if offload != "none" and device.type == "cpu":
            raise ConfigError("CPU offload moves components between the CPU and a GPU; on a CPU device leave it off")
        pipeline_class = require_diffusers()
        try:
            with warnings.catch_warnings():  # newer diffusers renamed torch_dtype; >= 0.37 all take this name
                warnings.filterwarnings("ignore", message=".*torch_dtype.*", category=FutureWarning)
                self.pipe = pipeline_class.from_pretrained(root, vision_language_encoder=None, processor=None,
                                                           torch_dtype={"default": dtype, "vae": vae_dtype})
        except (OSError, ValueError, KeyError) as e:
            raise CheckpointError(f"cannot load GLM-Image's DiT side from {root} ({e}); a GLM-Image checkpoint "
                                  "has model_index.json, transformer/, vae/, text_encoder/, tokenizer/, "
                                  "scheduler/") from None
        self.pipe.set_progress_bar_config(disable=True)  # glmv reports progress itself
        if offload == "model":
            self.pipe.enable_model_cpu_offload(device=device)
        else:
            self.pipe.to(device)
        if vae_tiling:
            self.pipe.vae.enable_tiling()
        if vae_slicing:
            self.pipe.vae.enable_slicing()

    @property
    def device(self) -> torch.device:
        return self.pipe._execution_device

    @torch.inference_mode()
    def render(self, prompt: str, tokens: PriorTokens, height: int, width: int, steps: int, guidance: float, seed: int,
               references: list[Image.Image] = (), progress: Progress | None = None,
               cancelled: Callable[[], bool] | None = None) -> Image.Image:
        """One image from one prompt's prior tokens; the initial noise comes from a CPU generator seeded with
        `seed` (the same latents on any device)."""
        def on_step(pipe, i: int, t, kwargs: dict) -> dict:
            if cancelled is not None and cancelled():
                raise GenerationCancelled("the image generation was cancelled")
            if progress is not None:
                progress("diffusion", i + 1, steps)
            return kwargs

        device = self.device
        extra = {}
        if references:
            extra = dict(image=list(references), prior_token_image_ids=[tokens.source_ids.to(device)],
                         source_image_grid_thw=[tokens.source_grids.to(device)])
        out = self.pipe(prompt=prompt, height=height, width=width, num_inference_steps=steps,
                        guidance_scale=guidance, generator=torch.Generator().manual_seed(seed),
                        prior_token_ids=tokens.ids[None].to(device), callback_on_step_end=on_step, **extra)
        return out.images[0]
