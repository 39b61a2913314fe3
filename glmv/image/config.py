"""GLM-Image's autoregressive prior: its configuration, read from config.json (model_type `glm_image`).

The prior lives in the `vision_language_encoder/` subfolder of a GLM-Image checkpoint. Three sections:
  text_config    a GLM-4-0414-style decoder whose lm_head covers only the visual vocabulary (vision_vocab_size)
  vision_config  a plain ViT (LayerNorm, learned position table, no rotary, no merger) that encodes source images
  vq_config      a 1x1 conv + cosine-nearest codebook that turns the ViT's features into visual token ids
Defaults are transformers 5.17's (configuration_glm_image.py); fields that decide a tensor's shape have no default
and must be present. Every field is type- and range-checked here, so a bad config.json is one ConfigError that
names the field and the fix, before anything is allocated.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from glmv.config import (
    COUNT, FLAG, FRACTION, NAME, POSITIVE_INT, POSITIVE_REAL, SECTIONS, TOKEN_IDS, Check, read_json_object,
)
from glmv.errors import ConfigError

MODEL_TYPE = "glm_image"
PRIOR_SUBFOLDER = "vision_language_encoder"  # where a GLM-Image (diffusers layout) root keeps the prior
FLOAT_DTYPES = ("float32", "bfloat16", "float16", "float64")
FIX = "correct it in config.json (the checkpoint's original config.json has the value its weights were trained with)"


class _Section:
    """One JSON object of config.json and its name, so that every error names `section.field` and the file."""

    def __init__(self, d: Any, where: str, source: str):
        if not isinstance(d, dict):
            raise ConfigError(f"{source}: {where or 'the file'} must be a JSON object, got {d!r}; {FIX}")
        self.d, self.where, self.source = d, where, source

    def name(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def check(self, value: Any, key: str, check: Check) -> Any:
        if not check.ok(value):
            raise ConfigError(f"{self.source}: {key} must be {check.want}, got {value!r}; {FIX}")
        return value

    def take(self, key: str, check: Check, default: Any = ...) -> Any:
        """d[key] passed through `check`; absent or null: `default`, or a ConfigError when there is none."""
        if self.d.get(key) is not None:
            return self.check(self.d[key], self.name(key), check)
        if default is ...:
            raise ConfigError(f"{self.source}: the required field {self.name(key)} is missing; add it to config.json "
                              "(transformers' GlmImageConfig writes it; copy it from the checkpoint's original file)")
        return default

    def section(self, key: str) -> "_Section":
        if self.d.get(key) is None:
            raise ConfigError(f"{self.source}: the required section {self.name(key)} is missing; a GLM-Image prior's "
                              "config.json has text_config, vision_config and vq_config objects")
        return _Section(self.d[key], self.name(key), self.source)


@dataclass
class ImageTextConfig:
    vocab_size: int  # text + visual tokens, all embedded by embed_tokens (generated ids are fed back unchanged)
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    vision_vocab_size: int  # lm_head's rows: the VQ codebook ids, image start/end and reserved ids (spec 1.2)
    hidden_act: str = "silu"
    rms_norm_eps: float = 1e-5
    max_position_embeddings: int = 131072
    attention_bias: bool = True  # q/k/v only; o_proj never has a bias
    rope_theta: float = 10000.0
    # transformers' default when config.json gives none is 1.0 (the whole head rotates); the released checkpoint
    # is reported to set 0.5 (spec 1.1, C3), which mrope_section [8, 12, 12] requires for head_dim 128.
    partial_rotary_factor: float = 1.0
    mrope_section: list[int] = field(default_factory=lambda: [8, 12, 12])
    pad_token_id: int | None = 167841
    eos_token_id: list[int] = field(default_factory=lambda: [16385])

    @property
    def rotary_dim(self) -> int:
        return int(self.head_dim * self.partial_rotary_factor)

    @classmethod
    def from_section(cls, s: _Section) -> "ImageTextConfig":
        hidden = s.take("hidden_size", POSITIVE_INT)
        heads = s.take("num_attention_heads", POSITIVE_INT)
        # transformers 5 folds the older `rope_scaling` (which then wins whole), top-level rope_theta and
        # partial_rotary_factor into rope_parameters; the same priority here.
        rope_key = "rope_scaling" if s.d.get("rope_scaling") else "rope_parameters"
        rope = s.section(rope_key) if s.d.get(rope_key) is not None else _Section({}, s.name(rope_key), s.source)
        rope_type = rope.d.get("rope_type", rope.d.get("type", "default"))
        if rope_type not in ("default", "mrope"):
            raise ConfigError(f"{s.source}: {rope.name('rope_type')} {rope_type!r} is not supported by glmv's "
                              "GLM-Image prior (only 'default', the released model's rotary); set 'default'")
        theta = rope.d.get("rope_theta", s.d.get("rope_theta", 10000.0))
        partial = rope.d.get("partial_rotary_factor", s.d.get("partial_rotary_factor", 1.0))
        eos = s.take("eos_token_id", TOKEN_IDS, 16385)
        cfg = cls(
            vocab_size=s.take("vocab_size", POSITIVE_INT),
            hidden_size=hidden,
            intermediate_size=s.take("intermediate_size", POSITIVE_INT),
            num_hidden_layers=s.take("num_hidden_layers", POSITIVE_INT),
            num_attention_heads=heads,
            num_key_value_heads=s.take("num_key_value_heads", POSITIVE_INT, heads),
            # transformers reads `head_dim` when config.json has one (getattr), else hidden_size // heads
            head_dim=s.take("head_dim", POSITIVE_INT, hidden // heads),
            vision_vocab_size=s.take("vision_vocab_size", POSITIVE_INT),
            hidden_act=s.take("hidden_act", NAME, "silu"),
            rms_norm_eps=float(s.take("rms_norm_eps", POSITIVE_REAL, 1e-5)),
            max_position_embeddings=s.take("max_position_embeddings", POSITIVE_INT, 131072),
            attention_bias=s.take("attention_bias", FLAG, True),
            rope_theta=float(s.check(theta, rope.name("rope_theta"), POSITIVE_REAL)),
            partial_rotary_factor=float(s.check(partial, rope.name("partial_rotary_factor"), FRACTION)),
            mrope_section=list(s.check(rope.d.get("mrope_section", [8, 12, 12]), rope.name("mrope_section"), SECTIONS)),
            pad_token_id=s.take("pad_token_id", COUNT, 167841),
            eos_token_id=[eos] if isinstance(eos, int) else list(eos),
        )
        cfg.validate(s)
        return cfg

    def validate(self, s: _Section) -> None:
        if self.head_dim < 1:
            raise ConfigError(f"{s.source}: {s.name('hidden_size')} ({self.hidden_size}) is smaller than "
                              f"num_attention_heads ({self.num_attention_heads}); correct one of them in config.json")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ConfigError(f"{s.source}: {s.name('num_attention_heads')} ({self.num_attention_heads}) must be a "
                              f"multiple of num_key_value_heads ({self.num_key_value_heads}); {FIX}")
        if 2 * sum(self.mrope_section) != self.rotary_dim:
            raise ConfigError(
                f"{s.source}: {s.name('rope_parameters.mrope_section')} {self.mrope_section} must sum to "
                f"head_dim x partial_rotary_factor / 2 = {self.rotary_dim / 2:g} (head_dim {self.head_dim}, "
                f"partial_rotary_factor {self.partial_rotary_factor}); GLM-Image's checkpoint is reported to use "
                "[8, 12, 12] with partial_rotary_factor 0.5: correct either field")
        if self.vision_vocab_size > self.vocab_size:
            raise ConfigError(f"{s.source}: {s.name('vision_vocab_size')} ({self.vision_vocab_size}) exceeds "
                              f"vocab_size ({self.vocab_size}): every generated id is fed back through "
                              f"embed_tokens; {FIX}")


@dataclass
class ImageVisionConfig:
    # The released checkpoint's vision values are UNCONFIRMED (spec 1.1: only transformers' defaults are known);
    # they are read from config.json, with transformers 5.17's defaults for the optional ones.
    depth: int
    hidden_size: int
    num_heads: int
    intermediate_size: int
    patch_size: int
    image_size: int  # the learned position table is (image_size / patch_size)^2 entries, resampled per image
    in_channels: int = 3
    spatial_merge_size: int = 1
    hidden_act: str = "gelu"
    attention_bias: bool = True
    layer_norm_eps: float = 1e-6

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def table_side(self) -> int:
        return self.image_size // self.patch_size

    @classmethod
    def from_section(cls, s: _Section) -> "ImageVisionConfig":
        heads_key = "num_heads" if s.d.get("num_heads") is not None or s.d.get("num_attention_heads") is None \
            else "num_attention_heads"  # transformers maps num_attention_heads onto num_heads
        cfg = cls(
            depth=s.take("depth", POSITIVE_INT),
            hidden_size=s.take("hidden_size", POSITIVE_INT),
            num_heads=s.take(heads_key, POSITIVE_INT),
            intermediate_size=s.take("intermediate_size", POSITIVE_INT),
            patch_size=s.take("patch_size", POSITIVE_INT),
            image_size=s.take("image_size", POSITIVE_INT),
            in_channels=s.take("in_channels", POSITIVE_INT, 3),
            spatial_merge_size=s.take("spatial_merge_size", POSITIVE_INT, 1),
            hidden_act=s.take("hidden_act", NAME, "gelu"),
            attention_bias=s.take("attention_bias", FLAG, True),
            layer_norm_eps=float(s.take("layer_norm_eps", POSITIVE_REAL, 1e-6)),
        )
        if cfg.hidden_size % cfg.num_heads:
            raise ConfigError(f"{s.source}: {s.name('hidden_size')} ({cfg.hidden_size}) must be a multiple of "
                              f"num_heads ({cfg.num_heads}); {FIX}")
        if cfg.image_size < cfg.patch_size:
            raise ConfigError(f"{s.source}: {s.name('image_size')} ({cfg.image_size}) is smaller than patch_size "
                              f"({cfg.patch_size}): the position table would be empty; {FIX}")
        if cfg.spatial_merge_size != 1:
            # The ViT has no merger: one feature, hence one VQ token, per patch. transformers' GLM-Image breaks on
            # any other value too (it splits the features by t*h*w / merge^2).
            raise ConfigError(f"{s.source}: {s.name('spatial_merge_size')} must be 1 for GLM-Image (one visual token "
                              f"per patch), got {cfg.spatial_merge_size}; set it to 1")
        return cfg


@dataclass
class VQConfig:
    embed_dim: int  # codebook vector width (quant_conv's output channels)
    num_embeddings: int  # codebook size: visual token ids 0 .. num_embeddings - 1
    latent_channels: int  # quant_conv's input channels: the ViT's hidden_size

    @classmethod
    def from_section(cls, s: _Section) -> "VQConfig":
        return cls(
            embed_dim=s.take("embed_dim", POSITIVE_INT),
            num_embeddings=s.take("num_embeddings", POSITIVE_INT),
            latent_channels=s.take("latent_channels", POSITIVE_INT),
        )


@dataclass
class GlmImageConfig:
    text: ImageTextConfig
    vision: ImageVisionConfig
    vq: VQConfig
    image_token_id: int = 167855  # `<|image|>`: a source image's placeholder, replaced by its VQ ids
    image_start_token_id: int = 16384  # image start, and the generation BOS that ends every prompt
    image_end_token_id: int = 16385  # image end, and the EOS the prior emits after the last grid
    dtype: str = "float32"  # the weights' dtype as config.json names it
    raw: dict = field(default_factory=dict, repr=False)  # config.json as read

    @classmethod
    def from_dict(cls, d: dict, source: str = "config.json") -> "GlmImageConfig":
        top = _Section(d, "", source)
        if d.get("model_type") != MODEL_TYPE:
            raise ConfigError(f"{source}: model_type {d.get('model_type')!r} is not {MODEL_TYPE!r}: this is not a "
                              "GLM-Image prior; pass a GLM-Image checkpoint (or its vision_language_encoder folder)")
        text = ImageTextConfig.from_section(top.section("text_config"))
        vision = ImageVisionConfig.from_section(top.section("vision_config"))
        vq_s = top.section("vq_config")
        vq = VQConfig.from_section(vq_s)
        if vq.latent_channels != vision.hidden_size:
            raise ConfigError(f"{source}: vq_config.latent_channels ({vq.latent_channels}) must equal "
                              f"vision_config.hidden_size ({vision.hidden_size}): the VQ quantises the ViT's features; "
                              f"{FIX}")
        name = d.get("dtype") or d.get("torch_dtype") or "float32"
        short = name.removeprefix("torch.") if isinstance(name, str) else name
        if short not in FLOAT_DTYPES:
            raise ConfigError(f"{source}: dtype {name!r} is not a dtype glmv builds models in; set it to one of "
                              f"{', '.join(FLOAT_DTYPES)} (or pass dtype= when loading)")
        cfg = cls(
            text=text, vision=vision, vq=vq,
            image_token_id=top.take("image_token_id", COUNT, 167855),
            image_start_token_id=top.take("image_start_token_id", COUNT, 16384),
            image_end_token_id=top.take("image_end_token_id", COUNT, 16385),
            dtype=short, raw=d,
        )
        # tie_word_embeddings is read by transformers but never acts: lm_head (vision_vocab_size rows) and
        # embed_tokens (vocab_size rows) differ in shape, and the model declares no tied weights.
        top.take("tie_word_embeddings", FLAG, False)
        for key in ("image_start_token_id", "image_end_token_id"):  # both are embedded (prompt and feedback)
            if getattr(cfg, key) >= text.vocab_size:
                raise ConfigError(f"{source}: {key} ({getattr(cfg, key)}) must be below text_config.vocab_size "
                                  f"({text.vocab_size}): it is looked up in embed_tokens; {FIX}")
        return cfg

    @classmethod
    def from_pretrained(cls, path: str | Path) -> "GlmImageConfig":
        file = prior_dir(path) / "config.json"
        return cls.from_dict(read_json_object(file), str(file))


def prior_dir(path: str | Path) -> Path:
    """The directory that holds the prior: `path` itself when it has config.json, else its
    vision_language_encoder/ subfolder (a GLM-Image root in the diffusers layout)."""
    path = Path(path)
    if (path / "config.json").is_file():
        return path
    if (path / PRIOR_SUBFOLDER / "config.json").is_file():
        return path / PRIOR_SUBFOLDER
    raise ConfigError(f"no config.json in {path} or {path / PRIOR_SUBFOLDER}: pass a GLM-Image checkpoint directory "
                      f"(the root with model_index.json, or its {PRIOR_SUBFOLDER}/ folder)")
