"""Fold adapters into the base weights: a plain glmv model (save_model writes it; nothing downstream needs LoRA).

Each merged weight is computed in fp32 (fp64 for an fp64 model) and rounded once to the model's dtype, so a bf16 checkpoint merged here
differs from the unmerged adapter by one bf16 rounding of the sum, never by a rounded delta added to a rounded
weight. Routed experts are merged one expert at a time: no fp32 copy of a whole expert stack.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from torch import nn

from glmv.errors import CheckpointError
from glmv.lora.adapt import _restore_requires_grad, adapted_modules
from glmv.lora.experts import LoraExperts
from glmv.lora.linear import wide
from glmv.lora.peft_format import load_adapter


def merge_lora(model: nn.Module) -> nn.Module:
    """W <- W + s B A (DoRA: rescaled per row to its magnitude) for every adapter, which is then removed; the
    parameters train as they did before the adapters were added. Returns `model`."""
    with torch.no_grad():
        for module in adapted_modules(model).values():
            if isinstance(module, LoraExperts):
                for name in module.specs:
                    weight = getattr(module, name)
                    for e in range(weight.shape[0]):
                        weight[e] = (wide(weight[e]) + module.delta_weight(name, e)).to(weight.dtype)
            else:
                module.weight.copy_(module.merged_weight().to(module.weight.dtype))
            module.strip()
    _restore_requires_grad(model)
    return model


def merge_checkpoint(src: str | Path, adapter: str | Path, dst: str | Path, dtype: str | None = None,
                     max_shard_bytes: int = 5 * 1024**3, progress: bool = True) -> Path:
    """Write checkpoint `src` with the peft-layout `adapter` merged into it to `dst` (config, weights, and the
    tokenizer / processor / template files beside them), in `dtype` (default: the checkpoint's). Returns `dst`."""
    from glmv.quant.convert import SIDE_FILES
    from glmv.weights import load_model, save_model

    src, dst = Path(src), Path(dst)
    if dst.exists() and src.exists() and dst.resolve() == src.resolve():
        raise CheckpointError("--merge-lora writes a new checkpoint: give a destination other than the source")
    if dtype is not None and not (isinstance(getattr(torch, dtype, None), torch.dtype)
                                  and getattr(torch, dtype).is_floating_point):
        raise CheckpointError(f"--dtype must name a float dtype such as bfloat16 or float32, got {dtype!r}")
    # loaded in the output dtype (load_model keeps the router bias fp32); each weight is merged in fp32, rounded once
    model = load_model(src, dtype=dtype, progress=progress)
    load_adapter(model, adapter, dtype=torch.float32)
    merge_lora(model)
    dst.mkdir(parents=True, exist_ok=True)
    for old in [*dst.glob("model*.safetensors"), dst / "model.safetensors.index.json"]:
        old.unlink(missing_ok=True)  # a previous checkpoint in dst: its shards must not mix with the new ones
    save_model(model, dst, max_shard_bytes=max_shard_bytes, progress=progress)
    for pattern in SIDE_FILES:
        for side in src.glob(pattern):
            if side.name not in ("config.json", "model.safetensors.index.json"):
                shutil.copy2(side, dst / side.name)
    return dst
