"""Tensor- and expert-parallel inference, applied to a loaded glmv model from outside (the model code is unchanged).

Over a 1-D DeviceMesh of n ranks, `parallelize(model, mesh)` shards:

  attention         q/k/v ColwiseParallel (each rank keeps heads/n query heads and kv_heads/n kv heads, whole
                    heads, GQA groups intact), o_proj RowwiseParallel (one all-reduce); the Attention modules'
                    `heads` / `kv_heads` become the local counts, so their reshapes and a KV cache of local kv heads
                    (`make_kv_cache`) just work
  dense MLPs        SwiGLU gate/up ColwiseParallel, down RowwiseParallel; FusedSwiGLU (GLM-4.1V) the same after its
                    gate_up rows are reordered [g_0 u_0 | g_1 u_1 | ...] so that an even Shard(0) hands rank r its
                    own gate and up rows (the parameter's global DTensor view is in that order, not the checkpoint's)
  shared experts    gate/up ColwiseParallel, down RowwiseParallel left Partial: summed with the routed experts'
                    partial output, then one all-reduce per MoE layer (a forward hook on the MoE module)
  routed experts    `experts="ep"`: by expert (rank r keeps experts [r*E/n, (r+1)*E/n) of both stacks and computes
                    only the (token, slot) pairs routed to them); `experts="tp"`: every expert's intermediate dim
                    (gate_up [E, 2I/n, H], down [E, H, I/n]); either way a partial sum. The router stays replicated.
  vocabulary        embed_tokens RowwiseParallel over the vocabulary (masked lookup + all-reduce), lm_head
                    ColwiseParallel with the logits all-gathered (skipped for tied embeddings)

Everything with a torch ParallelStyle uses `parallelize_module`; the stacked expert tensors have none, so
`ShardedExperts` (here) holds them as DTensors (Shard(0) for EP, Shard(1)/Shard(2) for TP) and computes on their
local shards, and the MoE's single reduction is a `Partial -> Replicate` DTensor redistribution. The vision tower
and the routers are replicated. Weights are taken from each rank's own full copy (`src_data_rank=None`: no
communication while sharding), so every rank first loads the whole checkpoint.

The contract is the model forward: prefill and cached decode steps give the 1-process logits on every rank
(tests/distributed). Inference only: the reductions are differentiable DTensor ops, but training with TP is not
tested (training shards with FSDP2: glmv.distributed.fsdp).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.tensor import DTensor, Partial, Replicate, Shard, distribute_tensor
from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

from glmv.errors import ConfigError
from glmv.model.cache import KVCache
from glmv.model.glm4v import GlmvForConditionalGeneration
from glmv.model.layers import FusedSwiGLU, SwiGLU
from glmv.model.moe import Experts, MoE, _grouped_mm_fits, per_expert
from glmv.model.text import Attention

EXPERT_MODES = ("ep", "tp", None)


def parallelize(model: GlmvForConditionalGeneration, mesh: DeviceMesh, *, attention: bool = True, mlp: bool = True,
                experts: str | None = "tp", vocab: bool = True) -> GlmvForConditionalGeneration:
    """Shard `model` in place over the 1-D `mesh` (see the module docstring) and return it.

    attention: tensor-parallel attention; mlp: tensor-parallel dense MLPs and shared experts; experts: "ep" (expert
    parallel), "tp" (each expert's intermediate dim split) or None (replicated); vocab: embedding and lm_head split
    over the vocabulary. Every rank must call it with the same model and arguments."""
    if mesh.ndim != 1:
        raise ConfigError(f"parallelize takes a 1-D mesh, got {mesh.ndim}-D: pass the tensor-parallel dimension")
    if experts not in EXPERT_MODES:
        raise ConfigError(f"experts={experts!r}: use 'ep', 'tp' or None")
    if getattr(model, "parallel_mesh", None) is not None:
        raise ConfigError("this model is sharded already: parallelize a freshly loaded one")
    n = mesh.size()
    cfg = model.config.text
    layers = model.language_model.layers
    plan: dict[str, ColwiseParallel | RowwiseParallel] = {}
    reduce_moe: list[MoE] = []  # MoE modules whose routed + shared partial sums are reduced once, after the add
    fused: list[FusedSwiGLU] = []  # gate_up rows reordered once every check has passed
    for i, layer in enumerate(layers):
        prefix = f"language_model.layers.{i}"
        if attention:
            _require(cfg.num_attention_heads % n == 0 and cfg.num_key_value_heads % n == 0,
                     f"{cfg.num_attention_heads} heads / {cfg.num_key_value_heads} kv heads do not split over "
                     f"{n} ranks")
            _linears(layer.self_attn, ("q_proj", "k_proj", "v_proj", "o_proj"), prefix + ".self_attn")
            for name in ("q_proj", "k_proj", "v_proj"):
                plan[f"{prefix}.self_attn.{name}"] = ColwiseParallel()
            plan[f"{prefix}.self_attn.o_proj"] = RowwiseParallel()
        ffn = layer.mlp
        if isinstance(ffn, MoE):
            if experts is not None:
                _require(type(ffn.experts) is Experts, f"{prefix}.mlp.experts is a {type(ffn.experts).__name__}: "
                         "only float Experts stacks shard (not quantised or adapted ones)")
                if experts == "ep":
                    _require(ffn.experts.num_experts % n == 0,
                             f"{ffn.experts.num_experts} experts do not split over {n} ranks")
                else:
                    _require(cfg.moe_intermediate_size % n == 0,
                             f"moe_intermediate_size {cfg.moe_intermediate_size} does not split over {n} ranks")
            if mlp:
                _swiglu_plan(plan, fused, ffn.shared_experts, f"{prefix}.mlp.shared_experts", n,
                             partial=experts is not None)
                if experts is not None:
                    reduce_moe.append(ffn)
        elif mlp:
            _swiglu_plan(plan, fused, ffn, f"{prefix}.mlp", n)
    if vocab and not model.config.tie_word_embeddings:
        _require(cfg.vocab_size % n == 0, f"vocab_size {cfg.vocab_size} does not split over {n} ranks")
        _require(type(model.lm_head) is nn.Linear, "lm_head is not a float nn.Linear")
        plan["language_model.embed_tokens"] = RowwiseParallel(input_layouts=Replicate())
        plan["lm_head"] = ColwiseParallel(output_layouts=Replicate())
    with torch.no_grad():  # [gate; up] -> [g_0 u_0 | g_1 u_1 | ...]: Shard(0) gives rank r (g_r, u_r)
        for module in fused:
            module.gate_up_proj.weight.copy_(interleave_halves(module.gate_up_proj.weight, n, dim=0))
    parallelize_module(model, mesh, plan, src_data_rank=None)

    if attention:
        for layer in layers:
            layer.self_attn.heads //= n
            layer.self_attn.kv_heads //= n
    for layer in layers:
        if isinstance(layer.mlp, MoE) and experts is not None:
            moe = layer.mlp
            moe.experts = ShardedExperts(moe.experts, mesh, experts, reduce=moe not in reduce_moe)
            if moe in reduce_moe:
                moe.register_forward_hook(_reduce_hook(mesh))
    model.parallel_mesh = mesh  # marks the model sharded; callers that need the group read it here
    return model


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(f"tensor/expert parallelism: {message}")


def _linears(module: nn.Module, names: tuple[str, ...], where: str) -> None:
    for name in names:
        sub = getattr(module, name)
        _require(type(sub) is nn.Linear, f"{where}.{name} is a {type(sub).__name__}, not a float nn.Linear "
                                         "(quantised and LoRA-wrapped linears do not shard)")


def _swiglu_plan(plan: dict, fused: list, module: nn.Module, prefix: str, n: int, partial: bool = False) -> None:
    down = RowwiseParallel(output_layouts=Partial()) if partial else RowwiseParallel()
    if isinstance(module, FusedSwiGLU):
        _linears(module, ("gate_up_proj", "down_proj"), prefix)
        inner = module.down_proj.in_features
        _require(inner % n == 0, f"{prefix}: intermediate size {inner} does not split over {n} ranks")
        fused.append(module)
        plan[f"{prefix}.gate_up_proj"] = ColwiseParallel()
    elif isinstance(module, SwiGLU):
        _linears(module, ("gate_proj", "up_proj", "down_proj"), prefix)
        inner = module.down_proj.in_features
        _require(inner % n == 0, f"{prefix}: intermediate size {inner} does not split over {n} ranks")
        plan[f"{prefix}.gate_proj"] = ColwiseParallel()
        plan[f"{prefix}.up_proj"] = ColwiseParallel()
    else:
        raise ConfigError(f"tensor parallelism: {prefix} is a {type(module).__name__}, not a SwiGLU MLP")
    plan[f"{prefix}.down_proj"] = down


def interleave_halves(t: torch.Tensor, n: int, dim: int) -> torch.Tensor:
    """[first half; second half] along `dim`, each cut in n chunks -> [a_0 b_0 | a_1 b_1 | ... ]: so that an even
    split of the result in n gives chunk r = [a_r; b_r]."""
    dim = dim % t.ndim
    size = t.shape[dim]
    shape = t.shape[:dim] + (2, n, size // (2 * n)) + t.shape[dim + 1 :]
    return t.reshape(shape).transpose(dim, dim + 1).reshape(t.shape)


def _reduce(out: torch.Tensor, mesh: DeviceMesh) -> torch.Tensor:
    """Sum the ranks' partial outputs (differentiable: a DTensor Partial -> Replicate redistribution)."""
    return DTensor.from_local(out, mesh, [Partial()], run_check=False).full_tensor()


def _reduce_hook(mesh: DeviceMesh):
    def hook(module: nn.Module, args, output: torch.Tensor) -> torch.Tensor:
        return _reduce(output, mesh)
    return hook


class ShardedExperts(nn.Module):
    """The routed experts of one MoE layer, sharded over a 1-D mesh: the two stacks as DTensor parameters (same
    names and global shapes as Experts', so `state_dict` and DCP see the whole stacks), computed on local shards.

    mode "ep": rank r holds experts [r*E/n, (r+1)*E/n) whole and computes only the (token, slot) pairs routed to
    them; mode "tp": every expert's intermediate rows gate_up [E, 2I/n, H] (gate and up halves interleaved, see
    `interleave_halves`) and columns down [E, H, I/n]. Either way the result is this rank's partial sum of the full
    output; `reduce=True` sums it over the mesh here (otherwise the MoE's hook does, after adding the shared
    experts' partial sum)."""

    def __init__(self, experts: Experts, mesh: DeviceMesh, mode: str, reduce: bool):
        super().__init__()
        n, rank = mesh.size(), mesh.get_local_rank()
        gate_up, down = experts.gate_up_proj.detach(), experts.down_proj.detach()
        self.num_experts_total = gate_up.shape[0]
        self.mode, self.reduce, self.mesh, self.act = mode, reduce, mesh, experts.act
        if mode == "ep":
            self.first, self.local = rank * (gate_up.shape[0] // n), gate_up.shape[0] // n
            placements = ([Shard(0)], [Shard(0)])
        else:
            self.first, self.local = 0, gate_up.shape[0]
            gate_up = interleave_halves(gate_up, n, dim=1)
            placements = ([Shard(1)], [Shard(2)])
        self.gate_up_proj = nn.Parameter(distribute_tensor(gate_up, mesh, placements[0], src_data_rank=None),
                                         requires_grad=experts.gate_up_proj.requires_grad)
        self.down_proj = nn.Parameter(distribute_tensor(down, mesh, placements[1], src_data_rank=None),
                                      requires_grad=experts.down_proj.requires_grad)

    def extra_repr(self) -> str:
        return f"mode={self.mode}, experts {self.first}..{self.first + self.local - 1} of {self.num_experts_total}"

    def forward(self, x: torch.Tensor, weights: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """x [T, H], weights/ids [T, k] (the replicated router's choice) -> [T, H]: this rank's experts' share."""
        gate_up, down = self.gate_up_proj.to_local(), self.down_proj.to_local()
        k = ids.shape[1]
        flat = ids.flatten()  # [T*k] token-major (token, slot) pairs
        if self.mode == "ep":
            pairs = ((flat >= self.first) & (flat < self.first + self.local)).nonzero().squeeze(1)
            local_ids = flat[pairs] - self.first
        else:
            pairs, local_ids = torch.arange(flat.shape[0], device=flat.device), flat
        order = local_ids.argsort(stable=True)
        pairs = pairs[order]
        counts = torch.bincount(local_ids, minlength=self.local)
        tokens = pairs // k
        xs = x[tokens]  # [pairs, H], one contiguous run per local expert
        if _grouped_mm_fits(x, gate_up, down):
            offs = counts.cumsum(0).to(torch.int32)
            g, u = torch._grouped_mm(xs, gate_up.transpose(1, 2), offs=offs).chunk(2, dim=-1)
            out = torch._grouped_mm(self.act(g) * u, down.transpose(1, 2), offs=offs)
        elif xs.shape[0]:
            gu, dn = gate_up.unbind(0), down.unbind(0)

            def mlp(e: int, rows: torch.Tensor) -> torch.Tensor:
                g, u = F.linear(rows, gu[e]).chunk(2, dim=-1)
                return F.linear(self.act(g) * u, dn[e])

            out = per_expert(xs, counts, mlp)
        else:  # no pair routed to this rank's experts: it still joins the reduction
            out = xs
        out = out * weights.flatten()[pairs, None].to(x.dtype)
        out = torch.zeros_like(x).index_add_(0, tokens, out)
        return _reduce(out, self.mesh) if self.reduce else out


def local_kv_heads(model: GlmvForConditionalGeneration) -> int:
    """KV heads each rank stores: the checkpoint's count over the tensor-parallel size (all of them unsharded)."""
    attn = next(m for m in model.modules() if isinstance(m, Attention))
    return attn.kv_heads


def make_kv_cache(model: GlmvForConditionalGeneration, batch: int, capacity: int) -> KVCache:
    """A contiguous KVCache for this rank's share of the heads: [B, local kv heads, capacity, head_dim] per layer."""
    t = model.config.text
    return KVCache(t.num_hidden_layers, batch, local_kv_heads(model), t.head_dim, capacity, model.dtype, model.device)
