"""The prior's decoder: GLM-4-0414 layers (sandwich norms, fused SwiGLU) with GLM-4.5V's rotary.

  h += norm_post_self_attn(Attn(norm_in(h)));  h += norm_post_mlp(MLP(norm_post_attn(h)))

The mix is GLM-Image's own: glmv's dense GLM-4.1V decoder has these sandwich norms but rotates GPT-J style
(interleaved pairs), and GLM-4.5V rotates NeoX style (halves) but has no sandwich norms. GLM-Image's rotary class
inherits GLM-4.5V's (spec 1.6): NeoX `rotate_half` over the first rotary_dim dims, 3-axis M-RoPE sections. So it
is glmv.model.text's TextModel with both styles given.
"""

from __future__ import annotations

from glmv.image.config import ImageTextConfig
from glmv.model.text import TextModel


def text_decoder(cfg: ImageTextConfig) -> TextModel:
    """embed_tokens + layers + final norm (the checkpoint's `model.language_model.*`)."""
    return TextModel(cfg, sandwich=True, interleaved=False)
