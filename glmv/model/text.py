"""The decoder: GQA attention with partial 3D rotary, dense or MoE feed-forward, two layer styles.

  MoE (GLM-4.5V):   h += Attn(norm_in(h));            h += FFN(norm_post_attn(h))
  dense (GLM-4.1V): h += norm_post_self_attn(Attn(norm_in(h)));  h += norm_post_mlp(MLP(norm_post_attn(h)))
"""

from __future__ import annotations

import torch
from torch import nn

from glmv.config import TextConfig
from glmv.model.cache import KVCache, attention_mask_for, sdpa
from glmv.model.layers import FusedSwiGLU, RMSNorm, SwiGLU
from glmv.model.moe import MoE
from glmv.model.rope import apply_partial_rotary, mrope_cos_sin


class Attention(nn.Module):
    def __init__(self, cfg: TextConfig, layer: int, interleaved: bool):
        super().__init__()
        self.layer = layer
        self.heads, self.kv_heads, self.head_dim = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        self.interleaved = interleaved  # GPT-J pairs (GLM-4.1V) or NeoX halves (GLM-4.5V, GLM-Image's prior)
        bias = cfg.attention_bias
        self.q_proj = nn.Linear(cfg.hidden_size, self.heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(cfg.hidden_size, self.kv_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(cfg.hidden_size, self.kv_heads * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(self.heads * self.head_dim, cfg.hidden_size, bias=False)

    def forward(self, x, cos, sin, mask: torch.Tensor | None, cache: KVCache | None) -> torch.Tensor:
        b, n, _ = x.shape
        q = self.q_proj(x).view(b, n, self.heads, self.head_dim).transpose(1, 2)  # [B, H, L, D]
        k = self.k_proj(x).view(b, n, self.kv_heads, self.head_dim).transpose(1, 2)  # [B, Hkv, L, D]
        v = self.v_proj(x).view(b, n, self.kv_heads, self.head_dim).transpose(1, 2)
        q = apply_partial_rotary(q, cos, sin, self.interleaved)
        k = apply_partial_rotary(k, cos, sin, self.interleaved)
        out = sdpa(q, k, v, mask) if cache is None else cache.attend(self.layer, q, k, v, mask)
        return self.o_proj(out.transpose(1, 2).reshape(b, n, -1))


class DecoderLayer(nn.Module):
    def __init__(self, cfg: TextConfig, layer: int, sandwich: bool, interleaved: bool):
        super().__init__()
        self.sandwich = sandwich
        self.self_attn = Attention(cfg, layer, interleaved)
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        if self.sandwich:
            self.post_self_attn_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
            self.post_mlp_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
            self.mlp = FusedSwiGLU(cfg.hidden_size, cfg.intermediate_size, cfg.hidden_act)
        elif cfg.is_moe_layer(layer):
            self.mlp = MoE(cfg)
        else:
            self.mlp = SwiGLU(cfg.hidden_size, cfg.intermediate_size, cfg.hidden_act)

    def forward(self, h, cos, sin, mask, cache, real: torch.Tensor | None = None):
        a = self.self_attn(self.input_layernorm(h), cos, sin, mask, cache)
        h = h + (self.post_self_attn_layernorm(a) if self.sandwich else a)
        x = self.post_attention_layernorm(h)
        f = self.mlp(x, real) if isinstance(self.mlp, MoE) else self.mlp(x)
        return h + (self.post_mlp_layernorm(f) if self.sandwich else f)


class TextModel(nn.Module):
    """embed_tokens + layers + final norm. The layer style follows the decoder kind (dense GLM-4.1V: sandwich norms
    and GPT-J rotary; MoE GLM-4.5V: neither) unless given: GLM-Image's prior has sandwich norms with NeoX rotary
    (glmv/image/), and needs only the dense fields of `cfg`."""

    def __init__(self, cfg: TextConfig, sandwich: bool | None = None, interleaved: bool | None = None):
        super().__init__()
        self.cfg = cfg
        self.interleaved = (not cfg.moe) if interleaved is None else interleaved
        sandwich = (not cfg.moe) if sandwich is None else sandwich
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(cfg, i, sandwich, self.interleaved) for i in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)

    def forward(
        self,
        inputs_embeds: torch.Tensor,
        position_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        """inputs_embeds [B, L, H], position_ids [3, B, L] -> final hidden states [B, L, H]."""
        cfg = self.cfg
        q_len = inputs_embeds.shape[1]
        if cache is None:
            mask = attention_mask_for(attention_mask, q_len, 0, inputs_embeds.device)
        else:
            mask = cache.attention_mask(attention_mask, q_len)
        cos, sin = mrope_cos_sin(
            position_ids, cfg.rotary_dim, cfg.rope_theta, cfg.mrope_section, self.interleaved, inputs_embeds.dtype
        )
        # Training balances the routers on the experts' load (glmv/train/trainer.py): padding, whose hidden states
        # depend on how a batch was split and padded, must not count (it made one rank's load differ from the
        # whole batch's, and steered the bias toward wherever pad tokens route).
        counted = self.training and attention_mask is not None and attention_mask.dim() == 2
        real = attention_mask.reshape(-1).bool() if counted else None
        h = inputs_embeds
        for layer in self.layers:
            h = layer(h, cos, sin, mask, cache, real)
        if cache is not None:
            cache.advance(q_len)
        return self.norm(h)
