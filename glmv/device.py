"""Which torch device to run on: `auto` picks the best this machine has; an explicit device that this machine or
this torch build cannot provide is one clear ConfigError at once, not a traceback from deep inside torch."""

from __future__ import annotations

import functools

import torch

from glmv.errors import ConfigError

DEVICES = "auto, cpu, cuda, cuda:N or mps"


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """`auto` -> CUDA if available, else MPS, else CPU; any other device is checked to be usable here."""
    if isinstance(name, torch.device):
        device = name
    elif name == "auto":
        return _best_available()
    else:
        try:
            device = torch.device(name)
        except RuntimeError:  # torch's message lists two dozen device types glmv never runs on
            raise ConfigError(f"unknown device {name!r}: use {DEVICES}") from None
    if device.type == "cuda":
        _check_cuda(device)
    elif device.type == "mps":
        _check_mps()
    return device


def _best_available() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def _check_cuda(device: torch.device) -> None:
    if torch.version.cuda is None and torch.version.hip is None:
        raise ConfigError(f"CUDA was asked for (device {str(device)!r}) but this torch build has no CUDA "
                          f"(torch {torch.__version__}); install a CUDA build of torch or use --device cpu")
    if not torch.cuda.is_available():
        raise ConfigError(f"CUDA was asked for (device {str(device)!r}) but no CUDA GPU is visible to torch "
                          f"{torch.__version__}; check the driver (nvidia-smi) and CUDA_VISIBLE_DEVICES, or use "
                          "--device cpu")
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise ConfigError(f"device {str(device)!r} was asked for but this machine has {count} CUDA GPU(s) "
                          f"(cuda:0 to cuda:{count - 1}); pick one of those or use --device cpu")


def _check_mps() -> None:
    if not torch.backends.mps.is_built():
        raise ConfigError(f"MPS (Apple GPU) was asked for but this torch build has no MPS support "
                          f"(torch {torch.__version__}); MPS needs a macOS build of torch on Apple silicon; "
                          "use --device cpu")
    if not torch.backends.mps.is_available():
        raise ConfigError("MPS (Apple GPU) was asked for but is not available on this machine (it needs macOS 12.3 "
                          "or later on Apple silicon); use --device cpu")


def default_threads(cores: int | None = None, load: float | None = None) -> int:
    """CPU threads for torch's operators when none are asked for: the cores this process may use (its affinity
    mask, which containers narrow) minus those other processes keep busy now (the 1-minute load average), at
    least one. An OpenMP team larger than the free cores waits at every parallel region for its slowest thread:
    on 2 cores beside one other busy process, 2-thread decode and training ran up to 5x slower than 1 thread."""
    import os

    cores = len(os.sched_getaffinity(0)) if cores is None else cores
    load = os.getloadavg()[0] if load is None else load
    return max(1, min(cores, round(cores - load)))


@functools.lru_cache(maxsize=None)
def cuda_capability(device: torch.device) -> tuple[int, int]:
    """(major, minor) compute capability of a CUDA device, asked once per device (kernel choices ask it per call)."""
    return torch.cuda.get_device_capability(device)
