"""Tiny random GLM-Image priors written by the reference (transformers' GlmImageForConditionalGeneration).

Needs the test extra (transformers is the oracle, never a runtime dependency). The vocabulary keeps the real
layout at a small scale (spec 1.2): codebook ids 0..127, image start 128, image end 129 (also the EOS and the
tokenizer's pad), reserved ids up to the visual vocabulary's end (144), then text ids. Weights are drawn wider than
the reference's init and the norms perturbed, so that a misplaced tensor changes the logits visibly.
"""

from __future__ import annotations

from pathlib import Path

import torch

CODEBOOK, IMAGE_START, IMAGE_END, VISION_VOCAB = 128, 128, 129, 144
IMAGE_TOKEN, PAD, VOCAB = 460, 450, 512  # `<|image|>` and the text pad sit in the (shifted) text range
TEXT_IDS = (VISION_VOCAB, 440)  # ordinary text ids for prompts: [low, high)

TEXT = dict(
    vocab_size=VOCAB, vision_vocab_size=VISION_VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
    num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=4096, pad_token_id=PAD,
    eos_token_id=IMAGE_END,
    # head_dim 32, partial rotary 0.5 -> 16 rotary dims -> 8 frequencies over (t, h, w): [8, 12, 12] scaled down
    rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5,
                     "mrope_section": [2, 3, 3]},
)
# patch 8 and a 64 px table (8 x 8 positions): source grids of other sizes exercise the bilinear resampling
VISION = dict(depth=2, hidden_size=32, num_heads=2, intermediate_size=48, patch_size=8, image_size=64)
VQ = dict(embed_dim=16, num_embeddings=CODEBOOK, latent_channels=32)


def reference_config(text: dict | None = None, vision: dict | None = None, vq: dict | None = None, **top):
    import transformers as tf

    ids = dict(image_token_id=IMAGE_TOKEN, image_start_token_id=IMAGE_START, image_end_token_id=IMAGE_END) | top
    return tf.GlmImageConfig(text_config={**TEXT, **(text or {})}, vision_config={**VISION, **(vision or {})},
                             vq_config={**VQ, **(vq or {})}, **ids)


def reference_model(config, seed: int = 0):
    """The transformers prior for `config`, with visible random weights, fp32, eval mode."""
    import transformers as tf

    torch.manual_seed(seed)
    model = tf.GlmImageForConditionalGeneration(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.2 * torch.randn_like(p))
            else:
                p.normal_(0, 0.08)
    # Greedy reference generation must run the whole schedule: never stop at the image-end id.
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = IMAGE_END
    return model


def make_tiny_prior(path: str | Path, seed: int = 0, **config_kw) -> Path:
    """Write a tiny random prior (config.json + model.safetensors) with save_pretrained; returns the directory."""
    reference_model(reference_config(**config_kw), seed).save_pretrained(path)
    return Path(path)


def random_text(n: int, seed: int) -> list[int]:
    """n ordinary text ids (no special or visual id) from a seeded generator."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(*TEXT_IDS, (n,), generator=g).tolist()


def source_image(h: int, w: int) -> list[int]:
    """A source image of an h x w patch grid in a prompt: start, h*w placeholders, end."""
    return [IMAGE_START] + [IMAGE_TOKEN] * (h * w) + [IMAGE_END]


def random_patches(grids: list[tuple[int, int, int]], seed: int = 0, patch: int = 8) -> torch.Tensor:
    """Patch rows [sum h*w, 3*patch*patch] for source images of these grids."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(sum(t * h * w for t, h, w in grids), 3 * patch * patch, generator=g)
