"""Quantised weights: reading compressed-tensors / block-FP8 checkpoints, the modules that compute with them,
and writing them (`glmv convert`)."""

from glmv.quant.scheme import SCHEMES, CheckpointQuantization, WeightQuant, parse_quantization

__all__ = ["SCHEMES", "CheckpointQuantization", "WeightQuant", "parse_quantization"]
