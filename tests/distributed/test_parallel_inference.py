"""Tensor- and expert-parallel inference over 2 gloo processes equals one process: logits of a batched prefill
(left padding, an image) with and without the KV cache, and 4 greedy decode steps through a cache of local kv heads.
Each sharded model is compared with the unsharded model in the same process (glmv/distributed/testing.py)."""

from __future__ import annotations

import torch

from glmv.distributed.launch import spawn
from glmv.distributed.parallel import interleave_halves
from glmv.distributed.testing import check_parallel_inference

TOL = 1e-5
TINY = dict(heads=4, kv_heads=2, head_dim=16, experts=8, moe_inter=16, hidden=64, vocab=256)


def run(checkpoint, configs: dict, out) -> list[dict]:
    spawn(check_parallel_inference, 2, str(checkpoint), configs, str(out))
    return [torch.load(out / f"rank{r}.pt") for r in range(2)]


def assert_matches(result: dict) -> None:
    assert result["full"] <= TOL and result["cached_prefill"] <= TOL and result["steps"] <= TOL, result
    assert result["same_ids"], result


def test_tensor_parallel_dense(tiny_checkpoint, tmp_path):
    """GLM-4.1V layout: sandwich norms, fused gate_up MLP (rows interleaved for the column split), GPT-J rotary."""
    ranks = run(tiny_checkpoint("glm4v"), {"tp": {}}, tmp_path)
    for r in ranks:
        res = r["tp"]
        assert_matches(res)
        assert res["heads"] == (2, 1)  # 4 / 2 query heads, 2 / 2 kv heads per rank
        assert res["kv_shape"] == (2, 1, 24, 16) and res["ref_kv_shape"] == (2, 2, 24, 16)
        shapes = res["local_shapes"]
        assert shapes["language_model.layers.0.self_attn.q_proj.weight"] == (32, 64)
        assert shapes["language_model.layers.0.self_attn.q_proj.bias"] == (32,)
        assert shapes["language_model.layers.0.self_attn.o_proj.weight"] == (64, 32)
        assert shapes["language_model.layers.0.mlp.gate_up_proj.weight"] == (96, 64)  # 2 x 96 / 2
        assert shapes["language_model.layers.0.mlp.down_proj.weight"] == (64, 48)
        assert shapes["language_model.embed_tokens.weight"] == (128, 64)
        assert shapes["lm_head.weight"] == (128, 64)
    assert torch.equal(ranks[0]["tp"]["ids"], ranks[1]["tp"]["ids"])


def test_tensor_and_expert_parallel_moe(tiny_checkpoint, tmp_path):
    """GLM-4.5V layout: "tp" splits attention, dense + shared MLPs, vocabulary and every expert's intermediate dim;
    "ep" only the routed experts, by expert (attention replicated); "tp_ep" both (attention TP, experts EP)."""
    configs = {"tp": {}, "ep": dict(attention=False, mlp=False, experts="ep", vocab=False), "tp_ep": dict(experts="ep")}
    ranks = run(tiny_checkpoint("glm4v_moe"), configs, tmp_path)
    experts = "language_model.layers.1.mlp.experts"
    for r in ranks:
        for name in configs:
            assert_matches(r[name])
        tp, ep, tp_ep = r["tp"], r["ep"], r["tp_ep"]
        assert tp["heads"] == tp_ep["heads"] == (2, 1) and ep["heads"] == (4, 2)
        assert tp["kv_shape"] == (2, 1, 24, 16) and ep["kv_shape"] == (2, 2, 24, 16)
        assert tp["local_shapes"][f"{experts}.gate_up_proj"] == (8, 16, 64)  # all experts, half of 2 x 16 rows
        assert tp["local_shapes"][f"{experts}.down_proj"] == (8, 64, 8)
        for res in (ep, tp_ep):
            assert res["local_shapes"][f"{experts}.gate_up_proj"] == (4, 32, 64)  # 4 of 8 experts, whole
            assert res["local_shapes"][f"{experts}.down_proj"] == (4, 64, 16)
        assert tp["local_shapes"]["language_model.layers.1.mlp.shared_experts.down_proj.weight"] == (64, 8)
        assert "language_model.layers.1.self_attn.q_proj.weight" not in ep["local_shapes"]  # replicated in EP only
        assert "language_model.layers.1.mlp.gate.weight" not in tp["local_shapes"]  # the router stays replicated
    for name in configs:
        assert torch.equal(ranks[0][name]["ids"], ranks[1][name]["ids"])


def test_interleave_halves_gives_each_rank_its_gate_and_up_rows():
    gate, up = torch.arange(8.0), 100 + torch.arange(8.0)
    w = interleave_halves(torch.cat([gate, up])[:, None].expand(16, 3), 4, dim=0)
    for r, chunk in enumerate(w.chunk(4, dim=0)):
        g, u = chunk[:, 0].chunk(2)
        assert torch.equal(g, gate[2 * r : 2 * r + 2]) and torch.equal(u, up[2 * r : 2 * r + 2])
    stacked = torch.stack([torch.cat([gate, up]), torch.cat([gate, up]) + 1000])[:, :, None]  # [E, 2I, H]
    for r, chunk in enumerate(interleave_halves(stacked, 2, dim=1).chunk(2, dim=1)):
        g, u = chunk[0, :, 0].chunk(2)
        assert torch.equal(g, gate[4 * r : 4 * r + 4]) and torch.equal(u, up[4 * r : 4 * r + 4])
