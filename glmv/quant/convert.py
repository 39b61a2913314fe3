"""`glmv convert`: re-save a checkpoint in another dtype and/or quantised in the compressed-tensors layout.

Streaming: tensors are read one at a time and written shard by shard, so peak memory is about one output shard
whatever the model's size (the model is never built). The decoder's linears (attention, dense MLPs, shared and
routed experts: `--only all`) or just the routed experts (`--only experts`) are quantised; the vision tower,
router, embeddings, norms and lm_head stay float, as in GLM-4.5V-FP8. The config.json written carries a
compressed-tensors `quantization_config`, so vLLM and transformers read the result as they read llm-compressor's.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file
from tqdm.auto import tqdm

from glmv.config import GlmvConfig
from glmv.errors import CheckpointError
from glmv.quant.scheme import SCHEMES, WeightQuant, parse_quantization
from glmv.quant.tensors import quantize
from glmv.safetensors_file import read_header, read_into
from glmv.checkpoint_files import shard_files
from glmv.weights import _is_mtp_layer

# Checkpoint module names (not glmv's) the written quantization_config targets, as regular expressions.
EXPERTS = r"mlp\.experts\.\d+\.(gate|up|down)_proj"
REST = r"self_attn\.[qkvo]_proj|mlp(\.shared_experts)?\.(gate_up|gate|up|down)_proj"  # the decoder's other linears
TARGETS = {
    "experts": rf"re:.*{EXPERTS}$",
    "all": rf"re:.*language_model\.layers\.\d+\.({REST}|{EXPERTS})$",
    "rest": rf"re:.*language_model\.layers\.\d+\.({REST})$",
}
SIDE_FILES = ("*.json", "*.jinja", "*.txt", "*.model", "*.tiktoken")  # tokenizer, processor, template, generation


def _scheme_of(name: str, config: GlmvConfig, groups: list[tuple[str, WeightQuant]]) -> WeightQuant | None:
    """The scheme of the first group whose targets select checkpoint tensor `name` (None: stays float; so do MTP
    layers, which glmv skips)."""
    if not name.endswith(".weight") or _is_mtp_layer(config.text, name):
        return None
    return next((wq for target, wq in groups if re.match(target[3:], name.removesuffix(".weight"))), None)


def _split_stacked(name: str, t: torch.Tensor, inter: int) -> dict[str, torch.Tensor]:
    """Stacked expert tensors ([E, 2I, H] gate_up / [E, H, I] down, transformers' in-memory layout) as the
    per-expert tensors the released checkpoints store and quantisation targets; other tensors unchanged."""
    if name.endswith(".experts.gate_up_proj") and t.dim() == 3:
        base = name.removesuffix(".gate_up_proj")
        out = {}
        for e in range(t.shape[0]):
            out[f"{base}.{e}.gate_proj.weight"], out[f"{base}.{e}.up_proj.weight"] = t[e, :inter], t[e, inter:]
        return out
    if name.endswith(".experts.down_proj") and t.dim() == 3:
        base = name.removesuffix(".down_proj")
        return {f"{base}.{e}.down_proj.weight": t[e] for e in range(t.shape[0])}
    return {name: t}


def quantization_config(groups: list[tuple[str, WeightQuant]]) -> dict:
    """config.json's compressed-tensors `quantization_config` for what convert writes: one config group per
    scheme, each naming its format ("mixed-precision" at the top when they differ, as llm-compressor writes)."""
    from compressed_tensors.quantization import QuantizationConfig, QuantizationScheme

    schemes = {f"group_{i}": QuantizationScheme(targets=[target], weights=wq.to_args(), format=wq.format)
               for i, (target, wq) in enumerate(groups)}
    formats = {wq.format for _, wq in groups}
    config = QuantizationConfig(config_groups=schemes, format=formats.pop() if len(formats) == 1 else "mixed-precision",
                                ignore=["lm_head"], quantization_status="compressed")
    return config.model_dump(mode="json", exclude_none=True)


def convert(src: str | Path, dst: str | Path, quantize_to: str | None = None, group_size: int = 128,
            only: str = "experts", dtype: str | None = None, max_shard_bytes: int = 5 * 1024**3,
            progress: bool = True, rest: str | None = None) -> Path:
    """Write `src` to `dst` in `dtype` (default: the checkpoint's), its `only` linears quantised to fp8 / int8 /
    int4 when `quantize_to` is given, and with `only="experts"` the decoder's other linears to `rest` (the
    planner's "int4 routed experts + 8-bit rest"). Returns `dst`."""
    src, dst = Path(src), Path(dst)
    if src.resolve() == dst.resolve():
        raise CheckpointError("convert writes a new checkpoint: give a destination other than the source")
    config = GlmvConfig.from_pretrained(src)
    if parse_quantization(config.raw) is not None:
        raise CheckpointError(f"{src} is already quantised; convert from the original bf16/fp32 checkpoint")
    if quantize_to is not None and quantize_to not in SCHEMES:
        raise CheckpointError(f"--quantize must be one of {', '.join(SCHEMES)}, got {quantize_to!r}")
    if only not in TARGETS:
        raise CheckpointError(f"--only must be one of {', '.join(TARGETS)}, got {only!r}")
    if quantize_to and only == "experts" and not config.text.moe:
        raise CheckpointError(f"{src} is a dense model (no routed experts): quantise it with --only all")
    out_dtype = getattr(torch, dtype or config.dtype, None)
    if not isinstance(out_dtype, torch.dtype) or not out_dtype.is_floating_point:
        raise CheckpointError(f"--dtype must name a float dtype such as bfloat16 or float32, got {dtype!r}")
    if group_size < 1:
        raise CheckpointError(f"--group-size must be a positive integer, got {group_size}")
    if rest is not None and (rest not in SCHEMES or only != "experts" or not quantize_to):
        raise CheckpointError(f"--rest quantises the decoder's other linears when --quantize applies to the routed "
                              f"experts (--only experts); it must be one of {', '.join(SCHEMES)}, got {rest!r}")
    groups = [(TARGETS[only], SCHEMES[quantize_to](group_size))] if quantize_to else []
    if rest is not None:
        groups.append((TARGETS["rest"], SCHEMES[rest](group_size)))

    dst.mkdir(parents=True, exist_ok=True)
    files = shard_files(src)
    headers = [(f, read_header(f)) for f in files]
    writer = _ShardWriter(dst, max_shard_bytes)
    bar = tqdm(total=sum(e.nbytes for _, es in headers for e in es), unit="B", unit_scale=True, desc="Converting",
               disable=None if progress else True)
    with bar, torch.no_grad():
        for file, entries in headers:
            with open(file, "rb") as f:
                for entry in entries:
                    t = torch.empty(entry.shape, dtype=entry.dtype)
                    read_into(f, entry, t)
                    if t.is_floating_point():
                        t = t.to(out_dtype)
                    for name, part in _split_stacked(entry.name, t, config.text.moe_intermediate_size).items():
                        wq = _scheme_of(name, config, groups)
                        if wq is not None:
                            base = name.removesuffix(".weight")
                            writer.add({f"{base}.{k}": v for k, v in quantize(part, wq).items()})
                        else:
                            writer.add({name: part})
                    bar.update(entry.nbytes)
    writer.close()

    raw = dict(config.raw)
    raw["dtype"] = str(out_dtype).removeprefix("torch.")
    raw.pop("torch_dtype", None)
    if groups:
        raw["quantization_config"] = quantization_config(groups)
    for pattern in SIDE_FILES:
        for side in src.glob(pattern):
            if side.name not in ("config.json", "model.safetensors.index.json"):
                shutil.copy2(side, dst / side.name)
    (dst / "config.json").write_text(json.dumps(raw, indent=2) + "\n")
    return dst


class _ShardWriter:
    """Collects tensors into shards of at most `max_bytes` and writes each when full, then the index."""

    def __init__(self, dst: Path, max_bytes: int):
        self.dst, self.max_bytes = dst, max_bytes
        self.pending: dict[str, torch.Tensor] = {}
        self.size = 0
        self.written: list[tuple[str, list[str], int]] = []  # (temporary file name, tensor names, bytes)

    def add(self, tensors: dict[str, torch.Tensor]) -> None:
        nbytes = sum(t.numel() * t.element_size() for t in tensors.values())
        if self.pending and self.size + nbytes > self.max_bytes:
            self._flush()
        self.pending.update({k: v.contiguous() for k, v in tensors.items()})
        self.size += nbytes

    def _flush(self) -> None:
        name = f"shard-{len(self.written):05d}.tmp"
        save_file(self.pending, str(self.dst / name), metadata={"format": "pt"})
        self.written.append((name, list(self.pending), self.size))
        self.pending, self.size = {}, 0

    def close(self) -> None:
        """Flush, then give the shards their final names (their count is known only now) and write the index."""
        if self.pending or not self.written:
            self._flush()
        for old in self.dst.glob("model*.safetensors"):
            old.unlink()  # a previous conversion into the same directory
        (self.dst / "model.safetensors.index.json").unlink(missing_ok=True)
        n = len(self.written)
        weight_map = {}
        for i, (tmp, names, _) in enumerate(self.written):
            final = "model.safetensors" if n == 1 else f"model-{i + 1:05d}-of-{n:05d}.safetensors"
            (self.dst / tmp).rename(self.dst / final)
            weight_map.update(dict.fromkeys(names, final))
        if n > 1:
            index = {"metadata": {"total_size": sum(size for *_, size in self.written)}, "weight_map": weight_map}
            (self.dst / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
