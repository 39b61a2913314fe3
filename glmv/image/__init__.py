"""GLM-Image (zai-org/GLM-Image) in glmv: text-to-image and image-to-image (docs/image.md).

    config.py      GlmImageConfig from the prior's config.json (model_type glm_image)
    decoder.py     the GLM-4-style decoder with GLM-4.5V's 3-axis rotary
    vision.py      the ViT that encodes source images (image-to-image)
    vq.py          the VQ quantiser: ViT features -> visual token ids
    positions.py   prompt positions, target grids and the decode schedule (preview grid first, then the large one)
    prior.py       GlmImagePrior: the whole prior, logits over the visual vocabulary
    weights.py     load_prior from a checkpoint's vision_language_encoder/ (or the GLM-Image root)
    processor.py   the prompt side: tokenizer, chat template, grid text, reference images
    sampling.py    the prior's sampling defaults and the grid rule (codebook ids only, then EOS)
    generate.py    the prior on glmv's engine -> the DiT's prior ids (x2 upsampled)
    dit.py         the DiT side through diffusers' components (optional extra: pip install 'glmv[image]')
    pipeline.py    ImagePipeline: the two stages, seeds, progress, cancellation
    sizes.py       resolution rules;  sweep.py  labelled grids of setting combinations

pipeline.py, dit.py and sweep.py are imported on use (glmv.ImagePipeline), so `import glmv.image` needs no diffusers.
"""

from glmv.image.config import GlmImageConfig, prior_dir
from glmv.image.positions import decode_schedule, rope_index, step_positions, target_grids
from glmv.image.prior import GlmImagePrior, PriorOutput
from glmv.image.weights import load_prior

__all__ = ["GlmImageConfig", "GlmImagePrior", "PriorOutput", "decode_schedule", "load_prior", "prior_dir",
           "rope_index", "step_positions", "target_grids"]
