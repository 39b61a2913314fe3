"""Training checkpoints: the model in the Hugging Face layout (loadable by glmv and transformers) plus the
trainer state (optimizer, scheduler, RNG, step), written atomically: built in a temporary directory and renamed
into place, so an interrupted save never leaves a half-written checkpoint behind."""

from __future__ import annotations

import json
import os
import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

import numpy as np
import torch

from glmv.weights import save_model

SIDE_FILES = ("tokenizer.json", "tokenizer_config.json", "preprocessor_config.json",
              "video_preprocessor_config.json", "generation_config.json", "chat_template.jinja")
STATE = "trainer_state.pt"
LOG = "log.jsonl"


def copy_side_files(src: Path, dst: Path) -> None:
    """Tokenizer, processor and generation configs travel with every checkpoint."""
    for name in SIDE_FILES:
        if (src / name).is_file():
            shutil.copy2(src / name, dst / name)


def save_checkpoint(model, side_files_from: Path, path: Path, state: dict | None = None) -> Path:
    """Write model (+ side files, + trainer state) to `path` atomically; returns `path`."""
    def fill(tmp: Path) -> None:
        save_model(model, tmp, progress=False)
        copy_side_files(Path(side_files_from), tmp)

    return write_atomically(path, fill, state)


def write_atomically(path: Path, fill: Callable[[Path], None], state: dict | None = None) -> Path:
    """`fill(tmp)` writes a checkpoint directory (+ the trainer state), then it replaces `path` in one rename, so
    an interrupted save never leaves a half-written checkpoint where resume looks; returns `path`."""
    path = Path(path)
    tmp = path.with_name(f".tmp-{path.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    fill(tmp)
    if state is not None:
        torch.save(state, tmp / STATE)
    old = path.with_name(f".old-{path.name}")
    if path.exists():
        os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)
    return path


def rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])


def latest_checkpoint(out: Path) -> Path | None:
    found = sorted(p for p in Path(out).glob("checkpoint-*") if (p / STATE).is_file())
    return found[-1] if found else None


def prune_checkpoints(out: Path, keep: int) -> None:
    for old in sorted(Path(out).glob("checkpoint-*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def save_training(model, side_files_from: Path, out: Path, step: int, opt, sched, keep: int, **extra) -> None:
    """checkpoint-{step}: model + optimizer/scheduler/RNG state (+ `extra`), keeping the newest `keep`."""
    state = {"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "rng": rng_state(), "step": step, **extra}
    save_checkpoint(model, side_files_from, Path(out) / f"checkpoint-{step:06d}", state)
    prune_checkpoints(out, keep)


def restore_training(start_dir: Path | None, opt, sched) -> dict:
    """Load optimizer/scheduler/RNG from a checkpoint written by save_training; returns its state ({} if none)."""
    if start_dir is None:
        return {}
    state = torch.load(Path(start_dir) / STATE, weights_only=False)
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    set_rng_state(state["rng"])
    return state


def open_log(out: Path, resumed_at: int | None = None) -> TextIO:
    """out/log.jsonl, opened for appending one JSON object per step. A run resumed from the checkpoint of step
    `resumed_at` first drops the entries after that step: the interrupted run logged them, and the resumed run
    logs those steps again."""
    path = Path(out) / LOG
    if resumed_at is not None and path.is_file():
        kept = [line for line in path.read_text().splitlines(keepends=True) if _logged_by(line, resumed_at)]
        tmp = path.with_name(f".tmp-{LOG}")
        tmp.write_text("".join(kept))
        os.replace(tmp, path)  # atomic, like the checkpoints: a second interruption never loses the kept entries
    return open(path, "a")


def _logged_by(line: str, step: int) -> bool:
    """Whether a log line is an entry of a step up to `step` (a line the interruption cut short is not)."""
    try:
        return json.loads(line)["step"] <= step
    except (json.JSONDecodeError, KeyError, TypeError):
        return False
