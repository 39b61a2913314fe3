"""The arithmetic of docs/scale.md as code: parameter counts, training memory per GPU, FLOPs and communication per
token, serving weights and KV cache per GPU, for GLM-4.5V / GLM-4.6V (one architecture). `python -m
glmv.distributed.scale` prints every table of the document; tests/distributed/test_scale.py checks the counts
against the checkpoint report (glm-v-spec) and the activation formula against the bytes autograd really saves in
glmv's layers.

Units: bytes; GB = 1e9 bytes, GiB = 2**30 bytes (both are named where they appear).
"""

from __future__ import annotations

from dataclasses import dataclass

GB, GiB = 1e9, 2**30


@dataclass(frozen=True)
class Arch:
    """The text decoder's and vision tower's sizes (GLM-4.5V's config.json by default; GLM-4.6V: the same)."""
    vocab: int = 151552
    hidden: int = 4096
    layers: int = 46
    heads: int = 96
    kv_heads: int = 8
    head_dim: int = 128
    rotary_dim: int = 64
    dense_inter: int = 10944  # layer 0's MLP
    first_dense: int = 1
    experts: int = 128
    top_k: int = 8
    moe_inter: int = 1408
    shared: int = 1
    attention_bias: bool = True  # q/k/v
    tied: bool = False
    # vision (ViT + merger)
    v_depth: int = 24
    v_hidden: int = 1536
    v_mlp: int = 4096  # the ViT blocks' SwiGLU width (= out_hidden_size)
    v_patch_in: int = 3 * 2 * 14 * 14
    v_positions: int = 576
    v_out: int = 4096
    v_merge: int = 2
    v_merger_inter: int = 10944

    @property
    def q(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv(self) -> int:
        return self.kv_heads * self.head_dim

    @property
    def moe_layers(self) -> int:
        return self.layers - self.first_dense


GLM45V = Arch()


# --- parameters -----------------------------------------------------------------------------------------------

def attention_params(a: Arch) -> int:
    bias = (a.q + 2 * a.kv) if a.attention_bias else 0
    return a.hidden * a.q + 2 * a.hidden * a.kv + a.q * a.hidden + bias


def expert_params(a: Arch) -> int:
    """One routed expert (gate, up, down)."""
    return 3 * a.hidden * a.moe_inter


def vision_params(a: Arch) -> int:
    block = 2 * a.v_hidden + 3 * a.v_hidden * a.v_hidden + a.v_hidden * a.v_hidden + 3 * a.v_hidden * a.v_mlp
    patch = a.v_patch_in * a.v_hidden + a.v_hidden
    downsample = a.v_hidden * a.v_out * a.v_merge**2 + a.v_out
    merger = a.v_out * a.v_out + 2 * a.v_out + 3 * a.v_out * a.v_merger_inter
    return patch + a.v_hidden + a.v_positions * a.v_hidden + a.v_depth * block + a.v_hidden + downsample + merger


def params(a: Arch = GLM45V) -> dict[str, int]:
    """Parameter counts by part (the router's fp32 selection bias counted as the checkpoint stores it)."""
    p = {
        "embed_tokens": a.vocab * a.hidden,
        "lm_head": 0 if a.tied else a.vocab * a.hidden,
        "final_norm": a.hidden,
        "attention": a.layers * attention_params(a),
        "layer_norms": a.layers * 2 * a.hidden,
        "dense_mlp": a.first_dense * 3 * a.hidden * a.dense_inter,
        "routed_experts": a.moe_layers * a.experts * expert_params(a),
        "shared_experts": a.moe_layers * a.shared * expert_params(a),
        "routers": a.moe_layers * (a.experts * a.hidden + a.experts),
        "vision": vision_params(a),
    }
    p["text"] = sum(v for k, v in p.items() if k != "vision")
    p["total"] = p["text"] + p["vision"]
    return p


def moe_layer_params(a: Arch = GLM45V) -> int:
    """One MoE decoder layer: what FSDP gathers per layer unit."""
    return (attention_params(a) + 2 * a.hidden + a.experts * expert_params(a) + a.shared * expert_params(a)
            + a.experts * a.hidden)


def root_unit_params(a: Arch = GLM45V) -> int:
    """glmv.distributed.fsdp.shard_model's root unit: everything outside the decoder layers (embeddings, lm_head,
    final norm, the whole vision tower)."""
    p = params(a)
    return p["embed_tokens"] + p["lm_head"] + p["final_norm"] + p["vision"]


def active_matmul_params(a: Arch = GLM45V) -> int:
    """Weights one text token multiplies through (no biases, norms or the embedding lookup)."""
    attn = a.layers * (a.hidden * a.q + 2 * a.hidden * a.kv + a.q * a.hidden)
    dense = a.first_dense * 3 * a.hidden * a.dense_inter
    moe = a.moe_layers * ((a.top_k + a.shared) * expert_params(a) + a.experts * a.hidden)
    return attn + dense + moe + a.vocab * a.hidden


# --- activations (bytes per token, bf16 model, glmv's code; measured: tests/distributed/test_scale.py) -----------

def attention_activation_bytes(a: Arch, tp: int = 1) -> int:
    """Saved for backward per token by one attention block with its input norm: the norm (fp32 input copy 4H,
    rsqrt 4, bf16 normalised 2H, bf16 output 2H), q and k after rotary, v, the attention output and its
    [tokens, heads*dim] copy (bf16), SDPA's fp32 log-sum-exp. With tp ranks the head tensors split, the norm's not."""
    return 8 * a.hidden + 4 + (6 * a.q + 4 * a.kv + 4 * a.heads) // tp


def moe_activation_bytes(a: Arch, ep: int = 1, tp_shared: int = 1) -> int:
    """Saved per token by one MoE block with its norm: norm 6H + 4 and its bf16 output 2H; router (fp32 input 4H,
    sigmoid scores 4E, ids 8k, sum 4, weights 4k); per (token, slot) pair: int64 order and token 16, bf16 row copy,
    expert output and weighted output 3 x 2H, gate_up output, activation, product 8I, pair weight 2; shared expert
    8 I_s. With ep ranks (glmv's EP: every rank sees every token) the pair terms split on average."""
    pairs = a.top_k * (16 + 6 * a.hidden + 8 * a.moe_inter + 2) // ep
    router = 4 * a.hidden + 4 * a.experts + 8 * a.top_k + 4 + 4 * a.top_k
    return 8 * a.hidden + 4 + router + pairs + 8 * a.shared * a.moe_inter // tp_shared


def dense_activation_bytes(a: Arch, tp: int = 1) -> int:
    """Layer 0's SwiGLU block with its norm: norm 8H + 4; gate, up, activation, product 4 x 2D."""
    return 8 * a.hidden + 4 + 8 * a.dense_inter // tp


def activation_bytes_per_token(a: Arch = GLM45V, tp: int = 1, ep: int = 1) -> int:
    """All decoder layers, no checkpointing (+ rotary cos/sin once)."""
    attn = attention_activation_bytes(a, tp)
    return (a.first_dense * (attn + dense_activation_bytes(a, tp))
            + a.moe_layers * (attn + moe_activation_bytes(a, ep, tp)) + 4 * a.rotary_dim)


def checkpointed_bytes_per_token(a: Arch = GLM45V, tp: int = 1, ep: int = 1, residual_bytes: int = 2) -> int:
    """Per-layer activation checkpointing (glmv.train.recompute): each layer's input kept (H x residual_bytes: 2 for
    a bf16 residual stream, 4 under autocast with fp32 parameters), plus one MoE layer's activations live while it
    is recomputed and differentiated."""
    return a.layers * a.hidden * residual_bytes + attention_activation_bytes(a, tp) + moe_activation_bytes(a, ep, tp)


def logits_bytes_per_token(a: Arch = GLM45V) -> tuple[int, int]:
    """token_loss over the full vocabulary: (held into the backward: fp32 log-softmax, peak: + bf16 logits and
    their fp32 copy in the forward / + two fp32 gradients in the backward)."""
    return 4 * a.vocab, 12 * a.vocab


# --- compute --------------------------------------------------------------------------------------------------

def attention_flops_per_token(a: Arch, seq: int) -> float:
    """Forward QK^T and AV of one token over its causal context (on average (seq + 1) / 2 keys)."""
    return a.layers * 4 * a.q * (seq + 1) / 2


def train_flops_per_token(a: Arch, seq: int, recompute: bool = True, lora: bool = False) -> float:
    """Forward 1x, backward 2x (input and weight gradients; LoRA: input gradients only, 1x), + a recomputed forward."""
    fwd = 2 * active_matmul_params(a) + attention_flops_per_token(a, seq)
    return fwd * ((2 if lora else 3) + (1 if recompute else 0))


# --- communication per GPU --------------------------------------------------------------------------------------

def fsdp_bytes_per_microbatch(n_params: int, gather_bytes: int, reduce_bytes: int, world: int) -> float:
    """Ring all-gather in forward and in backward, reduce-scatter of the gradients (reduce_bytes 0: frozen)."""
    return (world - 1) / world * n_params * (2 * gather_bytes + reduce_bytes)


def ep_all_to_all_bytes_per_token(a: Arch = GLM45V, recompute: bool = True) -> float:
    """Token dispatch + combine (k bf16 rows each way) per MoE layer, in the forward, the backward (the gradients
    of both, the same bytes) and the recomputed forward; an upper bound (rows whose expert is on the sending GPU
    do not travel)."""
    per_layer = 2 * a.top_k * a.hidden * 2
    return a.moe_layers * per_layer * (2 + (1 if recompute else 0))


# --- serving ------------------------------------------------------------------------------------------------------

def kv_bytes_per_token(a: Arch = GLM45V, dtype_bytes: int = 2) -> int:
    return a.layers * 2 * a.kv * dtype_bytes


def serving_weight_bytes(a: Arch, n: int, mode: str, dtype_bytes: int = 2) -> float:
    """Weights on one of n GPUs with glmv.distributed.parallel: "tp" / "tp+ep" (attention, MLPs, vocabulary and
    experts split n ways, by intermediate dim or by expert: the same bytes) or "ep" (only the routed experts split;
    attention, MLPs and vocabulary replicated). Vision, norms and routers are replicated in every mode."""
    p = params(a)
    replicated = p["vision"] + p["final_norm"] + p["layer_norms"] + p["routers"]
    experts = p["routed_experts"]
    rest = p["total"] - replicated - experts
    if mode in ("tp", "tp+ep"):
        return (replicated + (rest + experts) / n) * dtype_bytes
    if mode == "ep":
        return (replicated + rest + experts / n) * dtype_bytes
    raise ValueError(mode)


def serving_table(gpu_gib: float, reserve_gib: float = 4.0, a: Arch = GLM45V) -> list[tuple]:
    """(n, mode, weights GiB/GPU, KV bytes/token/GPU, KV tokens that fit per GPU group) for n = 2, 4, 8."""
    rows = []
    for n in (2, 4, 8):
        for mode in ("tp", "ep"):
            w = serving_weight_bytes(a, n, mode)
            kv = kv_bytes_per_token(a) / (n if mode == "tp" else 1)
            free = gpu_gib * GiB - reserve_gib * GiB - w
            rows.append((n, mode, w / GiB, kv, max(0, int(free // kv))))
    return rows


# --- the document's tables ----------------------------------------------------------------------------------------

def _training_rows(a: Arch, gpus: int, seq: int) -> dict[str, float]:
    p = params(a)["total"]
    layer = moe_layer_params(a)
    root = root_unit_params(a)
    states = 16 * p / gpus  # fp32 params + fp32 grads + fp32 AdamW m, v
    held, peak = logits_bytes_per_token(a)
    return {
        "states": states / GiB,
        "layer_gather_fp32": 3 * 4 * layer / GiB,  # 2 gathered layers (prefetch) + one layer's unsharded grads
        "root_fp32": 2 * 4 * root / GiB,  # root params (kept through the step) + their unsharded grads
        "act_none": activation_bytes_per_token(a) * seq / GiB,
        "act_ckpt": checkpointed_bytes_per_token(a, residual_bytes=4) * seq / GiB,
        "logits_peak": peak * seq / GiB,
    }


def main() -> None:
    a = GLM45V
    p = params(a)
    print("## parameters")
    for k, v in p.items():
        print(f"| {k} | {v:,} | {2 * v / GB:.2f} GB bf16 |")
    print(f"| MoE layer (one FSDP unit) | {moe_layer_params(a):,} | |")
    print(f"| root unit | {root_unit_params(a):,} | |")
    print(f"| active matmul params / token | {active_matmul_params(a):,} | |")
    print("\n## activations, bytes per token")
    print(f"attention {attention_activation_bytes(a):,}, MoE {moe_activation_bytes(a):,}, dense "
          f"{dense_activation_bytes(a):,}, all layers {activation_bytes_per_token(a):,}, "
          f"checkpointed (bf16 / fp32 residual) {checkpointed_bytes_per_token(a):,} / "
          f"{checkpointed_bytes_per_token(a, residual_bytes=4):,}, logits held/peak {logits_bytes_per_token(a)}")
    print(f"TP8 + EP8: all layers {activation_bytes_per_token(a, tp=8, ep=8):,}, checkpointed "
          f"{checkpointed_bytes_per_token(a, tp=8, ep=8):,}")
    print("\n## full SFT memory per GPU (GiB)")
    for gpus in (256, 512):
        for seq in (8192, 16384, 32768):
            r = _training_rows(a, gpus, seq)
            print(f"| {gpus} | {seq} | " + " | ".join(f"{v:.2f}" for v in r.values()) + " |")
    print("\n## FLOPs per token, time per 1 sequence per GPU at 35% of 989 TFLOP/s")
    for seq in (8192, 16384, 32768):
        for lora in (False, True):
            f = train_flops_per_token(a, seq, recompute=True, lora=lora)
            t = f * seq / (0.35 * 989e12)
            print(f"| {seq} | {'LoRA' if lora else 'full'} | {attention_flops_per_token(a, seq):.3e} | {f:.3e} | "
                  f"{t:.2f} s | {seq / t:,.0f} tok/s/GPU |")
    print("\n## communication per GPU")
    experts = p["routed_experts"]
    for name, n, g, r in (("full FSDP, fp32 (glmv today)", p["total"], 4, 4),
                          ("full FSDP, bf16 params / fp32 reduce", p["total"], 2, 4),
                          ("LoRA, frozen bf16 base FSDP", p["total"], 2, 0),
                          ("non-expert params only, bf16/fp32", p["total"] - experts, 2, 4)):
        for gpus in (256, 512):
            b = fsdp_bytes_per_microbatch(n, g, r, gpus)
            print(f"| {name} | {gpus} | {b / GB:.1f} GB | {b / 50e9:.1f} s at 50 GB/s |")
    print(f"EP all-to-all per token: {ep_all_to_all_bytes_per_token(a):,.0f} B; per 8k sequence "
          f"{ep_all_to_all_bytes_per_token(a) * 8192 / GB:.1f} GB")
    print("\n## LoRA parameters (r = 16)")
    r = 16
    attn = a.layers * r * ((a.hidden + a.q) * 2 + (a.hidden + a.kv) * 2)
    dense = a.first_dense * r * 3 * (a.hidden + a.dense_inter)
    shared = a.moe_layers * a.shared * r * 3 * (a.hidden + a.moe_inter)
    routed = a.moe_layers * a.experts * r * 3 * (a.hidden + a.moe_inter)
    print(f"attention {attn:,}, dense {dense:,}, shared {shared:,}, routed experts {routed:,}")
    print("\n## serving: weights and KV per GPU")
    print(f"KV per token (bf16): {kv_bytes_per_token(a):,} B; 64k context {kv_bytes_per_token(a) * 65536 / GB:.2f} GB,"
          f" 128k {kv_bytes_per_token(a) * 131072 / GB:.2f} GB")
    for name, gib in (("H100 (78 GiB usable)", 78), ("H200 (139 GiB usable)", 139)):
        for n, mode, w, kv, tokens in serving_table(gib):
            print(f"| {name} | {n} | {mode} | {w:.1f} | {kv:,.0f} | {tokens:,} |")


if __name__ == "__main__":
    main()
