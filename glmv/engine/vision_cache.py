"""Vision encoding with memory: each distinct image / video goes through the vision tower once.

Keys are content hashes of the processed pixels and grid, so the same picture sent again (another turn, another
request) reuses its embeddings; with served LoRA adapters that adapt the vision tower or projector, the adapter
the caller encodes under (glmv/lora/serving.py: lora_scope) is part of the key. Misses of one call are encoded
together in a single tower call. The cache is an LRU bounded in bytes; a conversation pins its own media by
holding the returned tensors.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict

import torch

from glmv.inputs.image import ImageFeatures
from glmv.inputs.video import VideoFeatures
from glmv.lora.serving import vision_tag
from glmv.model.glm4v import GlmvForConditionalGeneration


def media_key(pixel_values: torch.Tensor, grid_thw: tuple[int, int, int]) -> str:
    h = hashlib.blake2b(digest_size=16)
    h.update(repr(tuple(grid_thw)).encode())
    h.update(pixel_values.contiguous().view(torch.uint8).numpy().tobytes() if pixel_values.numel() else b"")
    return h.hexdigest()


class VisionCache:
    def __init__(self, model: GlmvForConditionalGeneration, max_bytes: int = 512 * 1024**2):
        self.model = model
        self.max_bytes = max_bytes
        self.entries: OrderedDict[str, torch.Tensor] = OrderedDict()
        self.bytes = 0
        self.encoder_calls = 0  # vision tower invocations (tests count them)
        self.encoded_items = 0  # images + videos actually encoded
        self.lock = threading.Lock()  # requests are prepared in worker threads

    def clear(self) -> None:
        """Forget everything (the model's weights changed)."""
        with self.lock:
            self.entries.clear()
            self.bytes = 0

    def _remember(self, key: str, value: torch.Tensor) -> None:
        self.entries[key] = value
        self.bytes += value.numel() * value.element_size()
        while self.bytes > self.max_bytes and len(self.entries) > 1:
            _, old = self.entries.popitem(last=False)
            self.bytes -= old.numel() * old.element_size()

    def _lookup(self, feats: list, encode) -> list[torch.Tensor]:
        with self.lock:
            return self._lookup_locked(feats, encode)

    def _lookup_locked(self, feats: list, encode) -> list[torch.Tensor]:
        tag = vision_tag(self.model)  # the adapter this thread encodes under, if it adapts the vision tower
        keys = [media_key(f.pixel_values, f.grid_thw) + tag for f in feats]
        found, missing = {}, {}
        for k, f in zip(keys, feats):
            if k in self.entries:
                self.entries.move_to_end(k)
                found[k] = self.entries[k]
            else:
                missing.setdefault(k, f)
        if missing:
            pixels = torch.cat([f.pixel_values for f in missing.values()]).to(self.model.device)
            grids = torch.tensor([f.grid_thw for f in missing.values()], device=self.model.device)
            with torch.inference_mode():
                out = encode(pixels, grids)
            self.encoder_calls += 1
            self.encoded_items += len(missing)
            for k, embeds in zip(missing, out):
                found[k] = embeds
                self._remember(k, embeds)
        return [found[k] for k in keys]  # not from self.entries: this call's own misses may be evicted already

    def images(self, feats: list[ImageFeatures]) -> list[torch.Tensor]:
        """One [tokens, hidden] embedding tensor per image, encoding only the ones not seen before."""
        return self._lookup(feats, self.model.encode_images) if feats else []

    def videos(self, feats: list[VideoFeatures]) -> list[torch.Tensor]:
        return self._lookup(feats, self.model.encode_videos) if feats else []
