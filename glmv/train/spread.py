"""How far apart the image tokens the decoder reads are: the collapse detector logged during training.

A vision tower trained under the LM loss alone once collapsed (every image token came out with cosine 1.000 to
every other, docs/training.md) and nothing in the loss curve showed it. The mean pairwise cosine of the
projector's outputs says it directly: across images (tokens of different images; near 1.0 means every image
looks the same to the decoder) and within an image (distinct tokens of one image; near 1.0 means only a
per-image summary is left).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from glmv.inputs.processor import Processor

# One test-split image of each kind (scenes, text, charts, documents), always the same: values logged at
# different steps and in different stages compare.
SPREAD_TASKS = ("color", "shape", "count", "ground", "count_hard", "ocr", "chart_json", "doc_receipt")


def token_cosine(features: torch.Tensor, tokens_per_image: list[int]) -> dict[str, float]:
    """Mean cosine similarity of image-token embeddings [N, D] over pairs from different images ("across") and
    over pairs of distinct tokens of the same image ("within")."""
    f = F.normalize(features.float(), dim=-1)
    sim = f @ f.T
    owner = torch.repeat_interleave(torch.arange(len(tokens_per_image), device=f.device),
                                    torch.tensor(tokens_per_image, device=f.device))
    same = owner[:, None] == owner[None]
    distinct = ~torch.eye(len(f), dtype=torch.bool, device=f.device)
    return {"across": float(sim[~same].mean()), "within": float(sim[same & distinct].mean())}


class SpreadProbe:
    """token_cosine of a model's image tokens on a fixed set of world images."""

    def __init__(self, processor: Processor, tasks: tuple[str, ...] = SPREAD_TASKS):
        from glmv.world import sample

        self.images = [processor.process_image(sample(task, "test", 0).image) for task in tasks]

    @torch.no_grad()
    def __call__(self, model) -> dict[str, float]:
        visual = model.visual
        device = next(visual.parameters()).device
        pixels = torch.cat([f.pixel_values for f in self.images]).to(device, visual.dtype)
        grid = torch.tensor([f.grid_thw for f in self.images], device=device)
        cos = token_cosine(visual(pixels, grid), [f.num_tokens for f in self.images])
        return {"img_cos": round(cos["across"], 4), "img_cos_within": round(cos["within"], 4)}
