"""Load GLM-Image's prior from a checkpoint: the `vision_language_encoder/` folder, or the GLM-Image root above it.

Checkpoint names are the model's own with `model.` in front (`model.visual.`, `model.vqmodel.`,
`model.language_model.`), except `lm_head.weight`. The model is built on the meta device, every tensor gets
uninitialised storage on the target device, and each tensor's bytes are read from the safetensors files straight
into it (glmv.safetensors_file): no second copy of the weights. Every header is checked against the model before a
byte of data is read, and all problems (missing, unexpected, mis-shaped, mis-typed) come in one CheckpointError.
"""

from __future__ import annotations

from pathlib import Path

import torch

from glmv.checkpoint_files import allocate, no_init, raise_problems, shard_files
from glmv.errors import CheckpointError, ConfigError
from glmv.image.config import GlmImageConfig, prior_dir
from glmv.image.prior import GlmImagePrior
from glmv.safetensors_file import TensorEntry, read_header, read_into


def checkpoint_name(name: str) -> str:
    return name if name.startswith("lm_head.") else "model." + name


def _match(model: GlmImagePrior, shards: list[tuple[Path, list[TensorEntry]]]):
    """(file, entry, tensor) to read, and problems by kind, from the headers alone."""
    tensors = {checkpoint_name(k): v for k, v in model.state_dict(keep_vars=True).items()}
    plan, found = [], set()
    problems: dict[str, list[str]] = {"missing": [], "unexpected": [], "shape mismatch": [], "dtype mismatch": []}
    for file, entries in shards:
        for e in entries:
            t = tensors.get(e.name)
            if t is None:
                problems["unexpected"].append(e.name)
                continue
            found.add(e.name)  # a mis-shaped tensor is reported as such, not also as missing
            if tuple(t.shape) != e.shape:
                problems["shape mismatch"].append(f"{e.name}: checkpoint {list(e.shape)}, model {list(t.shape)}")
            elif not e.dtype.is_floating_point:  # integer data cast to float would load as meaningless weights
                problems["dtype mismatch"].append(f"{e.name}: checkpoint {e.dtype}, model {t.dtype}")
            else:
                plan.append((file, e, t))
    problems["missing"] = [k for k in tensors if k not in found]
    return plan, problems


def load_prior(path: str | Path, dtype: torch.dtype | str | None = None,
               device: str | torch.device = "cpu") -> GlmImagePrior:
    """Load GLM-Image's prior (GlmImageForConditionalGeneration's weights) into a glmv GlmImagePrior in eval mode.

    path: the prior's own directory (config.json + safetensors: a GLM-Image checkpoint's vision_language_encoder/)
    or the GLM-Image root that holds it. dtype: a torch dtype or its name; None keeps config.json's dtype.
    Raises ConfigError for a bad config.json and CheckpointError for missing, corrupt or mismatched weights.
    """
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"{path} is not a directory; pass a GLM-Image checkpoint directory")
    directory = prior_dir(path)
    config = GlmImageConfig.from_pretrained(directory)
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype, None)
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise ConfigError("dtype must be a floating-point torch dtype or its name, such as 'bfloat16'")
    dtype = dtype or getattr(torch, config.dtype)
    files = shard_files(directory)
    shards = [(f, read_header(f)) for f in files]  # validates every file before any work
    with torch.device("meta"), no_init():
        model = GlmImagePrior(config).to(dtype)
    # A config.json that describes far more weights than the files hold is refused before any allocation.
    n_weights, n_bytes = sum(p.numel() for p in model.parameters()), sum(f.stat().st_size for f in files)
    if n_weights > n_bytes:
        raise ConfigError(f"{directory / 'config.json'} describes {n_weights:,} weights but the safetensors files "
                          f"hold {n_bytes:,} bytes: it does not belong to these weights; correct its sizes")
    plan, problems = _match(model, shards)
    raise_problems(directory, problems, "the GLM-Image prior its config.json describes")
    allocated: dict[int, torch.Tensor] = {}
    for module in model.modules():
        allocate(module, torch.device(device), allocated)
    tensors = {checkpoint_name(k): v for k, v in model.state_dict(keep_vars=True).items()}
    with torch.no_grad():
        for file in dict.fromkeys(f for f, _, _ in plan):
            with open(file, "rb") as f:
                for _, entry, _ in (p for p in plan if p[0] == file):
                    read_into(f, entry, tensors[entry.name])
    return model.eval()
