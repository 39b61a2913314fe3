"""A tiny random GLM-Image checkpoint in the real layout, written offline by the reference libraries (spec 3).

    make_tiny_glm_image(path)   ->  model_index.json, processor/, vision_language_encoder/, tokenizer/,
                                    text_encoder/, transformer/, vae/, scheduler/   (diffusers' save_pretrained)

Test helper: needs transformers and diffusers. The prior is tiny_checkpoint's (codebook 0..127, image start 128,
image end 129, reserved ids to 143, text ids above) with a 16-px ViT patch, so that a reference image's AR grid and
its DiT tokens line up as in the real model (spec 2.6). The GLM tokenizer is byte-level BPE without merges over
that layout: `<|dit_token_N|>` for the visual ids, 256 byte symbols, `<sop>`, `<eop>`, `<|endoftext|>`, `<|image|>`.
The DiT (patch 2), VAE (f8) and ByT5 glyph encoder are diffusers' test sizes; the scheduler has the real
checkpoint's linear dynamic shift, so that path runs too.

generation_config.json: temperature 0.9 / top_p 0.75 as the real one, and, for tests that compare whole
pipelines, `deterministic=True` sets top_k 1 and suppresses the non-codebook ids in transformers too (the grid
rule glmv always applies; a random prior would otherwise draw image start / EOS / reserved ids mid-grid).
"""

from __future__ import annotations

from pathlib import Path

import torch

from glmv.image.tiny_checkpoint import CODEBOOK, IMAGE_END, IMAGE_START, IMAGE_TOKEN, PAD, VISION_VOCAB, VOCAB

SOP, EOP = 400, 401
BYTES = 144  # first byte-symbol id
TEMPLATE = ("{%- for message in messages -%}{%- if message.content is string -%}{{ message.content }}{%- else -%}"
            "{%- for item in message.content -%}{%- if item.type == 'image' -%}"
            f"<|dit_token_{IMAGE_START}|><|image|><|dit_token_{IMAGE_END}|>"
            "{%- elif item.type == 'text' -%}{{ item.text }}{%- endif -%}{%- endfor -%}{%- endif -%}{%- endfor -%}")
MIN_PIXELS, MAX_PIXELS = 32 * 32, 512 * 512  # source images (after halving)


def glm_tokenizer():
    """The tiny GLM tokenizer (transformers' PreTrainedTokenizerFast with the four attributes the processor reads)."""
    import transformers as tf
    from tokenizers import AddedToken, Tokenizer, decoders, models
    from tokenizers.pre_tokenizers import ByteLevel

    named = {"<sop>": SOP, "<eop>": EOP, "<|endoftext|>": PAD, "<|image|>": IMAGE_TOKEN}
    vocab = {f"<|dit_token_{i}|>": i for i in range(VISION_VOCAB)}
    vocab.update({ch: BYTES + j for j, ch in enumerate(sorted(ByteLevel.alphabet()))})
    vocab.update(named)
    by_id = {v: k for k, v in vocab.items()}
    vocab.update({f"<|reserved_{i}|>": i for i in range(VOCAB) if i not in by_id})
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(f"<|dit_token_{i}|>", special=True) for i in range(VISION_VOCAB)]
                           + [AddedToken(k, special=True) for k in named])
    return tf.PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token=f"<|dit_token_{IMAGE_END}|>", bos_token=f"<|dit_token_{IMAGE_START}|>",
        eos_token=f"<|dit_token_{IMAGE_END}|>",
        extra_special_tokens={"image_token": "<|image|>", "grid_bos_token": "<sop>", "grid_eos_token": "<eop>"})


def glm_processor():
    import transformers as tf

    images = tf.GlmImageImageProcessorPil(patch_size=16, temporal_patch_size=1, merge_size=1, min_pixels=MIN_PIXELS,
                                          max_pixels=MAX_PIXELS)
    return tf.GlmImageProcessor(image_processor=images, tokenizer=glm_tokenizer(), chat_template=TEMPLATE)


def tiny_components(seed: int = 0, deterministic: bool = False) -> dict:
    """The seven components of a GlmImagePipeline, random and tiny, fp32."""
    import transformers as tf
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, GlmImageTransformer2DModel

    from glmv.image.tiny_checkpoint import reference_config, reference_model

    prior = reference_model(reference_config(vision={"patch_size": 16, "image_size": 64}), seed)
    gen = prior.generation_config
    gen.do_sample, gen.temperature, gen.top_p = True, 0.9, 0.75
    if deterministic:
        gen.top_k = 1
        gen.suppress_tokens = list(range(CODEBOOK, VISION_VOCAB))
    torch.manual_seed(seed)
    return dict(
        processor=glm_processor(),
        vision_language_encoder=prior,
        tokenizer=tf.ByT5Tokenizer(),
        text_encoder=tf.T5EncoderModel(tf.T5Config(vocab_size=384, d_model=32, d_kv=8, d_ff=37, num_layers=2,
                                                    num_heads=4)).eval(),
        transformer=GlmImageTransformer2DModel(
            patch_size=2, in_channels=4, out_channels=4, num_layers=2, attention_head_dim=8, num_attention_heads=2,
            text_embed_dim=32, time_embed_dim=16, condition_dim=8, prior_vq_quantizer_codebook_size=CODEBOOK).eval(),
        vae=AutoencoderKL(block_out_channels=(4, 8, 16, 16), in_channels=3, out_channels=3,
                          down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
                          latent_channels=4, norm_num_groups=4, sample_size=128,
                          latents_mean=[0.1, -0.2, 0.05, 0.0], latents_std=[0.9, 1.1, 1.0, 1.2]).eval(),
        scheduler=FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, time_shift_type="linear", base_shift=0.25,
                                                  max_shift=0.75, base_image_seq_len=256),
    )


def make_tiny_glm_image(path: str | Path, seed: int = 0, deterministic: bool = False) -> Path:
    """Write a tiny GLM-Image checkpoint (diffusers' layout) to `path`; returns it."""
    from diffusers import GlmImagePipeline

    GlmImagePipeline(**tiny_components(seed, deterministic)).save_pretrained(path)
    return Path(path)
