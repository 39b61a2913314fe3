"""Tiny random GLM-V checkpoints written by the reference implementation (transformers' save_pretrained).

Needs the test extra (`pip install -e '.[test]'`): transformers is the oracle, never a runtime dependency.
Weights are drawn wider than the reference's init (and norms / router bias perturbed) so that any misplaced
tensor changes the logits visibly.
"""

from __future__ import annotations

from pathlib import Path

import torch

# Special token ids away from the real checkpoints' values, so nothing hard-coded can pass a test by luck.
SPECIAL_IDS = dict(
    image_token_id=250, video_token_id=251, image_start_token_id=240, image_end_token_id=241,
    video_start_token_id=242, video_end_token_id=243,
)

TEXT = dict(
    vocab_size=256, hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
    num_key_value_heads=2, max_position_embeddings=4096, rms_norm_eps=1e-5, eos_token_id=[4, 5], pad_token_id=0,
)
MOE = dict(
    head_dim=16, moe_intermediate_size=16, n_routed_experts=8, num_experts_per_tok=2, n_shared_experts=1,
    first_k_dense_replace=1, n_group=1, topk_group=1, norm_topk_prob=True, routed_scaling_factor=1.0,
)
VISION = dict(depth=2, hidden_size=32, num_heads=2, intermediate_size=48, out_hidden_size=64, image_size=56)

# A larger (still small) GLM-4.5V-shaped model for benchmarks: big enough that matmuls, not Python, dominate.
BENCH_TEXT = dict(hidden_size=256, intermediate_size=512, num_hidden_layers=4, num_attention_heads=8,
                  num_key_value_heads=2, head_dim=32, moe_intermediate_size=128, n_routed_experts=32,
                  num_experts_per_tok=4, rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                                          "partial_rotary_factor": 0.5, "mrope_section": [2, 3, 3]})
BENCH_VISION = dict(depth=4, hidden_size=128, num_heads=4, intermediate_size=512, out_hidden_size=256)


def reference_config(model_type: str = "glm4v_moe", text: dict | None = None, vision: dict | None = None, **top):
    """A transformers config object for a tiny model of `model_type` (glm4v, glm4v_moe, glm46v, glm46v_moe)."""
    import transformers as tf

    moe = model_type in ("glm4v_moe", "glm46v_moe")
    text_cfg = {**TEXT, **(MOE if moe else {}), **(text or {})}
    # head_dim 16 and partial rotary 0.5 -> 8 rotary dims -> 4 frequencies split over (t, h, w).
    text_cfg.setdefault("rope_parameters", {"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5,
                                            "mrope_section": [1, 1, 2]})
    vision_cfg = {**VISION, **(vision or {})}
    ids = {**SPECIAL_IDS, **top}
    if model_type == "glm4v":
        return tf.Glm4vConfig(text_config=text_cfg, vision_config=vision_cfg, **ids)
    if model_type == "glm4v_moe":
        return tf.Glm4vMoeConfig(text_config=text_cfg, vision_config=vision_cfg, **ids)
    if model_type in ("glm46v", "glm46v_moe"):
        text_cfg["model_type"] = "glm4v_moe_text" if moe else "glm4v_text"
        vision_cfg["model_type"] = "glm4v_moe_vision" if moe else "glm4v_vision"
        return tf.Glm46VConfig(text_config=text_cfg, vision_config=vision_cfg, **ids)
    raise ValueError(f"unknown tiny model type {model_type!r}")


def reference_model(config, seed: int = 0):
    """The transformers model for `config`, with visible random weights, in fp32 eval mode."""
    import transformers as tf

    torch.manual_seed(seed)
    cls = {
        "glm4v": tf.Glm4vForConditionalGeneration,
        "glm4v_moe": tf.Glm4vMoeForConditionalGeneration,
        "glm46v": tf.Glm46VForConditionalGeneration,
    }[config.model_type]
    model = cls(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") or "layernorm" in name or name.endswith(("norm1.weight", "norm2.weight")):
                p.copy_(1 + 0.2 * torch.randn_like(p))
            else:
                p.normal_(0, 0.08)
        for name, b in model.named_buffers():
            if name.endswith("e_score_correction_bias"):
                b.copy_(0.3 * torch.randn_like(b))
    return model


def make_tiny_checkpoint(path: str | Path, model_type: str = "glm4v_moe", seed: int = 0, **config_kw) -> Path:
    """Write a tiny random checkpoint with transformers' save_pretrained; returns the directory."""
    model = reference_model(reference_config(model_type, **config_kw), seed)
    model.save_pretrained(path)
    return Path(path)


def make_tiny_model_dir(path: str | Path, model_type: str = "glm4v_moe", seed: int = 0, **config_kw) -> Path:
    """A complete tiny model directory: tokenizer (GLM special tokens at scattered ids), processor configs with
    small pixel budgets, and a checkpoint whose special ids and vocabulary match the tokenizer."""
    import json

    from glmv.testing.tiny_tokenizer import (
        TINY_VOCAB_SIZE,
        make_tiny_tokenizer,
        write_processor_configs,
    )

    path = Path(path)
    ids = make_tiny_tokenizer(path)
    write_processor_configs(path)
    top = dict(
        image_token_id=ids["<|image|>"], video_token_id=ids["<|video|>"],
        image_start_token_id=ids["<|begin_of_image|>"], image_end_token_id=ids["<|end_of_image|>"],
        video_start_token_id=ids["<|begin_of_video|>"], video_end_token_id=ids["<|end_of_video|>"],
    )
    eos = [ids["<|endoftext|>"], ids["<|user|>"], ids["<|observation|>"]]
    text = {"vocab_size": TINY_VOCAB_SIZE, "eos_token_id": eos, "pad_token_id": ids["<|endoftext|>"],
            **config_kw.pop("text", {})}
    model = reference_model(reference_config(model_type, text=text, **config_kw, **top), seed)
    model.save_pretrained(path)
    (path / "generation_config.json").write_text(json.dumps({"eos_token_id": eos, "pad_token_id": eos[0]}))
    return path


def logits_gap_to_reference(path: str | Path) -> float:
    """Largest |glmv - transformers| logit difference of the checkpoint at `path` on a short text prompt: how a
    test proves that what glmv wrote (training checkpoints, saved models) loads the same in the reference."""
    import transformers

    import glmv

    ours = glmv.load_model(path, progress=False)
    ref = transformers.AutoModelForImageTextToText.from_pretrained(path).eval()
    ids = torch.tensor([[5, 6, 7, 8, 9, 10]])
    with torch.no_grad():
        return float((ours(ids).logits - ref(input_ids=ids).logits).abs().max())
