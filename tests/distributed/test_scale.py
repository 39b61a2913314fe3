"""docs/scale.md's arithmetic (glmv/distributed/scale.py): the parameter counts equal the GLM-4.5V checkpoint's
(glm-v-spec: 107,710,933,120 = text 106,852,251,264 + vision 858,681,856), and the activation formula equals the
bytes autograd saves in glmv's own layers (measured here on a tiny checkpoint in bf16)."""

from __future__ import annotations

import pytest
import torch

import glmv
from glmv.distributed import scale
from glmv.model.rope import mrope_cos_sin


def test_glm45v_counts_match_the_checkpoint():
    p = scale.params()
    assert p["total"] == 107_710_933_120
    assert p["text"] == 106_852_251_264
    assert p["vision"] == 858_681_856
    assert scale.kv_bytes_per_token() == 188_416  # 46 * 2 * 8 * 128 * 2
    assert round(scale.active_matmul_params() / 1e9, 1) == 12.8  # "~12B active"
    # per-GPU serving weights: TP4 about 50 GiB (the spec cites 50.3 GiB from a vLLM TP4 log)
    assert 50 < scale.serving_weight_bytes(scale.GLM45V, 4, "tp") / scale.GiB < 52


def saved_bytes_per_token(layer, cfg, interleaved: bool) -> float:
    """Bytes autograd saves for backward per token in one decoder layer (parameters excluded), from two lengths."""
    params = {p.untyped_storage().data_ptr() for p in layer.parameters()}
    totals = []
    for n in (64, 128):
        seen: dict[int, int] = {}

        def pack(x):
            storage = x.untyped_storage()
            if storage.data_ptr() not in params:
                seen[storage.data_ptr()] = storage.nbytes()
            return x

        h = torch.randn(1, n, cfg.hidden_size, dtype=torch.bfloat16, requires_grad=True)
        pos = torch.arange(n)[None, None].expand(3, 1, n)
        cos, sin = mrope_cos_sin(pos, cfg.rotary_dim, cfg.rope_theta, cfg.mrope_section, interleaved, torch.bfloat16)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
            layer(h, cos, sin, None, None)
        totals.append(sum(seen.values()))
    return (totals[1] - totals[0]) / 64


def test_activation_formula_equals_what_autograd_saves(tiny_checkpoint):
    model = glmv.load_model(tiny_checkpoint("glm4v_moe"), dtype=torch.bfloat16, progress=False).train()
    t = model.config.text
    a = scale.Arch(vocab=t.vocab_size, hidden=t.hidden_size, layers=t.num_hidden_layers, heads=t.num_attention_heads,
                   kv_heads=t.num_key_value_heads, head_dim=t.head_dim, rotary_dim=t.rotary_dim,
                   dense_inter=t.intermediate_size, first_dense=t.first_k_dense_replace, experts=t.n_routed_experts,
                   top_k=t.num_experts_per_tok, moe_inter=t.moe_intermediate_size, shared=t.n_shared_experts)
    rope = 4 * a.rotary_dim  # cos and sin, bf16: saved once per forward, here once per measured layer
    layers = model.language_model.layers
    dense = saved_bytes_per_token(layers[0], t, model.language_model.interleaved)
    moe = saved_bytes_per_token(layers[1], t, model.language_model.interleaved)
    assert dense == scale.attention_activation_bytes(a) + scale.dense_activation_bytes(a) + rope
    # the MoE block's pair terms are exact per (token, slot) pair; per token they are exact for any routing
    assert moe == scale.attention_activation_bytes(a) + scale.moe_activation_bytes(a) + rope


@pytest.mark.parametrize("seq", [8192, 32768])
def test_training_flops_grow_with_context(seq):
    base = 2 * scale.active_matmul_params()
    f = scale.train_flops_per_token(scale.GLM45V, seq, recompute=True)
    assert f == 4 * (base + 46 * 4 * 12288 * (seq + 1) / 2)
