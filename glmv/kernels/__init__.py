"""GPU kernels (Triton) that replace eager model code behind plain Python entry points. Importing this package
never imports triton: each entry point says whether it can run (`available`) and imports its kernels on first use.
"""

from __future__ import annotations

import functools
import importlib.util
import os

import torch

from glmv.device import cuda_capability


def interpreting() -> bool:
    """TRITON_INTERPRET=1 runs the kernels on CPU tensors with numpy (the tests); set it before triton is imported."""
    return os.environ.get("TRITON_INTERPRET") == "1"


@functools.lru_cache(maxsize=None)
def triton_installed() -> bool:
    return importlib.util.find_spec("triton") is not None


def triton_runs_on(x: torch.Tensor) -> bool:
    """Whether glmv's Triton kernels can run on x's device: triton installed, and a CUDA GPU of compute capability
    8.0+ (Triton's bf16 dots need Ampere) or, for CPU tensors, the interpreter."""
    if not triton_installed():
        return False
    return cuda_capability(x.device) >= (8, 0) if x.is_cuda else interpreting()
