"""GLM-Image (zai-org/GLM-Image) in glmv. Step 1: the autoregressive prior, its loader and its position schedule.

    config.py     GlmImageConfig from the prior's config.json (model_type glm_image)
    decoder.py    the GLM-4-style decoder with GLM-4.5V's 3-axis rotary
    vision.py     the ViT that encodes source images (image-to-image)
    vq.py         the VQ quantiser: ViT features -> visual token ids
    positions.py  prompt positions, target grids and the decode schedule (preview grid first, then the large one)
    prior.py      GlmImagePrior: the whole prior, logits over the visual vocabulary
    weights.py    load_prior from a checkpoint's vision_language_encoder/ (or the GLM-Image root)

Not here yet: generation on glmv's engine, the DiT / VAE side (diffusers), `glmv draw`, the images API
(docs/glm-image.md).
"""

from glmv.image.config import GlmImageConfig, prior_dir
from glmv.image.positions import decode_schedule, rope_index, step_positions, target_grids
from glmv.image.prior import GlmImagePrior, PriorOutput
from glmv.image.weights import load_prior

__all__ = ["GlmImageConfig", "GlmImagePrior", "PriorOutput", "decode_schedule", "load_prior", "prior_dir",
           "rope_index", "step_positions", "target_grids"]
