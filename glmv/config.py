"""Model configuration built from a checkpoint's config.json.

Three checkpoint families share one model:
  glm4v      GLM-4.1V-9B / GLM-4.6V-Flash: dense decoder with "sandwich" norms and interleaved (GPT-J) rotary
  glm4v_moe  GLM-4.5V / GLM-4.6V: GLM-4.5-Air MoE decoder with NeoX (half-split) rotary
  glm46v     transformers' GLM-4.6V wrapper: the decoder kind follows text_config.model_type
The vision tower is the same module for all of them. Defaults are the reference's class defaults
(transformers configuration_glm4v*.py); fields that decide tensor shapes have no default and must be present.
Every field is type- and range-checked here, so a bad config.json is one ConfigError before any allocation.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, NamedTuple

from glmv.errors import ConfigError

MODEL_TYPES = ("glm4v", "glm4v_moe", "glm46v")
FLOAT_DTYPES = ("float32", "bfloat16", "float16", "float64")  # what config.json's "dtype" may name


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class Check(NamedTuple):
    ok: Callable[[Any], bool]
    want: str  # what a good value is, for the error message


# Shape-deciding fields must be exact JSON integers: a float, string or negative value would otherwise reach
# torch's allocator (or a Python loop) long before any tensor is compared with the checkpoint.
POSITIVE_INT = Check(lambda v: _is_int(v) and v >= 1, "a positive integer")
COUNT = Check(lambda v: _is_int(v) and v >= 0, "an integer >= 0")
POSITIVE_REAL = Check(lambda v: _is_real(v) and v > 0, "a positive number")
REAL = Check(_is_real, "a finite number")
FRACTION = Check(lambda v: _is_real(v) and 0 < v <= 1, "a number in (0, 1]")
FLAG = Check(lambda v: isinstance(v, bool), "true or false")
NAME = Check(lambda v: isinstance(v, str), "a string")
SECTIONS = Check(lambda v: isinstance(v, list) and all(COUNT.ok(x) for x in v), "a list of integers >= 0")
TOKEN_IDS = Check(lambda v: COUNT.ok(v) or SECTIONS.ok(v), "a token id or a list of token ids (integers >= 0)")


def _field(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _check(value: Any, field_name: str, check: Check) -> Any:
    """`value` unchanged if it passes `check`, else a ConfigError naming the field, the value and the fix."""
    if not check.ok(value):
        raise ConfigError(
            f"config.json: {field_name} must be {check.want}, got {value!r}; correct it in config.json (the "
            "checkpoint's original config.json or model card has the value its weights were trained with)"
        )
    return value


def _take(d: dict, name: str, where: str, default: Any = ..., check: Check | None = None) -> Any:
    """d[name] passed through `check`; absent or null: `default`, or a ConfigError when there is none.
    `where` is the section ("text_config", "vision_config"; "" for the top level)."""
    if name in d and d[name] is not None:
        return _check(d[name], _field(where, name), check) if check else d[name]
    if default is ...:
        raise ConfigError(f"config.json{': ' + where if where else ''} is missing the required field {name!r}")
    return default


def _alias(d: dict, *names: str) -> str:
    """The first of `names` that config.json sets (the first name when none is set, for the missing-field error)."""
    return next((n for n in names if d.get(n) is not None), names[0])


def _section(d: dict, name: str, where: str, required: bool = False) -> dict:
    """A nested JSON object of config.json ({} when absent and not required)."""
    value = _take(d, name, where, ... if required else {})
    if not isinstance(value, dict):
        raise ConfigError(f"config.json: {_field(where, name)} must be a JSON object, got {value!r}; "
                          "correct it in config.json")
    return value


def _checkpoint_dtype(d: dict) -> str:
    """The dtype name config.json gives the weights ("dtype", or the older "torch_dtype"); float32 when absent."""
    name = d.get("dtype") or d.get("torch_dtype") or "float32"
    short = name.removeprefix("torch.") if isinstance(name, str) else name
    if short not in FLOAT_DTYPES:
        raise ConfigError(f"config.json: dtype {name!r} is not a dtype glmv builds models in; set it to one of "
                          f"{', '.join(FLOAT_DTYPES)} (or pass dtype= to load_model)")
    return short


def read_json_object(file: Path) -> dict:
    """A config file's JSON object, or a ConfigError saying what is wrong with it."""
    try:
        d = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{file} is not valid JSON: {e}") from None
    if not isinstance(d, dict):
        raise ConfigError(f"{file} must hold a JSON object")
    return d


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
        rope = _section(d, "rope_parameters", w)
        cfg = cls(
            depth=_take(d, "depth", w, check=POSITIVE_INT),
            hidden_size=_take(d, "hidden_size", w, check=POSITIVE_INT),
            num_heads=_take(d, _alias(d, "num_heads", "num_attention_heads"), w, check=POSITIVE_INT),
            out_hidden_size=_take(d, "out_hidden_size", w, check=POSITIVE_INT),
            intermediate_size=_take(d, "intermediate_size", w, check=POSITIVE_INT),
            patch_size=_take(d, "patch_size", w, 14, POSITIVE_INT),
            temporal_patch_size=_take(d, "temporal_patch_size", w, 2, POSITIVE_INT),
            spatial_merge_size=_take(d, "spatial_merge_size", w, 2, POSITIVE_INT),
            in_channels=_take(d, "in_channels", w, 3, POSITIVE_INT),
            image_size=_take(d, "image_size", w, 336, POSITIVE_INT),
            rms_norm_eps=_take(d, "rms_norm_eps", w, 1e-5, POSITIVE_REAL),
            attention_bias=_take(d, "attention_bias", w, False, FLAG),
            hidden_act=_take(d, "hidden_act", w, "silu", NAME),
            rope_theta=_check(rope.get("rope_theta", d.get("rope_theta", 10000.0)), f"{w} rope_theta", POSITIVE_REAL),
        )
        cfg.validate()
        return cfg

    def validate(self) -> None:
        # The attention splits hidden_size into heads, and the 2D rotary splits each head in four (h, w) x (cos, sin).
        if self.hidden_size % self.num_heads or self.head_dim % 4:
            raise ConfigError(
                f"config.json: vision_config hidden_size ({self.hidden_size}) must be num_heads ({self.num_heads}) "
                "times a multiple of 4; correct hidden_size or num_heads in config.json"
            )
        if self.image_size < self.patch_size:
            raise ConfigError(
                f"config.json: vision_config image_size ({self.image_size}) is smaller than patch_size "
                f"({self.patch_size}): the position table would be empty; correct one of them in config.json"
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
    # Multi-token-prediction layers stored after the decoder's layers (GLM-4.5 style); glmv does not run them.
    num_nextn_predict_layers: int = 0
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
        heads = _take(d, "num_attention_heads", w, check=POSITIVE_INT)
        hidden = _take(d, "hidden_size", w, check=POSITIVE_INT)
        # Both rope layouts: transformers v5 `rope_parameters`, and the older top-level rope_theta /
        # partial_rotary_factor with `rope_scaling` holding mrope_section.
        rope = {**_section(d, "rope_scaling", w), **_section(d, "rope_parameters", w)}
        rope_type = rope.get("rope_type", rope.get("type", "default"))
        if rope_type not in ("default", "mrope"):
            raise ConfigError(f"config.json: text_config rope_type {rope_type!r} is not supported (only 'default')")
        # The dense reference rotates the full head unless told otherwise; the MoE one defaults to half.
        partial = rope.get("partial_rotary_factor", d.get("partial_rotary_factor", 0.5 if moe else 1.0))
        # The dense reference derives head_dim from hidden/heads even when config.json lists one.
        head_dim = (_take(d, "head_dim", w, 0, POSITIVE_INT) or hidden // heads) if moe else hidden // heads
        eos = _take(d, "eos_token_id", w, [], TOKEN_IDS)
        cfg = cls(
            moe=moe,
            vocab_size=_take(d, "vocab_size", w, check=POSITIVE_INT),
            hidden_size=hidden,
            num_hidden_layers=_take(d, "num_hidden_layers", w, check=POSITIVE_INT),
            num_attention_heads=heads,
            num_key_value_heads=_take(d, "num_key_value_heads", w, heads, POSITIVE_INT),
            head_dim=head_dim,
            intermediate_size=_take(d, "intermediate_size", w, check=POSITIVE_INT),
            rms_norm_eps=_take(d, "rms_norm_eps", w, 1e-5, POSITIVE_REAL),
            max_position_embeddings=_take(d, "max_position_embeddings", w, 65536 if moe else 32768, POSITIVE_INT),
            attention_bias=_take(d, "attention_bias", w, True, FLAG),
            hidden_act=_take(d, "hidden_act", w, "silu", NAME),
            rope_theta=float(_check(rope.get("rope_theta", d.get("rope_theta", 10000.0)), f"{w} rope_theta",
                                    POSITIVE_REAL)),
            partial_rotary_factor=float(_check(partial, f"{w} partial_rotary_factor", FRACTION)),
            mrope_section=list(_check(rope.get("mrope_section", [8, 12, 12]), f"{w} mrope_section", SECTIONS)),
            num_nextn_predict_layers=_take(d, "num_nextn_predict_layers", w, 0, COUNT),
            eos_token_id=[eos] if isinstance(eos, int) else list(eos),
            pad_token_id=_take(d, "pad_token_id", w, None, COUNT),
        )
        if moe:
            cfg.moe_intermediate_size = _take(d, "moe_intermediate_size", w, check=POSITIVE_INT)
            experts = _alias(d, "n_routed_experts", "num_local_experts")
            cfg.n_routed_experts = _take(d, experts, w, check=POSITIVE_INT)
            cfg.num_experts_per_tok = _take(d, "num_experts_per_tok", w, check=POSITIVE_INT)
            cfg.n_shared_experts = _take(d, "n_shared_experts", w, 1, COUNT)
            cfg.first_k_dense_replace = _take(d, "first_k_dense_replace", w, 1, COUNT)
            cfg.n_group = _take(d, "n_group", w, 1, POSITIVE_INT)
            cfg.topk_group = _take(d, "topk_group", w, 1, POSITIVE_INT)
            cfg.norm_topk_prob = _take(d, "norm_topk_prob", w, True, FLAG)
            cfg.routed_scaling_factor = float(_take(d, "routed_scaling_factor", w, 1.0, REAL))
        cfg.validate()
        return cfg

    def validate(self) -> None:
        if self.head_dim < 1:
            raise ConfigError(f"config.json: text_config hidden_size ({self.hidden_size}) is smaller than "
                              f"num_attention_heads ({self.num_attention_heads}); correct one of them in config.json")
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
            if self.num_experts_per_tok > self.n_routed_experts:
                raise ConfigError(f"config.json: num_experts_per_tok ({self.num_experts_per_tok}) is more than "
                                  f"n_routed_experts ({self.n_routed_experts}); correct one of them in config.json")


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
    dtype: str = "float32"  # the weights' dtype as config.json names it (one of FLOAT_DTYPES)
    raw: dict = field(default_factory=dict, repr=False)  # config.json as read, written back on save

    @classmethod
    def from_dict(cls, d: dict) -> "GlmvConfig":
        model_type = d.get("model_type")
        if model_type not in MODEL_TYPES:
            raise ConfigError(
                f"config.json: model_type {model_type!r} is not a GLM-V model; glmv supports {', '.join(MODEL_TYPES)}"
            )
        text_d = _section(d, "text_config", "", required=True)
        vision_d = _section(d, "vision_config", "", required=True)
        if model_type == "glm46v":
            moe = "moe" in str(text_d.get("model_type", "glm4v_text"))
        else:
            moe = model_type == "glm4v_moe"
        tie = d.get("tie_word_embeddings", text_d.get("tie_word_embeddings", False))
        return cls(
            model_type=model_type,
            text=TextConfig.from_dict(text_d, moe=moe),
            vision=VisionConfig.from_dict(vision_d),
            image_token_id=_take(d, "image_token_id", "", check=COUNT),
            video_token_id=_take(d, "video_token_id", "", None, COUNT),
            image_start_token_id=_take(d, "image_start_token_id", "", None, COUNT),
            image_end_token_id=_take(d, "image_end_token_id", "", None, COUNT),
            video_start_token_id=_take(d, "video_start_token_id", "", check=COUNT),
            video_end_token_id=_take(d, "video_end_token_id", "", check=COUNT),
            tie_word_embeddings=_check(tie, "tie_word_embeddings", FLAG) if tie is not None else False,
            dtype=_checkpoint_dtype(d),
            raw=d,
        )

    @classmethod
    def from_pretrained(cls, path: str | Path) -> "GlmvConfig":
        file = Path(path) / "config.json" if Path(path).is_dir() else Path(path)
        if not file.is_file():
            raise ConfigError(f"no config.json at {file}: pass a checkpoint directory (Hugging Face layout)")
        return cls.from_dict(read_json_object(file))

    def to_dict(self) -> dict:
        """config.json contents: the dict this config was read from (so transformers reads it back unchanged)."""
        if self.raw:
            return self.raw
        raise ConfigError("this config was not built from a config.json; build it with GlmvConfig.from_dict")

    def weight_counts(self) -> dict[str, int]:
        """A lower bound on the weights the model holds, per part, keyed by the config fields that size it (only
        the big matrices are counted). The loader compares the total with the checkpoint's bytes before it
        allocates anything, so a config that describes a far larger model is refused instead of allocated."""
        t, v = self.text, self.vision
        h = t.hidden_size
        moe_layers = max(0, t.num_hidden_layers - t.first_k_dense_replace) if t.moe else 0
        attention = h * t.head_dim * 2 * (t.num_attention_heads + t.num_key_value_heads)
        dense_layers = t.num_hidden_layers - moe_layers
        experts = (t.n_routed_experts + t.n_shared_experts) * 3 * h * t.moe_intermediate_size
        block = 4 * v.hidden_size**2 + 3 * v.hidden_size * v.out_hidden_size
        embed = v.hidden_size * (v.patch_dim + (v.image_size // v.patch_size) ** 2)
        downsample = v.hidden_size * v.spatial_merge_size**2
        merger = v.out_hidden_size * (downsample + v.out_hidden_size + 3 * v.intermediate_size)
        return {
            "text_config vocab_size x hidden_size": t.vocab_size * h * (1 if self.tie_word_embeddings else 2),
            "text_config num_hidden_layers x attention": t.num_hidden_layers * attention,
            "text_config num_hidden_layers x intermediate_size": dense_layers * 3 * h * t.intermediate_size,
            "text_config n_routed_experts x moe_intermediate_size": moe_layers * experts,
            "vision_config depth x hidden_size": v.depth * block,
            "vision_config patch_size / image_size": embed,
            "vision_config out_hidden_size x intermediate_size": merger,
        }
