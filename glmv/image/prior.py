"""GLM-Image's autoregressive prior: prompt (+ source images) -> logits over the visual vocabulary.

  source images -> ViT (vision.py) -> VQ ids (vq.py) -> written over the `<|image|>` placeholders of input_ids
  input_ids -> embed_tokens -> decoder (decoder.py) with 3-axis positions (positions.py) -> lm_head -> logits

The visual token ids of a source image are ordinary input ids: the decoder sees a source image exactly as it sees
the tokens it generates (spec 1.5). lm_head has only vision_vocab_size rows, so the prior can emit codebook ids,
image start/end (EOS) and reserved ids, never text. Module and tensor names follow the checkpoint
(`model.visual.`, `model.vqmodel.`, `model.language_model.`, `lm_head.`), see weights.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from glmv.errors import InputError
from glmv.image.config import GlmImageConfig
from glmv.image.decoder import text_decoder
from glmv.image.positions import Grid, rope_index
from glmv.image.vision import VisionEncoder
from glmv.image.vq import VQModel
from glmv.model.cache import KVCache


@dataclass
class PriorOutput:
    logits: torch.Tensor  # [B, L, vision_vocab_size] (or [B, keep, ...] with logits_to_keep)
    position_ids: torch.Tensor  # [3, B, L]: the positions this call used (computed for a prompt, or as given)
    decode_positions: torch.Tensor | None  # [B, 3, D]: positions of the generated tokens fed back (positions.py)
    image_ids: list[torch.Tensor] | None = None  # VQ ids [h*w] of each source image encoded by this call


def grids_per_sample(image_grid_thw: torch.Tensor | None, images_per_sample: torch.Tensor | None,
                     batch: int) -> list[list[Grid]] | None:
    """The packed grids [N, 3] split per prompt. Without images_per_sample every prompt gets all of them, as in
    the reference (a text-to-image batch of one target size shares [large, preview])."""
    if image_grid_thw is None:
        return None
    grids = [tuple(int(x) for x in g) for g in image_grid_thw.tolist()]
    if images_per_sample is None:
        return [grids] * batch
    counts = [int(c) for c in images_per_sample.tolist()]
    if len(counts) != batch or sum(counts) != len(grids):
        raise InputError(f"images_per_sample {counts} must give one count per prompt ({batch}) summing to the "
                         f"{len(grids)} grids of image_grid_thw")
    bounds = [sum(counts[:i]) for i in range(batch + 1)]
    return [grids[bounds[i] : bounds[i + 1]] for i in range(batch)]


class GlmImagePrior(nn.Module):
    def __init__(self, config: GlmImageConfig):
        super().__init__()
        self.config = config
        self.visual = VisionEncoder(config.vision)
        self.vqmodel = VQModel(config.vq)
        self.language_model = text_decoder(config.text)
        self.lm_head = nn.Linear(config.text.hidden_size, config.text.vision_vocab_size, bias=False)

    @property
    def dtype(self) -> torch.dtype:
        return self.language_model.embed_tokens.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.language_model.embed_tokens.weight.device

    def new_cache(self, batch: int, capacity: int) -> KVCache:
        """A contiguous KV cache for `capacity` tokens per prompt (prompt + generated)."""
        t = self.config.text
        return KVCache(t.num_hidden_layers, batch, t.num_key_value_heads, t.head_dim, capacity, self.dtype, self.device)

    def image_tokens(self, pixel_values: torch.Tensor, image_grid_thw: torch.Tensor) -> list[torch.Tensor]:
        """Source images' patch rows [sum h*w, C*P*P] and grids [images, 3] -> VQ ids [h*w] per image, row-major."""
        feats = self.visual(pixel_values, image_grid_thw)  # [sum h*w, hidden]
        grids = image_grid_thw.tolist()
        return [self.vqmodel.encode(f, h, w) for f, (_, h, w) in zip(feats.split([h * w for _, h, w in grids]), grids)]

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        image_grid_thw: torch.Tensor | None = None,
        images_per_sample: torch.Tensor | None = None,
        *,
        position_ids: torch.Tensor | None = None,
        image_ids: list[torch.Tensor] | None = None,
        cache: KVCache | None = None,
        logits_to_keep: int = 0,
    ) -> PriorOutput:
        """input_ids [B, L] (left padding: attention_mask [B, past + L], 1 = real) -> PriorOutput.

        image_grid_thw [N, 3] lists, per prompt, its source images' grids (patches) then its target grids
        (32-px tokens: [large, preview] for text-to-image, [large] for image-to-image), packed over the batch with
        images_per_sample [B] (the processor's three outputs). pixel_values [sum source h*w, C*P*P] are the source
        images, encoded here; or pass their VQ ids as `image_ids` (one [h*w] tensor per image, batch order).
        Without position_ids the prompt's positions are computed (a prompt that starts the sequence) together with
        the decode schedule; generated tokens fed back after a cached prefix take `position_ids` [3, B, n] from
        that schedule (positions.step_positions).
        """
        cfg = self.config
        b = input_ids.shape[0]
        if cache is not None and cache.length and position_ids is None:
            raise InputError("tokens after a cached prefix need position_ids: take them from the prompt's "
                             "decode_positions with glmv.image.positions.step_positions")
        grids = grids_per_sample(image_grid_thw, images_per_sample, b)
        if pixel_values is not None:
            if grids is None:
                raise InputError("pixel_values was given without image_grid_thw")
            image_ids = self.image_tokens(pixel_values, self._source_grids(input_ids, attention_mask, grids))
        ids = input_ids
        if image_ids:
            slots = input_ids == cfg.image_token_id
            n_ids = sum(i.numel() for i in image_ids)
            if int(slots.sum()) != n_ids:
                raise InputError(f"the prompt has {int(slots.sum())} <|image|> placeholders but the source images give "
                                 f"{n_ids} tokens; expand each image's placeholder to its grid's h*w tokens")
            ids = input_ids.masked_scatter(slots, torch.cat(image_ids).to(input_ids.device))
        decode = None
        if position_ids is None:
            # From the prompt as given: the image start/end tokens delimit the source images. (The reference reads
            # them after the VQ ids are written; the same unless a codebook id equals one of those two ids.)
            pad = attention_mask[:, -input_ids.shape[1] :] if attention_mask is not None else None
            position_ids, decode = rope_index(input_ids, grids, pad, cfg.image_start_token_id, cfg.image_end_token_id)
        h = self.language_model(self.language_model.embed_tokens(ids), position_ids, attention_mask, cache)
        logits = self.lm_head(h[:, -logits_to_keep:] if logits_to_keep else h)
        return PriorOutput(logits, position_ids, decode, image_ids if pixel_values is not None else None)

    def _source_grids(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                      grids: list[list[Grid]]) -> torch.Tensor:
        """The grids of the prompts' source images [images, 3]: each prompt's first k grids, k = its image end
        tokens (not counting padding, whose id the tokenizer shares with image end)."""
        real = attention_mask[:, -input_ids.shape[1] :].bool() if attention_mask is not None else None
        ends = input_ids == self.config.image_end_token_id
        counts = (ends & real if real is not None else ends).sum(1).tolist()
        sources = [g for row, k in enumerate(counts) for g in grids[row][:k]]
        if not sources:
            raise InputError("pixel_values was given but no prompt has a source image (image start, <|image|> "
                             "placeholders, image end)")
        return torch.tensor(sources, device=input_ids.device)
