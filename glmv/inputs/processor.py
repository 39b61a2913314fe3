"""``glmv.Processor``: messages → model inputs (token ids, pixel rows, grids), like transformers' Glm4vProcessor.

The pieces are exposed separately (render, process_image, process_video, encode_prompt) so the engine can cache
per-image results and run media work in its own workers.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from glmv.errors import InputError, MediaTooLargeError
from glmv.inputs.chat import (
    ChatTemplate,
    MediaRef,
    load_chat_template,
    normalize_messages,
)
from glmv.inputs.image import ImageFeatures, VisionConfig, pixel_value_bytes, process_image
from glmv.inputs.limits import DecodeBudget, MediaLimits
from glmv.inputs.media import VideoInfo, decode_frame_list, decode_video, load_image
from glmv.inputs.placeholders import MediaTokens, expand_placeholders
from glmv.inputs.tokenizer import Tokenizer, read_json
from glmv.inputs.video import (
    VideoConfig,
    VideoFeatures,
    process_resized_video,
    resize_frame,
    sample_indices,
)

IMAGE_DEFAULTS = VisionConfig(min_pixels=112 * 112, max_pixels=28 * 28 * 15000)


def detect_video_rule(*configs: dict) -> str:
    """``glm46v`` when any processor/model config names the GLM-4.6V processor or model type, else ``glm4v``."""
    for config in configs:
        for key in ("processor_class", "video_processor_type", "image_processor_type", "model_type"):
            value = str(config.get(key) or "").lower()
            if "glm46v" in value:
                return "glm46v"
    return "glm4v"


class Processor:
    """Tokenizer + chat template + image/video processors of one checkpoint."""

    def __init__(self, tokenizer: Tokenizer, template: ChatTemplate | None = None,
                 image_config: VisionConfig = IMAGE_DEFAULTS, video_config: VideoConfig = VideoConfig(),
                 limits: MediaLimits = MediaLimits()):
        self.tokenizer = tokenizer
        self.template = template or ChatTemplate(None, tokenizer.special_tokens_map)
        self.image_config = image_config
        self.video_config = video_config
        self.limits = limits
        self.media_tokens = MediaTokens.from_tokenizer(tokenizer)

    @classmethod
    def from_pretrained(cls, path: str | Path, limits: MediaLimits | None = None) -> "Processor":
        """Load tokenizer.json, the chat template and (pre)processor configs from a checkpoint directory."""
        path = Path(path)
        tokenizer = Tokenizer.from_pretrained(path)
        image_cfg = read_json(path / "preprocessor_config.json")
        video_cfg = read_json(path / "video_preprocessor_config.json")
        rule = detect_video_rule(image_cfg, video_cfg, read_json(path / "processor_config.json"),
                                 read_json(path / "config.json"))
        return cls(tokenizer, ChatTemplate(load_chat_template(path), tokenizer.special_tokens_map),
                   VisionConfig.from_dict(image_cfg, IMAGE_DEFAULTS), VideoConfig.from_dict(video_cfg, rule),
                   limits or MediaLimits())

    # -- text ------------------------------------------------------------------------------------------------
    def render(self, messages: list[dict], add_generation_prompt: bool = True, enable_thinking: bool | None = None,
               tools: list[dict] | None = None, **template_kwargs: Any) -> str:
        """The prompt text, placeholders unexpanded (one ``<|image|>`` per image, one ``<|video|>`` per video)."""
        normalized, _ = normalize_messages(messages)
        return self.tokenizer.unescape(self.render_chat(normalized, add_generation_prompt, tools, enable_thinking,
                                                        **template_kwargs))

    def render_chat(self, normalized: list[dict], add_generation_prompt: bool = True, tools: list[dict] | None = None,
                    enable_thinking: bool | None = None, **template_kwargs: Any) -> str:
        """Render normalised messages with the client's text marked literal (see Tokenizer.escape): the text of
        system, user and tool messages and every string of the tool definitions. Assistant turns are the
        model's own output played back, with their <think> and tool-call tags: they render as given.
        Encode the result with encode_prompt."""
        escaped = [m if m.get("role") == "assistant" else _escape_content(m, self.tokenizer.escape) for m in normalized]
        tools = _escape_strings(tools, self.tokenizer.escape) if tools else tools
        return self.template.render(escaped, add_generation_prompt, tools, enable_thinking, **template_kwargs)

    def decode(self, ids: Sequence[int] | torch.Tensor, skip_special_tokens: bool = False) -> str:
        if isinstance(ids, torch.Tensor):
            ids = ids.flatten().tolist()
        return self.tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)

    # -- media -----------------------------------------------------------------------------------------------
    def process_image(self, source: Any) -> ImageFeatures:
        """Load (within the limits) and process one image."""
        return process_image(load_image(source, self.limits), self.image_config)

    def process_video(self, source: Any, fps: float | None = None, budget: DecodeBudget | None = None,
                      ) -> VideoFeatures:
        """A video file/bytes/URL, or a list / (T, H, W, 3) array of frames shot at ``fps`` (default 2).

        Its pixel values are charged to ``budget`` (default: a fresh one of the processor's limits) before any frame
        is decoded, and each frame is resized as soon as it is decoded.
        """
        cfg = self.video_config
        budget = budget or DecodeBudget(self.limits)

        def choose(info: VideoInfo) -> list[int]:
            indices = sample_indices(info, cfg)
            budget.charge(pixel_value_bytes(info.height, info.width, cfg.vision, len(indices)),
                          f"the video ({len(indices)} frames of {info.width}x{info.height})")
            return indices

        resize = partial(resize_frame, cfg=cfg.vision)
        if isinstance(source, (list, tuple, np.ndarray)) or (isinstance(source, torch.Tensor) and source.ndim == 4):
            # a torch tensor is (T, C, H, W), the torchvision convention: its frames are (C, H, W) images
            decoded = decode_frame_list(list(source), float(fps or 2.0), choose, self.limits, resize)
        else:
            decoded = decode_video(source, choose, self.limits, resize=resize)
        return process_resized_video(decoded.frames, decoded.indices, decoded.info.fps, cfg)

    def process_media(self, media: Sequence[MediaRef]) -> tuple[list[ImageFeatures], list[VideoFeatures]]:
        """Process every media item within one request's limits; errors name the message and part they came from."""
        n_images = sum(m.kind == "image" for m in media)
        n_videos = len(media) - n_images
        if n_images > self.limits.max_images:
            raise MediaTooLargeError(f"{n_images} images in the request, over the limit of {self.limits.max_images}")
        if n_videos > self.limits.max_videos:
            raise MediaTooLargeError(f"{n_videos} videos in the request, over the limit of {self.limits.max_videos}")
        budget = DecodeBudget(self.limits)

        def charge_image(width: int, height: int) -> None:
            budget.charge(pixel_value_bytes(height, width, self.image_config), f"the image ({width}x{height})")

        images, videos = [], []
        for ref in media:
            try:
                if ref.kind == "image":
                    image = load_image(ref.source, self.limits, charge_image)
                    images.append(process_image(image, self.image_config))
                else:
                    videos.append(self.process_video(ref.source, ref.fps, budget))
            except InputError as e:
                raise type(e)(f"{ref.where}: {e}") from None
        return images, videos

    # -- everything together ---------------------------------------------------------------------------------
    def encode_prompt(self, text: str, images: Sequence[ImageFeatures] = (), videos: Sequence[VideoFeatures] = (),
                      ) -> tuple[list[int], list[int]]:
        """Tokenize a rendered prompt (from render_chat) and expand its placeholders → (input ids,
        mm_token_type_ids)."""
        return expand_placeholders(self.tokenizer.encode_chat(text), images, videos, self.media_tokens,
                                   self.tokenizer.encode, self.video_config.rule)

    def apply_chat_template(self, messages: list[dict] | list[list[dict]], add_generation_prompt: bool = True,
                            enable_thinking: bool | None = None, tools: list[dict] | None = None,
                            **template_kwargs: Any) -> dict[str, torch.Tensor | None]:
        """One conversation, or a list of them (left-padded with the tokenizer's pad id), → model inputs:
        ``input_ids``/``attention_mask``/``mm_token_type_ids`` [B, L], ``pixel_values`` [N, 1176] +
        ``image_grid_thw`` [n, 3], ``pixel_values_videos`` + ``video_grid_thw`` (None when unused)."""
        batched = isinstance(messages, (list, tuple)) and bool(messages) and isinstance(messages[0], (list, tuple))
        conversations = list(messages) if batched else [messages]
        normalized = [normalize_messages(conv) for conv in conversations]
        images, videos = self.process_media([ref for _, media in normalized for ref in media])
        rows, image_at, video_at = [], 0, 0
        for conv, media in normalized:
            n_img = sum(m.kind == "image" for m in media)
            n_vid = len(media) - n_img
            text = self.render_chat(conv, add_generation_prompt, tools, enable_thinking, **template_kwargs)
            rows.append(self.encode_prompt(text, images[image_at:image_at + n_img], videos[video_at:video_at + n_vid]))
            image_at, video_at = image_at + n_img, video_at + n_vid
        return self._collate(rows, images, videos)

    def _collate(self, rows: list[tuple[list[int], list[int]]], images: list[ImageFeatures],
                 videos: list[VideoFeatures]) -> dict[str, torch.Tensor | None]:
        input_ids, attention_mask = left_pad([ids for ids, _ in rows], self.tokenizer.pad_token_id)
        mm_types, _ = left_pad([types for _, types in rows], 0)
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "mm_token_type_ids": mm_types,
            "pixel_values": torch.cat([f.pixel_values for f in images]) if images else None,
            "image_grid_thw": torch.tensor([f.grid_thw for f in images], dtype=torch.long) if images else None,
            "pixel_values_videos": torch.cat([f.pixel_values for f in videos]) if videos else None,
            "video_grid_thw": torch.tensor([f.grid_thw for f in videos], dtype=torch.long) if videos else None,
        }


def left_pad(rows: Sequence[Sequence[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of ids -> (ids [B, L], attention mask [B, L]), left-padded with `pad`: generation (and last-token
    pooling) continues at the right edge."""
    length = max(len(r) for r in rows)
    ids = torch.full((len(rows), length), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    for b, r in enumerate(rows):
        ids[b, length - len(r):] = torch.tensor(r, dtype=torch.long)
        mask[b, length - len(r):] = 1
    return ids, mask


def _escape_content(message: dict, escape: Callable[[str], str]) -> dict:
    """A copy of a normalised message with its text (a string, or the text parts) escaped."""
    content = message.get("content")
    if isinstance(content, str):
        return {**message, "content": escape(content)}
    if isinstance(content, list):
        return {**message, "content": [{**p, "text": escape(p["text"])} if p.get("type") == "text" else p
                                       for p in content]}
    return message


def _escape_strings(value: Any, escape: Callable[[str], str]) -> Any:
    """Every string in a JSON-like value (keys included) escaped."""
    if isinstance(value, str):
        return escape(value)
    if isinstance(value, dict):
        return {escape(k) if isinstance(k, str) else k: _escape_strings(v, escape) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_escape_strings(v, escape) for v in value]
    return value
