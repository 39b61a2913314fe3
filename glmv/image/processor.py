"""GLM-Image's prompt side: the checkpoint's `processor/` folder turned into the prior's input (spec 1.3, 1.5).

  text-to-image   render(template, [prompt]) + "<sop>{h} {w}<eop><sop>{ph} {pw}<eop>" + BOS
  image-to-image  render(template, [images..., prompt]) + "<sop>{h} {w}<eop>" + BOS, each `<|image|>` expanded
                  to its source grid's h*w placeholders
Equal to transformers' GlmImageProcessor (tokenizer, chat template, GlmImageImageProcessorPil) with one deliberate
difference: client text is literal, as everywhere in glmv, so a prompt that spells `<|image|>` or `<sop>` gets those
characters, never the control tokens (glmv.inputs.tokenizer).

Source images: GLM-Image's smart_resize HALVES the image (an AR token covers 32 px, a ViT patch 16 px), rounds to
the patch size, bicubic resize, CLIP normalisation, one row per patch (temporal patch 1, merge 1). Before that,
`reference_size` picks the size at which a reference image is consistent for both stages: its DiT tokens
(16 px each) must be exactly 2x its AR grid, which holds only at multiples of 32 inside the pixel bounds (spec 2.6).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from glmv.errors import CheckpointError, InputError
from glmv.image.positions import Grid, target_grids
from glmv.inputs.chat import ChatTemplate, load_chat_template
from glmv.inputs.image import CLIP_MEAN, CLIP_STD, VisionConfig, patchify
from glmv.inputs.tokenizer import Tokenizer, read_json

PROCESSOR_SUBFOLDER = "processor"
MAX_ASPECT = 4  # the reference processor refuses flatter source images


@dataclass(frozen=True)
class PriorPrompt:
    """One prompt for the prior: ids with `<|image|>` placeholders, its grids (source images' first, in patches,
    then the targets, in 32-px tokens) and the source images' patch rows."""

    ids: list[int]
    grids: list[Grid]
    pixel_values: torch.Tensor | None  # [sum source h*w, 3*16*16]

    @property
    def n_sources(self) -> int:
        return len(self.grids) - len(self.target_grids)

    @property
    def target_grids(self) -> list[Grid]:
        """[large, preview] for text-to-image, [large] for image-to-image."""
        return self.grids[-1:] if self.pixel_values is not None else self.grids[-2:]

    @property
    def source_grids(self) -> list[Grid]:
        return self.grids[: self.n_sources]

    @property
    def grid_tokens(self) -> int:
        """Tokens the prior generates before EOS: every target grid's h*w."""
        return sum(h * w for _, h, w in self.target_grids)


def smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """transformers' GLM-Image smart_resize, literally (Python's round included): the halved size, rounded to
    `factor`, scaled into [min_pixels, max_pixels] by the edges those bounds imply."""
    if height < factor or width < factor:
        raise InputError(f"a reference image of {width}x{height} px is too small: both sides must be at least "
                         f"{factor} px")
    if max(height, width) / min(height, width) > MAX_ASPECT:
        raise InputError(f"a reference image of {width}x{height} px is too elongated: the longer side may be at most "
                         f"{MAX_ASPECT}x the shorter")
    shortest, longest = int(round(math.sqrt(min_pixels))), int(round(math.sqrt(max_pixels)))
    scale = 1.0
    if min(height, width) < shortest:
        scale = shortest / min(height, width)
    if max(height, width) * scale > longest:
        scale = longest / max(height, width)
    height, width = height // 2, width // 2
    h_bar = max(factor, int(round(height * scale / factor)) * factor)
    w_bar = max(factor, int(round(width * scale / factor)) * factor)
    if max(h_bar, w_bar) > longest:
        beta = max(h_bar, w_bar) / longest
        h_bar = max(factor, int(math.floor((h_bar / beta) / factor)) * factor)
        w_bar = max(factor, int(math.floor((w_bar / beta) / factor)) * factor)
    return h_bar, w_bar


