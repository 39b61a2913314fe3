"""How the prior samples: the checkpoint's defaults, and the rule that makes every output a whole image.

Defaults (spec 1.4): the prior's generation_config.json decides; where it is silent, GLM-Image's published values,
temperature 0.9 and top_p 0.75 (the diffusers pipeline always samples), and top_k 50, which is what transformers'
`generate` applies when the file sets no top_k (so glmv samples as diffusers does for such a checkpoint).

The grid rule: the prior must write exactly the target grids' tokens, then EOS. lm_head also covers image start,
image end (= EOS) and reserved ids, and an early EOS would leave the grid short (spec 1.4, "EOS hazard"), so until
the last grid is full only codebook ids may be drawn; after it, EOS is forced.
"""

from __future__ import annotations

from pathlib import Path

import torch

from glmv.engine.sampling import SamplingParams
from glmv.inputs.tokenizer import read_json

TEMPERATURE, TOP_P, TOP_K = 0.9, 0.75, 50


def prior_sampling(prior_dir: str | Path) -> SamplingParams:
    """The prior's sampling parameters from its generation_config.json (do_sample false: greedy)."""
    gen = read_json(Path(prior_dir) / "generation_config.json")
    if gen.get("do_sample") is False:
        return SamplingParams(temperature=0.0)
    return SamplingParams(temperature=float(gen.get("temperature") or TEMPERATURE),
                          top_p=float(gen.get("top_p") or TOP_P), top_k=int(gen.get("top_k") or TOP_K))


class GridRule:
    """A per-sequence logits processor (glmv.engine.sequence.Sequence.logits_processor): codebook ids only for
    the first `n_tokens` tokens, then EOS alone."""

    def __init__(self, n_tokens: int, codebook_size: int, eos_id: int):
        self.n_tokens, self.codebook_size, self.eos_id = n_tokens, codebook_size, eos_id

    def __call__(self, output_ids: list[int], logits: torch.Tensor) -> torch.Tensor:
        out = logits.clone()
        if len(output_ids) < self.n_tokens:
            out[self.codebook_size :] = float("-inf")
        else:
            out.fill_(float("-inf"))
            out[self.eos_id] = 0.0
        return out
