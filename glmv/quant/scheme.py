"""What a quantised checkpoint's config.json says about its weights, reduced to what glmv computes with.

Two layouts are read:
  compressed-tensors   `quant_method: compressed-tensors` (GLM-4.5V-FP8 / GLM-4.6V-FP8, llm-compressor's W4A16 /
                       W8A16 / FP8 exports): `config_groups` + `ignore`, parsed by the compressed-tensors library
                       itself; formats float-quantized (FP8, per tensor / channel / block), int-quantized and
                       naive-quantized (int8 stored as int8) and pack-quantized (int4 / int8 packed in int32).
  block FP8            `quant_method: fp8` with `weight_block_size` (DeepSeek-V3 style): fp8 weights and a
                       `weight_scale_inv` per block, which (despite its name) multiplies the weight.
glmv runs weight-only: activations stay in the model dtype (an FP8 checkpoint's `input_scale` is read past),
so a W8A8 checkpoint computes exactly what its dequantised weights compute.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from glmv.errors import CheckpointError

FP8_MAX = 448.0  # largest finite float8_e4m3fn


@dataclass(frozen=True)
class WeightQuant:
    """How one linear's weight is stored: `kind` "float" (fp8 e4m3) or "int"; `bits` 8 or 4; `strategy`
    "tensor" | "channel" | "group" | "block"; `group_size` for groups, `block` (rows, cols) for blocks;
    `packed`: ints packed 32 bits at a time in `weight_packed` (pack-quantized) instead of one per int8."""

    kind: str
    bits: int
    strategy: str
    group_size: int | None = None
    block: tuple[int, int] | None = None
    packed: bool = False
    scale_name: str = "weight_scale"

    @property
    def data_name(self) -> str:
        return "weight_packed" if self.packed else "weight"

    def scale_shape(self, out_features: int, in_features: int) -> tuple[int, ...]:
        if self.strategy == "tensor":
            return (1,)
        if self.strategy == "channel":
            return (out_features, 1)
        if self.strategy == "group":
            return (out_features, math.ceil(in_features / self.group_size))
        return (math.ceil(out_features / self.block[0]), math.ceil(in_features / self.block[1]))

    def data_shape(self, out_features: int, in_features: int) -> tuple[int, int]:
        if self.packed:  # dense packing: 32 // bits values per int32, the last word zero-padded
            return (out_features, math.ceil(in_features * self.bits / 32))
        return (out_features, in_features)

    def bytes_per_weight(self) -> float:
        return self.bits / 8

    def to_args(self):
        """The compressed-tensors QuantizationArgs of this scheme (for writing and for the library's decompress)."""
        from compressed_tensors.quantization import QuantizationArgs

        return QuantizationArgs(
            num_bits=self.bits, type=self.kind, strategy=self.strategy, symmetric=True,
            group_size=self.group_size, block_structure=list(self.block) if self.block else None, dynamic=False,
        )

    @property
    def format(self) -> str:
        """The compressed-tensors format that stores this scheme."""
        if self.kind == "float":
            return "float-quantized"
        return "pack-quantized" if self.packed else "int-quantized"


SCHEMES = {  # what `glmv convert --quantize` writes (per output channel, or int4 in groups of --group-size)
    "fp8": lambda group_size: WeightQuant("float", 8, "channel"),
    "int8": lambda group_size: WeightQuant("int", 8, "channel"),
    "int4": lambda group_size: WeightQuant("int", 4, "group", group_size=group_size, packed=True),
}


@dataclass
class CheckpointQuantization:
    """The weights' schemes by target, and the modules left unquantised. Targets and ignore entries are matched
    against checkpoint module names (`model.language_model.layers.3.mlp.experts.7.gate_proj`): "Linear" matches
    every linear, "re:<regex>" a regular expression (matched from the start, as compressed-tensors does), anything
    else a name suffix."""

    groups: list[tuple[list[str], WeightQuant]]
    ignore: list[str]

    def scheme_for(self, module: str) -> WeightQuant | None:
        if any(_matches(pattern, module) for pattern in self.ignore):
            return None
        for targets, scheme in self.groups:
            if any(_matches(t, module) for t in targets):
                return scheme
        return None


def _matches(pattern: str, module: str) -> bool:
    if pattern == "Linear":
        return True
    if pattern.startswith("re:"):
        return re.match(pattern[3:], module) is not None
    return module == pattern or module.endswith("." + pattern)


def parse_quantization(raw_config: dict) -> CheckpointQuantization | None:
    """The checkpoint's quantisation from config.json's `quantization_config`, or None for a float checkpoint.
    CheckpointError for a scheme glmv does not compute with, naming it."""
    q = raw_config.get("quantization_config")
    if q is None:
        return None
    if not isinstance(q, dict):
        raise CheckpointError(f"config.json: quantization_config must be a JSON object, got {q!r}")
    method = q.get("quant_method")
    if method == "fp8":
        return _block_fp8(q)
    if method == "compressed-tensors":
        return _compressed_tensors(q)
    raise CheckpointError(
        f"config.json: quantization_config.quant_method {method!r} is not supported; glmv reads "
        "'compressed-tensors' (FP8, W8A16, W4A16) and 'fp8' (block FP8). Convert the original bf16 checkpoint with "
        "`glmv convert SRC DST --quantize fp8|int8|int4`"
    )


def _block_fp8(q: dict) -> CheckpointQuantization:
    block = q.get("weight_block_size")
    if not (isinstance(block, list) and len(block) == 2 and all(isinstance(b, int) and b > 0 for b in block)):
        raise CheckpointError(f"config.json: block FP8 needs weight_block_size [rows, cols], got {block!r}")
    if q.get("fmt", "e4m3") != "e4m3":
        raise CheckpointError(f"config.json: FP8 format {q.get('fmt')!r} is not supported (glmv reads e4m3)")
    ignore = q.get("modules_to_not_convert") or q.get("ignored_layers") or []
    scheme = WeightQuant("float", 8, "block", block=(block[0], block[1]), scale_name="weight_scale_inv")
    return CheckpointQuantization([(["Linear"], scheme)], list(ignore))


def _compressed_tensors(q: dict) -> CheckpointQuantization:
    try:
        from compressed_tensors.quantization import QuantizationConfig
    except ImportError:
        raise CheckpointError(
            "this checkpoint is quantised in the compressed-tensors format; install its reader with "
            "`pip install 'glmv[quant]'` (the compressed-tensors library)"
        ) from None
    try:
        config = QuantizationConfig.model_validate(q)
    except Exception as e:  # pydantic's ValidationError or the library's ValueError for unknown presets
        raise CheckpointError(f"config.json: quantization_config is not a valid compressed-tensors config: {e}") from None
    if config.kv_cache_scheme is not None:
        raise CheckpointError("config.json: a quantised KV cache (kv_cache_scheme) is not supported; glmv keeps "
                              "the KV cache in the model dtype: remove kv_cache_scheme and the k_scale/v_scale tensors")
    groups = []
    for name, scheme in config.config_groups.items():
        fmt = scheme.format or config.format
        groups.append((list(scheme.targets), _weight_quant(name, scheme.weights, fmt)))
    return CheckpointQuantization(groups, list(config.ignore or []))


def _weight_quant(group: str, args, fmt: str) -> WeightQuant:
    """Our WeightQuant for a compressed-tensors group's weight args, or a CheckpointError naming what differs."""
    if args is None:
        raise CheckpointError(f"config.json: quantization group {group!r} quantises no weights (activation-only "
                              "quantisation is not supported)")
    kind, bits, strategy = str(args.type), args.num_bits, str(args.strategy)
    supported = {("float", 8, "float-quantized"), ("int", 8, "int-quantized"), ("int", 8, "naive-quantized"),
                 ("int", 8, "pack-quantized"), ("int", 4, "pack-quantized")}
    if (kind, bits, fmt) not in supported or strategy not in ("tensor", "channel", "group", "block"):
        raise CheckpointError(
            f"config.json: quantization group {group!r} stores {kind}{bits} weights per {strategy} in the {fmt!r} "
            "format, which glmv does not read; supported: FP8 (float-quantized; tensor, channel or block), int8 "
            "(int-quantized or pack-quantized) and int4 (pack-quantized), per channel or group"
        )
    if kind == "float" and strategy == "group":
        raise CheckpointError(f"config.json: quantization group {group!r}: FP8 per group is not supported")
    if not args.symmetric:
        raise CheckpointError(f"config.json: quantization group {group!r} is asymmetric (zero points); glmv reads "
                              "symmetric schemes only: re-quantise with symmetric: true")
    block = tuple(args.block_structure) if strategy == "block" else None
    return WeightQuant(kind, bits, strategy, group_size=args.group_size if strategy == "group" else None,
                       block=block, packed=fmt == "pack-quantized")
