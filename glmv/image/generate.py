"""The prior's generation on glmv's engine: prompt -> visual tokens -> the DiT's prior ids (spec 1.4).

The prior's decoder is glmv's TextModel, so it runs on the same engine as the chat models: paged KV cache,
continuous batching (a request's n images, a sweep's seeds, decode together), chunked prefill. Two per-sequence
hooks of the engine carry what is GLM-Image's own: `Layout.decode_positions` (generated tokens take the grid
schedule of positions.py, not index + delta) and `Sequence.logits_processor` (sampling.GridRule). Source images
are no media rows: their VQ ids are written over the placeholders, ordinary tokens for the decoder.

Prefix caching is off for the prior: a cached block is keyed by its token ids, and the same ids of a source
image at another grid shape would need other positions.

After generation the preview raster is dropped, the large grid [h, w] kept and upsampled x2 by nearest neighbour
(an AR token covers 32 px, a DiT token 16 px), as diffusers' `_upsample_token_ids`; source images' ids too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import torch

from glmv.engine.engine import Engine, EngineConfig
from glmv.engine.paged_kv import PagedKVCache
from glmv.engine.sampling import SamplingParams
from glmv.engine.sequence import Layout, Sequence
from glmv.errors import ContextLengthError, GlmvError
from glmv.image.positions import rope_index
from glmv.image.prior import GlmImagePrior
from glmv.image.processor import PriorPrompt
from glmv.image.sampling import GridRule

KV_CONTEXTS = 4  # default paged KV cache: room for this many full contexts
Progress = Callable[[str, int, int], None]  # (stage, done, total)


class GenerationCancelled(GlmvError):
    """The caller (or an HTTP client that left) stopped the generation."""

    http_status = 499
    code = "cancelled"


@dataclass
class PriorTokens:
    """One generated image's conditioning for the DiT."""

    ids: torch.Tensor  # [(2h) * (2w)] the large grid upsampled x2, row-major
    grid: tuple[int, int]  # (h, w) of the large grid in 32-px tokens
    generated: list[int]  # every token the prior wrote: preview raster, large raster, EOS
    source_ids: torch.Tensor | None = None  # [sum (2h_i)(2w_i)] the source images' ids upsampled x2
    source_grids: torch.Tensor | None = None  # [n, 3] their grids upsampled x2 (t, 2h, 2w)


def upsample(ids: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Nearest-neighbour x2 of an id map [h*w] -> [(2h)*(2w)]: each id becomes a 2x2 block."""
    return ids.view(h, w).repeat_interleave(2, 0).repeat_interleave(2, 1).flatten()


class _EngineModel:
    """The prior as the engine's runner calls a model (no media rows, no token types: every id is a token)."""

    def __init__(self, prior: GlmImagePrior):
        self.prior, self.config, self.language_model = prior, prior.config, prior.language_model
        self.dtype, self.device = prior.dtype, prior.device

    def __call__(self, input_ids, *, position_ids, cache, logits_to_keep, **_media):
        return self.prior(input_ids, position_ids=position_ids, cache=cache, logits_to_keep=logits_to_keep)


class PriorGenerator:
    def __init__(self, prior: GlmImagePrior, defaults: SamplingParams, max_model_len: int = 16384,
                 kv_cache_memory: int | None = None, block_size: int = 16, max_num_batched_tokens: int = 2048):
        self.prior, self.defaults = prior, defaults
        cfg = prior.config
        if kv_cache_memory is None:  # not the engine's GPU default (half the free memory): the DiT needs it
            t = cfg.text
            per_token = PagedKVCache.bytes_per_block(t.num_hidden_layers, 1, t.num_key_value_heads, t.head_dim,
                                                     prior.dtype)
            kv_cache_memory = KV_CONTEXTS * max_model_len * per_token
        self.engine = Engine(_EngineModel(prior), [cfg.image_end_token_id], max_model_len,
                             EngineConfig(block_size=block_size, kv_cache_memory=kv_cache_memory,
                                          max_num_batched_tokens=max_num_batched_tokens, enable_prefix_caching=False))

    def params(self, seed: int | None = None, **overrides) -> SamplingParams:
        """The checkpoint's sampling defaults with a seed and any overrides (temperature, top_p, top_k)."""
        return replace(self.defaults, seed=seed, **{k: v for k, v in overrides.items() if v is not None})

    @torch.inference_mode()
    def generate(self, prompt: PriorPrompt, samples: list[SamplingParams], progress: Progress | None = None,
                 cancelled: Callable[[], bool] | None = None) -> list[PriorTokens]:
        """One image's tokens per entry of `samples` (decoded together as one batch)."""
        cfg = self.prior.config
        ids = torch.tensor([prompt.ids])
        positions, decode = rope_index(ids, [prompt.grids], None, cfg.image_start_token_id, cfg.image_end_token_id)
        source_ids = None
        if prompt.pixel_values is not None:
            grids = torch.tensor(prompt.source_grids, device=self.prior.device)
            per_image = self.prior.image_tokens(prompt.pixel_values.to(self.prior.device, self.prior.dtype), grids)
            source_ids = torch.cat(per_image).cpu()
            ids = ids.masked_scatter(ids == cfg.image_token_id, source_ids)
        n_new = prompt.grid_tokens + 1
        if len(prompt.ids) + n_new > self.engine.max_model_len:
            raise ContextLengthError(f"the prompt ({len(prompt.ids)} tokens, reference images included) and the "
                                     f"{n_new} image tokens to generate exceed the prior's context of "
                                     f"{self.engine.max_model_len}; shorten the prompt or use smaller images")
        n = ids.shape[1]
        layout = Layout(torch.zeros(n, dtype=torch.long), positions[:, 0], 0, None, None, [0] * (n + 1), [0] * (n + 1),
                        decode_positions=decode[0])
        rule = GridRule(prompt.grid_tokens, cfg.vq.num_embeddings, cfg.image_end_token_id)
        seqs = [Sequence(ids[0].tolist(), replace(p, max_tokens=n_new, min_tokens=0, stop_token_ids=None,
                                                     ignore_eos=False), layout=layout, logits_processor=rule)
                for p in samples]
        total = n_new * len(seqs)
        done = 0
        for produced in self.engine.run(seqs):
            if cancelled is not None and cancelled():
                raise GenerationCancelled("the image generation was cancelled")
            done += len(produced)
            if progress is not None:
                progress("prior", done, total)
        return [self._tokens(prompt, seq.output_ids, source_ids) for seq in seqs]

    def _tokens(self, prompt: PriorPrompt, generated: list[int], source_ids: torch.Tensor | None) -> PriorTokens:
        _, h, w = prompt.target_grids[0]  # the large grid; text-to-image writes the preview before it
        skip = prompt.grid_tokens - h * w
        large = torch.tensor(generated[skip : skip + h * w])
        out = PriorTokens(upsample(large, h, w), (h, w), list(generated))
        if source_ids is not None:
            pieces = source_ids.split([t * gh * gw for t, gh, gw in prompt.source_grids])
            out.source_ids = torch.cat([upsample(p, gh, gw) for p, (_, gh, gw) in zip(pieces, prompt.source_grids)])
            out.source_grids = torch.tensor([(t, 2 * gh, 2 * gw) for t, gh, gw in prompt.source_grids])
        return out
