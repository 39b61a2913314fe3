"""Suite-wide setup that must happen before any test module is imported."""

import os

import torch

# Triton decides at decoration time whether a kernel runs compiled or in its CPU interpreter, and libraries the
# suite imports during collection (peft, transformers) may import triton before the kernel tests do. Without a
# GPU, every kernel must be an interpreted one, so the switch is set here, first.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
