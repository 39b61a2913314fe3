"""What an adapter is: LoraConfig (the user's choice) and AdapterSpec (what one adapted weight carries).

The fields are peft's LoraConfig fields under the same names, so an adapter_config.json maps onto them one to one;
only `targets` / `exclude` differ: they are patterns over glmv module names (glmv/lora/targets.py), while peft's
`target_modules` are Hugging Face module names (written and read by glmv/lora/peft_format.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from glmv.errors import ConfigError


@dataclass(frozen=True)
class AdapterSpec:
    """The hyper-parameters of one adapted weight (peft allows them per module through rank/alpha patterns)."""

    r: int
    lora_alpha: float
    lora_dropout: float = 0.0
    use_rslora: bool = False
    use_dora: bool = False

    @property
    def scaling(self) -> float:
        # rsLoRA (Kalajdzievski 2023) keeps the update's scale stable as r grows: alpha / sqrt(r) instead of alpha / r
        return self.lora_alpha / math.sqrt(self.r) if self.use_rslora else self.lora_alpha / self.r


@dataclass(frozen=True)
class LoraConfig:
    """LoRA / DoRA hyper-parameters and the weights they adapt.

    targets: presets ("attention", "mlp", "experts", "projector", "vit"), glob patterns over glmv module names
    ("q_proj" matches every `*.q_proj`; "language_model.layers.0.*"), or regular expressions prefixed with "re:"
    (matched against the whole name). Routed experts are named `...mlp.experts.gate_up_proj` / `.down_proj`.
    exclude: patterns of the same kinds, removed from what `targets` selects.
    """

    r: int = 8
    lora_alpha: float = 16
    lora_dropout: float = 0.0
    targets: tuple[str, ...] = ("attention", "mlp")
    exclude: tuple[str, ...] = ()
    use_rslora: bool = False
    use_dora: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.targets, str) or isinstance(self.exclude, str):
            raise ConfigError("LoraConfig: targets and exclude are lists of patterns, e.g. targets=['attention']")
        object.__setattr__(self, "targets", tuple(self.targets))
        object.__setattr__(self, "exclude", tuple(self.exclude))
        if not self.targets:
            raise ConfigError("LoraConfig: targets is empty; name what to adapt, e.g. ['attention', 'mlp']")
        if isinstance(self.r, bool) or not isinstance(self.r, int) or self.r < 1:
            raise ConfigError(f"LoraConfig: r must be a positive integer (the adapter rank), got {self.r!r}")
        if isinstance(self.lora_alpha, bool) or not isinstance(self.lora_alpha, (int, float)) or not self.lora_alpha > 0:
            raise ConfigError(f"LoraConfig: lora_alpha must be a positive number, got {self.lora_alpha!r}")
        if not isinstance(self.lora_dropout, (int, float)) or not 0 <= self.lora_dropout < 1:
            raise ConfigError(f"LoraConfig: lora_dropout must be in [0, 1), got {self.lora_dropout!r}")

    def spec(self) -> AdapterSpec:
        return AdapterSpec(self.r, self.lora_alpha, float(self.lora_dropout), self.use_rslora, self.use_dora)
