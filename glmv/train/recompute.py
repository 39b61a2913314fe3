"""Gradient checkpointing from outside the model: each decoder layer's activations are recomputed in the backward
pass instead of being kept (torch.utils.checkpoint, non-reentrant), trading one more forward pass for memory that
no longer grows with the number of layers.

The model's code is unchanged: `enable` swaps each DecoderLayer's `forward` on the instance for a wrapper, so
module and parameter names stay as they are (state dicts, adapters and checkpoints are unaffected). The wrapper
only checkpoints while the layer trains with gradients on and no KV cache; inference runs the plain layer. The
recomputation sees the same RNG state (dropout masks repeat) and the routers choose the same experts, so losses
and gradients equal those of the plain model.
"""

from __future__ import annotations

import types

import torch
from torch.utils.checkpoint import checkpoint


def decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    return list(model.language_model.layers)


def _checkpointed_forward(layer: torch.nn.Module, h, cos, sin, mask, cache, real=None):
    plain = types.MethodType(type(layer).forward, layer)
    if cache is None and layer.training and torch.is_grad_enabled():
        return checkpoint(plain, h, cos, sin, mask, cache, real, use_reentrant=False)
    return plain(h, cos, sin, mask, cache, real)


def enable(model: torch.nn.Module) -> int:
    """Checkpoint every decoder layer of `model` (idempotent); returns how many layers are wrapped."""
    layers = decoder_layers(model)
    for layer in layers:
        layer.forward = types.MethodType(_checkpointed_forward, layer)  # an instance attribute: names unchanged
    return len(layers)


def disable(model: torch.nn.Module) -> None:
    """Back to the plain layers."""
    for layer in decoder_layers(model):
        layer.__dict__.pop("forward", None)


def enabled(model: torch.nn.Module) -> bool:
    return any("forward" in layer.__dict__ for layer in decoder_layers(model))