class GlmImageProcessor:
    """Tokenizer + chat template + source-image processor of a GLM-Image checkpoint."""

    def __init__(self, tokenizer: Tokenizer, template: ChatTemplate, tokens: dict[str, str], vision: VisionConfig):
        self.tokenizer, self.template, self.vision = tokenizer, template, vision
        self.image_token, self.grid_bos, self.grid_eos, self.bos = (
            tokens["image_token"], tokens["grid_bos_token"], tokens["grid_eos_token"], tokens["bos_token"])
        self.image_token_id = tokenizer.token_id(self.image_token)

    @classmethod
    def from_pretrained(cls, path: str | Path) -> "GlmImageProcessor":
        """From a GLM-Image root (its processor/ folder) or the processor folder itself."""
        path = Path(path)
        folder = path / PROCESSOR_SUBFOLDER if (path / PROCESSOR_SUBFOLDER).is_dir() else path
        config = read_json(folder / "tokenizer_config.json")
        missing = [k for k in ("image_token", "grid_bos_token", "grid_eos_token", "bos_token") if not config.get(k)]
        if missing:
            raise CheckpointError(f"{folder / 'tokenizer_config.json'} lacks {', '.join(missing)}: a GLM-Image "
                                  "processor names its image, grid and BOS tokens there")
        source = load_chat_template(folder)
        if source is None:
            raise CheckpointError(f"{folder} has no chat template (chat_template.jinja / .json / tokenizer_config)")
        tokenizer = Tokenizer.from_pretrained(folder)
        tokens = {k: v if isinstance(v, str) else v["content"] for k, v in config.items()
                  if k in ("image_token", "grid_bos_token", "grid_eos_token", "bos_token")}
        # transformers 5 writes the image processor into processor_config.json; older files have their own.
        image_cfg = read_json(folder / "processor_config.json").get("image_processor") \
            or read_json(folder / "preprocessor_config.json")
        size = image_cfg.get("size") or {}
        vision = VisionConfig(
            min_pixels=int(size.get("shortest_edge", image_cfg.get("min_pixels", 56 * 56))),
            max_pixels=int(size.get("longest_edge", image_cfg.get("max_pixels", 28 * 28 * 1280))),
            patch_size=int(image_cfg.get("patch_size", 16)), temporal_patch_size=1, merge_size=1,
            image_mean=tuple(image_cfg.get("image_mean", CLIP_MEAN)),
            image_std=tuple(image_cfg.get("image_std", CLIP_STD)),
            rescale_factor=float(image_cfg.get("rescale_factor", 1 / 255)), resample=int(image_cfg.get("resample", 3)))
        if int(image_cfg.get("merge_size", 1)) != 1 or int(image_cfg.get("temporal_patch_size", 1)) != 1:
            raise CheckpointError(f"{folder}: GLM-Image's image processor has merge_size 1 and temporal_patch_size 1")
        return cls(tokenizer, ChatTemplate(source, tokenizer.special_tokens_map), tokens, vision)

    # --- source images ----------------------------------------------------------------------------------------
    def _grid_size(self, height: int, width: int) -> tuple[int, int]:
        v = self.vision
        return smart_resize(height, width, v.patch_size, v.min_pixels, v.max_pixels)

    def reference_size(self, image: Image.Image) -> tuple[int, int]:
        """(width, height) to resize a reference image to: twice its AR grid in 16-px units, so that the prior's
        tokens of it (32 px each) and the DiT's (16 px each) cover the same picture."""
        h, w = self._grid_size(image.height, image.width)
        size = (2 * w, 2 * h)
        if self._grid_size(size[1], size[0]) != (h, w):
            raise InputError(f"a reference image of {image.width}x{image.height} px cannot be brought to a size the "
                             f"processor keeps (bounds {self.vision.min_pixels}..{self.vision.max_pixels} px); "
                             "resize it to multiples of 32 px first")
        return size

    def prepare_reference(self, image: Image.Image) -> Image.Image:
        """An RGB copy of a reference image at reference_size (bicubic), ready for both the prior and the DiT."""
        image = image.convert("RGB")
        size = self.reference_size(image)
        return image if image.size == size else image.resize(size, Image.Resampling.BICUBIC)

    def image_rows(self, image: Image.Image) -> tuple[torch.Tensor, Grid]:
        """Patch rows [h*w, 3*p*p] and grid (1, h, w) of one source image, as GlmImageImageProcessorPil makes them."""
        image = image.convert("RGB")
        h, w = self._grid_size(image.height, image.width)
        pixels = np.asarray(image.resize((w, h), resample=self.vision.resample))
        rows = patchify(pixels[None], self.vision)
        p = self.vision.patch_size
        return torch.from_numpy(rows), (1, h // p, w // p)

    # --- prompts ----------------------------------------------------------------------------------------------
    def __call__(self, prompt: str, height: int, width: int, images: list[Image.Image] = ()) -> PriorPrompt:
        """The prior's input for one prompt and target size (floored to multiples of 32 as the reference does;
        glmv.image.sizes checks sizes before this)."""
        if not isinstance(prompt, str):
            raise InputError(f"the prompt must be a string, got {type(prompt).__name__}")
        content = [{"type": "image"} for _ in images] + [{"type": "text", "text": self.tokenizer.escape(prompt)}]
        text = self.template.render([{"role": "user", "content": content}], add_generation_prompt=False)
        targets = target_grids(height, width, text_to_image=not images)
        grid_text = "".join(f"{self.grid_bos}{h} {w}{self.grid_eos}" for _, h, w in targets)
        ids = self.tokenizer.encode_chat(text + grid_text + self.bos)
        sources = [self.image_rows(im) for im in images]
        ids = self._expand(ids, [g for _, g in sources])
        pixel_values = torch.cat([r for r, _ in sources]) if sources else None
        return PriorPrompt(ids, [g for _, g in sources] + targets, pixel_values)

    def _expand(self, ids: list[int], grids: list[Grid]) -> list[int]:
        """Each `<|image|>` (one per source image, in order) -> its grid's t*h*w placeholders."""
        slots = [i for i, t in enumerate(ids) if t == self.image_token_id]
        if len(slots) != len(grids):
            raise InputError(f"the chat template wrote {len(slots)} image tokens for {len(grids)} reference images")
        out, at = [], 0
        for slot, (t, h, w) in zip(slots, grids):
            out += ids[at:slot] + [self.image_token_id] * (t * h * w)
            at = slot + 1
        return out + ids[at:]
