"""What both checkpoint loaders (glmv/weights.py for GLM-V, glmv/image/weights.py for GLM-Image's prior) share:
the shard list of a checkpoint directory, building a model on the meta device without random init, giving it
uninitialised storage, and one CheckpointError that lists every problem."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import torch

from glmv.errors import CheckpointError


def _index_files(index: Path) -> list[str]:
    """The shard file names model.safetensors.index.json lists, in first-seen order."""
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
        raise CheckpointError(f"{index}: not a valid safetensors index ({e!r})") from None
    if isinstance(weight_map, dict):
        bad = next(((k, v) for k, v in weight_map.items() if not isinstance(v, str)), None)
        got = f"{bad[1]!r} for {bad[0]!r}" if bad else None
    else:
        got = f"a JSON {type(weight_map).__name__}"
    if got:
        raise CheckpointError(
            f"{index}: weight_map must map each tensor name to the file that holds it "
            f'({{"lm_head.weight": "model-00001-of-00002.safetensors", ...}}), got {got}; re-download the index, '
            "or delete it to load every *.safetensors file of the directory"
        )
    return list(dict.fromkeys(weight_map.values()))


def shard_files(path: Path) -> list[Path]:
    index = path / "model.safetensors.index.json"
    if index.is_file():
        files = [path / f for f in _index_files(index)]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise CheckpointError(f"{index} lists shards that are not there: {', '.join(missing)}")
        return files
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"{path}: no *.safetensors files (glmv reads the Hugging Face safetensors layout)")
    return files


@contextlib.contextmanager
def no_init():
    """torch.nn.init's functions as no-ops while the model is built: the loader overwrites every tensor, and on
    the meta device their decompositions import torch._dynamo (2.5 s of a first load) for nothing. transformers
    skips them the same way."""
    names = [n for n in dir(torch.nn.init) if n.endswith("_") and not n.startswith("_")]
    saved = {n: getattr(torch.nn.init, n) for n in names}
    for n in names:
        setattr(torch.nn.init, n, lambda tensor, *args, **kwargs: tensor)
    try:
        yield
    finally:
        for n, f in saved.items():
            setattr(torch.nn.init, n, f)


def allocate(module: torch.nn.Module, device: torch.device, allocated: dict[int, torch.Tensor]) -> None:
    """Give the module's own meta tensors uninitialised storage on `device`. Module.to_empty does the same through
    torch.empty_like, whose meta decomposition imports sympy (a second of a first load)."""
    for tensors, wrap in ((module._parameters, lambda t, old: torch.nn.Parameter(t, old.requires_grad)),
                          (module._buffers, lambda t, old: t)):
        for key, old in tensors.items():
            if old is not None:
                if id(old) not in allocated:
                    allocated[id(old)] = wrap(torch.empty(old.shape, dtype=old.dtype, device=device), old)
                tensors[key] = allocated[id(old)]


def raise_problems(path: Path, problems: dict[str, list[str]], what: str = "the model its config.json describes") -> None:
    """One CheckpointError listing every missing, unexpected, mis-shaped and mis-typed tensor, if there are any."""
    if not any(problems.values()):
        return
    lines = [f"checkpoint {path} does not match {what}:"]
    for title, items in problems.items():
        if items:
            shown = items[:20] + ([f"... and {len(items) - 20} more"] if len(items) > 20 else [])
            lines.append(f"  {title} ({len(items)}): " + ", ".join(shown))
    if problems["dtype mismatch"]:
        lines.append("  floating-point weights load only from floating-point data: re-export those tensors as "
                     "float32, bfloat16 or float16")
    raise CheckpointError("\n".join(lines))
