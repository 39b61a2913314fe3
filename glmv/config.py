"""Model configuration built from a checkpoint's config.json.

Three checkpoint families share one model:
  glm4v      GLM-4.1V-9B / GLM-4.6V-Flash: dense decoder with "sandwich" norms and interleaved (GPT-J) rotary
  glm4v_moe  GLM-4.5V / GLM-4.6V: GLM-4.5-Air MoE decoder with NeoX (half-split) rotary
  glm46v     transformers' GLM-4.6V wrapper: the decoder kind follows text_config.model_type
The vision tower is the same module for all of them. Defaults are the reference's class defaults
(transformers configuration_glm4v*.py); fields that decide tensor shapes have no default and must be present.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from glmv.errors import ConfigError

MODEL_TYPES = ("glm4v", "glm4v_moe", "glm46v")


def _take(d: dict, name: str, where: str, default: Any = ...) -> Any:
    if name in d and d[name] is not None:
        return d[name]
    if default is ...:
        raise ConfigError(f"config.json: {where} is missing the required field {name!r}")
    return default


@dataclass
class VisionConfig:
    depth: int
    hidden_size: int
    num_heads: int
    out_hidden_size: int  # decoder width; also the vision MLP's inner width
    intermediate_size: int  # inner width of the projector's SwiGLU (not of the ViT blocks)
    patch_size: int = 14
    temporal_patch_size: int = 2
    spatial_merge_size: int = 2
    in_channels: int = 3
    image_size: int = 336  # the learned position table is (image_size / patch_size)^2 entries
    rms_norm_eps: float = 1e-5
    attention_bias: bool = False
    hidden_act: str = "silu"
    rope_theta: float = 10000.0

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def patch_dim(self) -> int:
        return self.in_channels * self.temporal_patch_size * self.patch_size**2

    @classmethod
    def from_dict(cls, d: dict) -> "VisionConfig":
        w = "vision_config"
        rope = d.get("rope_parameters") or {}
        return cls(
            depth=_take(d, "depth", w),
            hidden_size=_take(d, "hidden_size", w),
            num_heads=_take(d, "num_heads", w, d.get("num_attention_heads", ...)),
            out_hidden_size=_take(d, "out_hidden_size", w),
            intermediate_size=_take(d, "intermediate_size", w),
            patch_size=_take(d, "patch_size", w, 14),
            temporal_patch_size=_take(d, "temporal_patch_size", w, 2),
            spatial_merge_size=_take(d, "spatial_merge_size", w, 2),
            in_channels=_take(d, "in_channels", w, 3),
            image_size=_take(d, "image_size", w, 336),
            rms_norm_eps=_take(d, "rms_norm_eps", w, 1e-5),
            attention_bias=_take(d, "attention_bias", w, False),
            hidden_act=_take(d, "hidden_act", w, "silu"),
            rope_theta=rope.get("rope_theta", d.get("rope_theta", 10000.0)),
        )


@dataclass
class TextConfig:
    moe: bool  # GLM-4.5-Air style MoE decoder (True) or GLM-4-0414 style dense decoder (False)
    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    intermediate_size: int  # dense MLP width (every layer of glm4v; the first_k_dense_replace layers of MoE)
    rms_norm_eps: float = 1e-5
    max_position_embeddings: int = 65536
    attention_bias: bool = True
    hidden_act: str = "silu"
    rope_theta: float = 10000.0
    partial_rotary_factor: float = 0.5
    mrope_section: list[int] = field(default_factory=lambda: [8, 12, 12])
    # MoE (ignored when moe is False)
    moe_intermediate_size: int = 0
    n_routed_experts: int = 0
    num_experts_per_tok: int = 0
    n_shared_experts: int = 1
    first_k_dense_replace: int = 1
    n_group: int = 1
    topk_group: int = 1
    norm_topk_prob: bool = True
    routed_scaling_factor: float = 1.0
    eos_token_id: list[int] = field(default_factory=list)
    pad_token_id: int | None = None

    @property
    def rotary_dim(self) -> int:
        return int(self.head_dim * self.partial_rotary_factor)

    def is_moe_layer(self, layer: int) -> bool:
        return self.moe and layer >= self.first_k_dense_replace

    @classmethod
    def from_dict(cls, d: dict, moe: bool) -> "TextConfig":
        w = "text_config"
        heads = _take(d, "num_attention_heads", w)
        hidden = _take(d, "hidden_size", w)
        # Both rope layouts: transformers v5 `rope_parameters`, and the older top-level rope_theta /
        # partial_rotary_factor with `rope_scaling` holding mrope_section.
        rope = dict(d.get("rope_scaling") or {})
        rope.update(d.get("rope_parameters") or {})
        rope_type = rope.get("rope_type", rope.get("type", "default"))
        if rope_type not in ("default", "mrope"):
            raise ConfigError(f"config.json: text_config rope_type {rope_type!r} is not supported (only 'default')")
        # The dense reference rotates the full head unless told otherwise; the MoE one defaults to half.
        partial = rope.get("partial_rotary_factor", d.get("partial_rotary_factor", 0.5 if moe else 1.0))
        # The dense reference derives head_dim from hidden/heads even when config.json lists one.
        head_dim = (d.get("head_dim") or hidden // heads) if moe else hidden // heads
        eos = d.get("eos_token_id")
        cfg = cls(
            moe=moe,
            vocab_size=_take(d, "vocab_size", w),
            hidden_size=hidden,
            num_hidden_layers=_take(d, "num_hidden_layers", w),
            num_attention_heads=heads,
            num_key_value_heads=_take(d, "num_key_value_heads", w, heads),
            head_dim=head_dim,
            intermediate_size=_take(d, "intermediate_size", w),
            rms_norm_eps=_take(d, "rms_norm_eps", w, 1e-5),
            max_position_embeddings=_take(d, "max_position_embeddings", w, 65536 if moe else 32768),
            attention_bias=_take(d, "attention_bias", w, True),
            hidden_act=_take(d, "hidden_act", w, "silu"),
            rope_theta=float(rope.get("rope_theta", d.get("rope_theta", 10000.0))),
            partial_rotary_factor=float(partial),
            mrope_section=list(rope.get("mrope_section", [8, 12, 12])),
            eos_token_id=[eos] if isinstance(eos, int) else list(eos or []),
            pad_token_id=d.get("pad_token_id"),
        )
        if moe:
            cfg.moe_intermediate_size = _take(d, "moe_intermediate_size", w)
            cfg.n_routed_experts = _take(d, "n_routed_experts", w, d.get("num_local_experts", ...))
            cfg.num_experts_per_tok = _take(d, "num_experts_per_tok", w)
            cfg.n_shared_experts = _take(d, "n_shared_experts", w, 1)
            cfg.first_k_dense_replace = _take(d, "first_k_dense_replace", w, 1)
            cfg.n_group = _take(d, "n_group", w, 1)
            cfg.topk_group = _take(d, "topk_group", w, 1)
            cfg.norm_topk_prob = _take(d, "norm_topk_prob", w, True)
            cfg.routed_scaling_factor = float(_take(d, "routed_scaling_factor", w, 1.0))
        cfg.validate()
        return cfg

    def validate(self) -> None:
        if self.num_attention_heads % self.num_key_value_heads:
            raise ConfigError(
                f"config.json: num_attention_heads ({self.num_attention_heads}) must be a multiple of "
                f"num_key_value_heads ({self.num_key_value_heads})"
            )
        if 2 * sum(self.mrope_section) != self.rotary_dim:
            raise ConfigError(
                f"config.json: mrope_section {self.mrope_section} must sum to rotary_dim/2 = {self.rotary_dim // 2} "
                f"(head_dim {self.head_dim} x partial_rotary_factor {self.partial_rotary_factor})"
            )
        if self.moe:
            if self.n_routed_experts % self.n_group:
                raise ConfigError(f"config.json: n_routed_experts {self.n_routed_experts} not divisible by n_group")
            if not 1 <= self.topk_group <= self.n_group:
                raise ConfigError(f"config.json: topk_group {self.topk_group} must be in [1, n_group={self.n_group}]")


@dataclass
class GlmvConfig:
    model_type: str
    text: TextConfig
    vision: VisionConfig
    image_token_id: int
    video_token_id: int | None
    image_start_token_id: int | None
    image_end_token_id: int | None
    video_start_token_id: int
    video_end_token_id: int
    tie_word_embeddings: bool = False
    raw: dict = field(default_factory=dict, repr=False)  # config.json as read, written back on save

    @classmethod
    def from_dict(cls, d: dict) -> "GlmvConfig":
        model_type = d.get("model_type")
        if model_type not in MODEL_TYPES:
            raise ConfigError(
                f"config.json: model_type {model_type!r} is not a GLM-V model; glmv supports {', '.join(MODEL_TYPES)}"
            )
        text_d = _take(d, "text_config", "config.json")
        vision_d = _take(d, "vision_config", "config.json")
        if model_type == "glm46v":
            moe = "moe" in str(text_d.get("model_type", "glm4v_text"))
        else:
            moe = model_type == "glm4v_moe"
        w = "config.json"
        return cls(
            model_type=model_type,
            text=TextConfig.from_dict(text_d, moe=moe),
            vision=VisionConfig.from_dict(vision_d),
            image_token_id=_take(d, "image_token_id", w),
            video_token_id=d.get("video_token_id"),
            image_start_token_id=d.get("image_start_token_id"),
            image_end_token_id=d.get("image_end_token_id"),
            video_start_token_id=_take(d, "video_start_token_id", w),
            video_end_token_id=_take(d, "video_end_token_id", w),
            tie_word_embeddings=bool(d.get("tie_word_embeddings", text_d.get("tie_word_embeddings", False))),
            raw=d,
        )

    @classmethod
    def from_pretrained(cls, path: str | Path) -> "GlmvConfig":
        file = Path(path) / "config.json" if Path(path).is_dir() else Path(path)
        if not file.is_file():
            raise ConfigError(f"no config.json at {file}: pass a checkpoint directory (Hugging Face layout)")
        try:
            d = json.loads(file.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"{file} is not valid JSON: {e}") from None
        if not isinstance(d, dict):
            raise ConfigError(f"{file} must hold a JSON object")
        return cls.from_dict(d)

    def to_dict(self) -> dict:
        """config.json contents: the dict this config was read from (so transformers reads it back unchanged)."""
        if self.raw:
            return self.raw
        raise ConfigError("this config was not built from a config.json; build it with GlmvConfig.from_dict")
