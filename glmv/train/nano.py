"""The nano GLM-V: GLM-4.5V's exact architecture (model_type glm4v_moe) scaled down to train on 2 CPU cores.

Every feature of the big model is kept: MoE with a shared expert, sigmoid router with correction bias,
first_k_dense_replace dense layers, GQA, partial 3D rotary (mrope sections), the ViT with 2D rotary and a
resampled learned position table, the 2x2 merge and the projector. Sizes are chosen so that
  - weights stay under ~40 MB in bf16 on disk (~20M parameters),
  - a training step (batch of ~16 short samples with 112-224 px images) takes well under a second on 2 cores,
  - the vision tower sees 14 px patches of small images: 112x112 -> 8x8 patches -> 16 LLM tokens.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import nn

from glmv.config import GlmvConfig
from glmv.model.glm4v import GlmvForConditionalGeneration
from glmv.model.layers import RMSNorm
from glmv.model.moe import Router

NANO_TEXT = dict(
    hidden_size=256, intermediate_size=768, num_hidden_layers=6, num_attention_heads=8, num_key_value_heads=4,
    head_dim=32, moe_intermediate_size=192, n_routed_experts=16, num_experts_per_tok=2, n_shared_experts=1,
    first_k_dense_replace=1, n_group=1, topk_group=1, norm_topk_prob=True, routed_scaling_factor=1.0,
    max_position_embeddings=2048, rms_norm_eps=1e-5, attention_bias=True, hidden_act="silu",
    rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5,
                     "mrope_section": [2, 3, 3]},
)
NANO_VISION = dict(
    depth=4, hidden_size=192, num_heads=3, intermediate_size=512, out_hidden_size=256, patch_size=14,
    temporal_patch_size=2, spatial_merge_size=2, in_channels=3, image_size=112, rms_norm_eps=1e-5,
    attention_bias=False, hidden_act="silu",
)


def nano_config(special_ids: dict[str, int], vocab_size: int, eos_ids: list[int], **text_overrides) -> dict:
    """config.json for a nano model whose token ids come from its tokenizer."""
    return {
        "architectures": ["Glm4vMoeForConditionalGeneration"],
        "model_type": "glm4v_moe",
        "text_config": {"model_type": "glm4v_moe_text", **NANO_TEXT, **text_overrides, "vocab_size": vocab_size,
                        "eos_token_id": eos_ids, "pad_token_id": special_ids["<|endoftext|>"]},
        "vision_config": {"model_type": "glm4v_moe_vision", **NANO_VISION},
        "image_token_id": special_ids["<|image|>"],
        "video_token_id": special_ids["<|video|>"],
        "image_start_token_id": special_ids["<|begin_of_image|>"],
        "image_end_token_id": special_ids["<|end_of_image|>"],
        "video_start_token_id": special_ids["<|begin_of_video|>"],
        "video_end_token_id": special_ids["<|end_of_video|>"],
        "tie_word_embeddings": False,
        "dtype": "float32",
    }


@torch.no_grad()
def init_weights(model: GlmvForConditionalGeneration, std: float = 0.02, seed: int = 0) -> None:
    """Fresh weights: normal(0, std) matrices and embeddings, zero biases, unit norms, residual outputs scaled
    by 1/sqrt(2 * layers) (GPT-2), zero router bias."""
    g = torch.Generator().manual_seed(seed)
    layers = model.config.text.num_hidden_layers
    for name, p in model.named_parameters():
        if isinstance(_owner(model, name), (RMSNorm, nn.LayerNorm)) and name.endswith("weight"):
            p.fill_(1.0)
        elif name.endswith("bias"):
            p.zero_()
        elif ".merger." in name:
            # The projector is not a residual branch: LeCun-normal keeps image embeddings at unit scale, so
            # they are not drowned by the decoder's residual stream (a 0.02-std projector gave ~0.003-std image
            # embeddings, and the vision tower never learned: docs/training.md).
            p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p.shape[1]))
        else:
            residual = name.endswith(("o_proj.weight", "down_proj.weight", "down_proj", "attn.proj.weight"))
            p.copy_(torch.randn(p.shape, generator=g) * (std / math.sqrt(2 * layers) if residual else std))
    for m in model.modules():
        if isinstance(m, Router):
            m.e_score_correction_bias.zero_()


def _owner(model: nn.Module, name: str) -> nn.Module:
    return model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model


def build_nano(config: dict, seed: int = 0) -> GlmvForConditionalGeneration:
    """A freshly initialised nano model (fp32, train mode) for this config.json dict."""
    model = GlmvForConditionalGeneration(GlmvConfig.from_dict(config))
    init_weights(model, seed=seed)
    return model.train()


def create_nano_checkpoint(path: str | Path, corpus: Iterable[str], vocab_size: int = 4096, max_pixels: int = 224 * 224,
                           seed: int = 0, **text_overrides) -> Path:
    """A fresh nano model directory: a BPE tokenizer trained on `corpus` (with the built-in GLM-V chat
    template), processor configs sized for small images, generation config, and initialised weights."""
    from glmv.inputs.chat import BUILTIN_TEMPLATE
    from glmv.inputs.processor_config import write_processor_configs
    from glmv.train.tokenizer import build_bpe_tokenizer, write_tokenizer
    from glmv.weights import save_model

    path = Path(path)
    tok, special = build_bpe_tokenizer(corpus, vocab_size)
    write_tokenizer(tok, special, path, BUILTIN_TEMPLATE.read_text(encoding="utf-8"))
    write_processor_configs(path, min_pixels=2 * 28 * 28, max_pixels=max_pixels, video_max_pixels=8 * max_pixels)
    eos = [special["<|endoftext|>"], special["<|user|>"], special["<|observation|>"]]
    config = nano_config(special, vocab_size, eos, **text_overrides)
    save_model(build_nano(config, seed).eval(), path, progress=False)
    (path / "generation_config.json").write_text(json.dumps({"eos_token_id": eos, "pad_token_id": eos[0],
                                                             "temperature": 0.0}, indent=2))
    return path
