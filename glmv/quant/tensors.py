"""Quantised weight tensors <-> float weights, with compressed-tensors' arithmetic.

Dequantisation is ours (the runtime needs no library): `q.to(scale.dtype) * scale`, then the model dtype, which
is what compressed-tensors' `dequantize` computes, so a checkpoint's dequantised weights are bit-identical in
both. Quantisation (for `glmv convert`) goes through the library's own compressors, so what glmv writes is what
vLLM and transformers read.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from glmv.errors import CheckpointError
from glmv.quant.scheme import WeightQuant


def unpack_ints(packed: torch.Tensor, bits: int, in_features: int) -> torch.Tensor:
    """[out, words] int32 (compressed-tensors' dense little-endian packing, values offset by 2**(bits-1)) ->
    [out, in_features] int8."""
    raw = packed.contiguous().view(torch.uint8)  # 4 bytes per word, low byte first
    if bits == 8:
        values = raw
    elif bits == 4:  # value i sits in byte i // 2, low nibble first
        values = torch.stack((raw & 0xF, raw >> 4), dim=-1).flatten(-2)
    else:
        raise CheckpointError(f"{bits}-bit packed weights are not supported (glmv reads 4 and 8 bits)")
    return (values[..., :in_features].to(torch.int16) - (1 << (bits - 1))).to(torch.int8)


def expand_scale(scale: torch.Tensor, wq: WeightQuant, shape: tuple[int, int]) -> torch.Tensor:
    """A scale broadcastable against the [out, in] weight: groups and blocks repeated over their columns/rows."""
    out_features, in_features = shape
    if wq.strategy == "group":
        return scale.repeat_interleave(wq.group_size, dim=-1)[..., :in_features]
    if wq.strategy == "block":
        rows, cols = wq.block
        return scale.repeat_interleave(rows, dim=-2)[..., :out_features, :].repeat_interleave(cols, dim=-1)[..., :in_features]
    return scale


def dequantize(data: torch.Tensor, scale: torch.Tensor, wq: WeightQuant, in_features: int,
               dtype: torch.dtype) -> torch.Tensor:
    """One stored weight -> [out, in] in `dtype`."""
    q = unpack_ints(data, wq.bits, in_features) if wq.packed else data
    q = q.to(scale.dtype)
    return (q * expand_scale(scale, wq, tuple(q.shape))).to(dtype)


def _minmax(weight: torch.Tensor, wq: WeightQuant) -> tuple[torch.Tensor, torch.Tensor]:
    """The per-tensor / per-row / per-group / per-block minima and maxima the scales are computed from."""
    w = weight.detach()
    if wq.strategy == "tensor":
        return w.amin().reshape(1), w.amax().reshape(1)
    if wq.strategy == "channel":
        return w.amin(1, keepdim=True), w.amax(1, keepdim=True)
    out_features, in_features = w.shape
    if wq.strategy == "group":
        if in_features % wq.group_size:
            raise CheckpointError(f"a weight with {in_features} input features does not split into groups of "
                                  f"{wq.group_size}; choose a --group-size that divides it")
        g = w.view(out_features, in_features // wq.group_size, wq.group_size)
        return g.amin(-1), g.amax(-1)
    rows, cols = wq.block
    pad = (0, -in_features % cols, 0, -out_features % rows)
    # zero padding changes no scale: the range always includes 0 (compressed-tensors' calculate_qparams)
    blocks = F.pad(w, pad).unflatten(0, (-1, rows)).unflatten(2, (-1, cols))  # [R, rows, C, cols]
    return blocks.amin((1, 3)), blocks.amax((1, 3))


def quantize(weight: torch.Tensor, wq: WeightQuant) -> dict[str, torch.Tensor]:
    """A float [out, in] weight -> the tensors a compressed-tensors checkpoint stores for it, by suffix
    (`weight` or `weight_packed`, `weight_scale`, and `weight_shape` when packed). Needs compressed-tensors."""
    try:
        from compressed_tensors.compressors import BaseCompressor
        from compressed_tensors.quantization import QuantizationScheme
        from compressed_tensors.quantization.utils import calculate_qparams
    except ImportError:
        raise CheckpointError("quantising needs the compressed-tensors library: pip install 'glmv[quant]'") from None
    args = wq.to_args()
    lo, hi = _minmax(weight, wq)
    scale, _ = calculate_qparams(lo, hi, args)
    scheme = QuantizationScheme(targets=["Linear"], weights=args)
    compressor = BaseCompressor.get_value_from_registry(wq.format)
    out = compressor.compress({"weight": weight.detach(), "weight_scale": scale.to(weight.dtype)}, scheme)
    return {k: v.contiguous() for k, v in out.items()}
