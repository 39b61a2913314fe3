"""The full GLM-V model: vision tower + projector, embedding merge, 3D positions, decoder, LM head."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from glmv.config import GlmvConfig
from glmv.errors import InputError
from glmv.model.cache import KVCache
from glmv.model.positions import IMAGE, VIDEO, rope_index, token_types
from glmv.model.text import TextModel
from glmv.model.vision import VisionTower


@dataclass
class ModelOutput:
    logits: torch.Tensor  # [B, L, vocab] (or [B, keep, vocab] with logits_to_keep)
    rope_deltas: torch.Tensor  # [B]; a token decoded at real index n has position n + delta
    hidden_states: torch.Tensor | None = None  # [B, L, hidden] final-norm states of every position, when asked for


class GlmvForConditionalGeneration(nn.Module):
    def __init__(self, config: GlmvConfig):
        super().__init__()
        self.config = config
        self.visual = VisionTower(config.vision)
        self.language_model = TextModel(config.text)
        self.lm_head = nn.Linear(config.text.hidden_size, config.text.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.language_model.embed_tokens.weight

    # the embedding table: never quantised (a quantised lm_head has no float `weight`)
    @property
    def dtype(self) -> torch.dtype:
        return self.language_model.embed_tokens.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.language_model.embed_tokens.weight.device

    # --- vision -------------------------------------------------------------------------------------------------
    def encode_images(self, pixel_values: torch.Tensor, image_grid_thw: torch.Tensor) -> list[torch.Tensor]:
        """-> one [tokens_i, hidden] tensor per image."""
        out = self.visual(pixel_values.to(self.visual.dtype), image_grid_thw)
        return list(out.split((image_grid_thw.prod(-1) // self.config.vision.spatial_merge_size**2).tolist()))

    def encode_videos(self, pixel_values_videos: torch.Tensor, video_grid_thw: torch.Tensor) -> list[torch.Tensor]:
        """-> one [tokens_i, hidden] tensor per video (all its 2-frame slices, in order)."""
        # Each slice is its own attention item: (t, h, w) -> t x (1, h, w), as the reference does.
        t = video_grid_thw[:, 0]
        per_slice = torch.cat([torch.ones_like(t).repeat_interleave(t)[:, None], video_grid_thw[:, 1:].repeat_interleave(t, 0)], 1)
        out = self.visual(pixel_values_videos.to(self.visual.dtype), per_slice)
        return list(out.split((video_grid_thw.prod(-1) // self.config.vision.spatial_merge_size**2).tolist()))

    # --- text ---------------------------------------------------------------------------------------------------
    def token_types(self, input_ids: torch.Tensor) -> torch.Tensor:
        c = self.config
        return token_types(input_ids, c.image_token_id, c.video_start_token_id, c.video_end_token_id)

    def embed(
        self,
        input_ids: torch.Tensor,
        types: torch.Tensor,
        image_embeds: list[torch.Tensor] | None = None,
        video_embeds: list[torch.Tensor] | None = None,
        trust_types: bool = False,
    ) -> torch.Tensor:
        """Token embeddings with the placeholder rows replaced by vision features, in order. The placeholders are
        counted against the features (a host sync) when features come or the types were read off input_ids;
        a caller that gives the types and no features (an engine's decode step, checked at admission) is
        trusted, so that step reads no device values."""
        x = self.language_model.embed_tokens(input_ids)
        if image_embeds or video_embeds or not trust_types:
            check_media_slots(types, image_embeds, video_embeds)
        for kind, feats in ((IMAGE, image_embeds), (VIDEO, video_embeds)):
            slots = types == kind
            if feats:
                x = x.masked_scatter(slots[..., None], torch.cat(feats).to(x.dtype))
        return x

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        image_grid_thw: torch.Tensor | None = None,
        pixel_values_videos: torch.Tensor | None = None,
        video_grid_thw: torch.Tensor | None = None,
        *,
        mm_token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        cache: KVCache | None = None,
        image_embeds: list[torch.Tensor] | None = None,
        video_embeds: list[torch.Tensor] | None = None,
        logits_to_keep: int = 0,
        return_hidden: bool = False,
    ) -> ModelOutput:
        """input_ids [B, L] (left padding marked by attention_mask [B, past + L]) -> logits [B, L, vocab].

        Without `position_ids` the 3D positions are computed from input_ids and the grids, which is right for a
        prompt that starts at position 0. Callers that continue a cached sequence pass `position_ids` [3, B, L];
        `image_embeds` / `video_embeds` skip the vision tower for media encoded earlier. Token types (text /
        image / video frame) are read off input_ids unless `mm_token_type_ids` [B, L] gives them: generated
        tokens are always text, even when a model emits a placeholder id.
        """
        if pixel_values is not None:
            if image_grid_thw is None:
                raise InputError("pixel_values was given without image_grid_thw")
            image_embeds = self.encode_images(pixel_values, image_grid_thw)
        if pixel_values_videos is not None:
            if video_grid_thw is None:
                raise InputError("pixel_values_videos was given without video_grid_thw")
            video_embeds = self.encode_videos(pixel_values_videos, video_grid_thw)
        types = self.token_types(input_ids) if mm_token_type_ids is None else mm_token_type_ids
        if position_ids is None:
            pad_mask = attention_mask[:, -input_ids.shape[1] :] if attention_mask is not None else None
            position_ids, deltas = rope_index(
                types, image_grid_thw, video_grid_thw, pad_mask, self.config.vision.spatial_merge_size
            )
        else:
            deltas = torch.zeros(input_ids.shape[0], dtype=torch.long, device=input_ids.device)
        x = self.embed(input_ids, types, image_embeds, video_embeds, trust_types=mm_token_type_ids is not None)
        h = self.language_model(x, position_ids, attention_mask, cache)
        logits = self.lm_head(h[:, -logits_to_keep:] if logits_to_keep else h)
        return ModelOutput(logits, deltas, h if return_hidden else None)


def check_media_slots(types: torch.Tensor, image_embeds: list[torch.Tensor] | None,
                      video_embeds: list[torch.Tensor] | None) -> None:
    """InputError unless the image / video placeholder tokens (as typed by token_types) match the features."""
    for kind, feats, name in ((IMAGE, image_embeds, "image"), (VIDEO, video_embeds, "video")):
        n_slots = int((types == kind).sum())
        n_feats = sum(f.shape[0] for f in feats) if feats else 0
        if n_slots != n_feats:
            raise InputError(
                f"the prompt has {n_slots} {name} placeholder tokens but the {name}s give {n_feats} features; "
                "build prompts with glmv.Processor so placeholders are expanded to match the grids"
            )
