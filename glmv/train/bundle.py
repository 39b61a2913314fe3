"""Install a trained checkpoint as the bundled default model (glmv/assets/nano): weights in bf16 to keep the
package small (the engine upcasts to fp32 on CPU), with its tokenizer, processor and generation configs."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from glmv.model_path import BUNDLED
from glmv.train.checkpoint import copy_side_files
from glmv.weights import load_model, save_model


def bundle(src: str | Path, dst: str | Path = BUNDLED, dtype: torch.dtype = torch.bfloat16) -> Path:
    src, dst = Path(src), Path(dst)
    model = load_model(src, dtype=dtype, progress=False)
    card = (dst / "README.md").read_text() if (dst / "README.md").is_file() else None
    shutil.rmtree(dst, ignore_errors=True)
    save_model(model, dst, progress=False)
    copy_side_files(src, dst)
    if card is not None:
        (dst / "README.md").write_text(card)
    return dst
