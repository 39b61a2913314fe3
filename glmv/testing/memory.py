"""Peak resident memory of a piece of work in this process (Linux: /proc/self/status VmHWM, reset first)."""

from __future__ import annotations

from pathlib import Path


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def reset_peak() -> int:
    """Reset the high-water mark to the current RSS; returns the current RSS in bytes."""
    Path("/proc/self/clear_refs").write_text("5")
    return _status_kb("VmRSS") * 1024


def peak() -> int:
    """Peak RSS in bytes since the last reset_peak()."""
    return _status_kb("VmHWM") * 1024


def warm_up_model_code(path: str) -> None:
    """Build the checkpoint's model once on the meta device: the first construction pulls in ~80 MB of lazily
    initialised torch internals, a one-time process cost that is not part of what a load costs."""
    import torch

    from glmv.config import GlmvConfig
    from glmv.model.glm4v import GlmvForConditionalGeneration

    with torch.device("meta"):
        GlmvForConditionalGeneration(GlmvConfig.from_pretrained(path))
