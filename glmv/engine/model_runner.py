"""The model runner: turns one scheduled forward (sequences, and how many of their tokens to compute) into the
model's tensors, runs the model over the paged cache, and returns each row's next-token logits.

Rows are left-padded to the longest chunk; a row's keys are its cached tokens (left-padded to the longest
context) followed by its chunk. Everything is prepared here as tensors (ids, types, 3D positions, media rows,
slots, padding mask), so the model itself sees plain shapes.
"""

from __future__ import annotations

import torch

from glmv.engine.paged_kv import PagedKVCache
from glmv.engine.sequence import Sequence
from glmv.model.glm4v import GlmvForConditionalGeneration
from glmv.model.positions import IMAGE, VIDEO


class ModelRunner:
    def __init__(self, model: GlmvForConditionalGeneration, cache: PagedKVCache):
        self.model, self.cache = model, cache

    @torch.inference_mode()
    def forward(self, work: list[tuple[Sequence, int]]) -> torch.Tensor:
        """work: (sequence, tokens to compute from its num_computed on). Writes their keys/values and returns the
        logits [B, vocab] (fp32) after each row's last computed token."""
        device = self.model.device
        b = len(work)
        q = max(n for _, n in work)
        past = max(seq.num_computed for seq, _ in work)
        ids = torch.zeros(b, q, dtype=torch.long)
        types = torch.zeros(b, q, dtype=torch.long)
        positions = torch.zeros(3, b, q, dtype=torch.long)
        mask = torch.zeros(b, past + q, dtype=torch.long)
        write = torch.full((b, q), self.cache.pad_slot, dtype=torch.long)
        read = torch.full((b, past + q), self.cache.pad_slot, dtype=torch.long)
        media: dict[int, list[torch.Tensor]] = {IMAGE: [], VIDEO: []}
        for i, (seq, n) in enumerate(work):
            start, end = seq.num_computed, seq.num_computed + n
            ids[i, q - n :] = torch.tensor(seq.tokens(start, end))
            types[i, q - n :] = seq.types(start, end)
            positions[:, i, q - n :] = seq.positions(start, end)
            slots = self.cache.slots(seq.block_table, end)  # [end]: every computed token's slot, and the new ones
            write[i, q - n :] = slots[start:]
            read[i, past - start : past] = slots[:start]
            read[i, past + q - n :] = slots[start:]
            mask[i, past - start : past] = 1
            mask[i, past + q - n :] = 1
            for kind in (IMAGE, VIDEO):
                rows = seq.media_rows(kind, start, end)
                if rows is not None:
                    media[kind].append(rows)
        step = self.cache.step(write.to(device), read.to(device))
        out = self.model(
            ids.to(device), attention_mask=mask.to(device), mm_token_type_ids=types.to(device),
            position_ids=positions.to(device), cache=step, image_embeds=media[IMAGE], video_embeds=media[VIDEO],
            logits_to_keep=1,
        )
        return out.logits[:, -1].float()
