"""The fused MoE Triton kernels against glmv's eager Experts, run on CPU by Triton's interpreter (numpy), and the
alignment step's invariants. Tiny blocks keep the interpreter fast; GPU speed is benchmarks/bench_fused_moe.py."""

from __future__ import annotations

import os

os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported: kernels defined afterwards run on CPU

import pytest  # noqa: E402
import torch  # noqa: E402

pytest.importorskip("triton")

from glmv.config import TextConfig  # noqa: E402
from glmv.kernels.fused_moe import available, fused_experts  # noqa: E402
from glmv.kernels.moe_align import align_pairs, max_padded_rows  # noqa: E402
from glmv.kernels.moe_configs import CONFIGS, MoEConfig, pick_config  # noqa: E402
from glmv.model.moe import Experts  # noqa: E402

TINY = MoEConfig(block_m=16, block_n=16, block_k=16, group_m=3)  # smallest GPU dot tile; groups left partial


def make_experts(experts: int, hidden: int, inner: int, seed: int = 0) -> Experts:
    cfg = TextConfig(moe=True, vocab_size=16, hidden_size=hidden, num_hidden_layers=1, num_attention_heads=1,
                     num_key_value_heads=1, head_dim=8, intermediate_size=8, moe_intermediate_size=inner,
                     n_routed_experts=experts, num_experts_per_tok=2)
    module = Experts(cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # scaled so that every intermediate is O(1): an absolute tolerance means something
        module.gate_up_proj.copy_(torch.randn(module.gate_up_proj.shape, generator=g) / hidden**0.5)
        module.down_proj.copy_(torch.randn(module.down_proj.shape, generator=g) / inner**0.5)
    return module


def routing(tokens: int, experts: int, k: int, seed: int = 1, allowed: list[int] | None = None):
    """Distinct experts per token (as the router's top-k gives), drawn from `allowed`, and positive weights."""
    g = torch.Generator().manual_seed(seed)
    scores = torch.rand(tokens, experts, generator=g)
    if allowed is not None:
        scores[:, [e for e in range(experts) if e not in allowed]] = -1.0
    return torch.rand(tokens, k, generator=g) * 2, scores.topk(k, dim=-1).indices


def run_both(module: Experts, x: torch.Tensor, weights: torch.Tensor, ids: torch.Tensor, config=TINY):
    with torch.no_grad():
        ref = module(x, weights, ids)
        out = fused_experts(x, module.gate_up_proj.data, module.down_proj.data, weights, ids, config)
    return ref, out


@pytest.mark.parametrize("tokens", [1, 3, 17])
@pytest.mark.parametrize("k", [2, 4])
@pytest.mark.parametrize("hidden,inner", [(32, 16), (64, 48)])
def test_matches_eager_experts(tokens, k, hidden, inner):
    module = make_experts(8, hidden, inner)
    x = torch.randn(tokens, hidden, generator=torch.Generator().manual_seed(2))
    weights, ids = routing(tokens, 8, k)
    ref, out = run_both(module, x, weights, ids)
    assert out.shape == ref.shape and out.dtype == ref.dtype
    assert (out - ref).abs().max().item() <= 1e-5


def test_experts_without_tokens():
    """Only experts 0, 3 and 7 (the first and the last included) receive pairs: empty runs take no blocks."""
    module = make_experts(8, 64, 48)
    x = torch.randn(17, 64, generator=torch.Generator().manual_seed(3))
    weights, ids = routing(17, 8, 2, allowed=[0, 3, 7])
    ref, out = run_both(module, x, weights, ids)
    assert (out - ref).abs().max().item() <= 1e-5


def test_default_config_tiles_larger_than_the_layer():
    """pick_config's tiles (64 wide) over a 32 x 16 layer: every load and store past the edges is masked."""
    module = make_experts(8, 32, 16)
    x = torch.randn(3, 32, generator=torch.Generator().manual_seed(4))
    weights, ids = routing(3, 8, 2)
    ref, out = run_both(module, x, weights, ids, config=None)
    assert (out - ref).abs().max().item() <= 1e-5


def test_half_precision_rounds_once():
    """fp16 (the interpreter cannot run bf16 dots: triton-lang/triton#11584) against the fp32 eager result."""
    module = make_experts(8, 64, 48)
    x = torch.randn(17, 64, generator=torch.Generator().manual_seed(5))
    weights, ids = routing(17, 8, 4)
    ref, _ = run_both(module, x, weights, ids)
    with torch.no_grad():
        out = fused_experts(x.half(), module.gate_up_proj.half(), module.down_proj.half(), weights, ids, TINY)
    assert out.dtype == torch.float16
    assert (out.float() - ref).abs().max().item() <= 1e-2 * ref.abs().max().item()


def test_no_tokens():
    module = make_experts(8, 32, 16)
    out = fused_experts(torch.zeros(0, 32), module.gate_up_proj.data, module.down_proj.data,
                        torch.zeros(0, 2), torch.zeros(0, 2, dtype=torch.long), TINY)
    assert out.shape == (0, 32)


@pytest.mark.parametrize("block_m", [1, 4, 16])
@pytest.mark.parametrize("allowed", [None, [0, 3, 7]])
def test_alignment_invariants(block_m, allowed):
    tokens, experts, k = 17, 8, 4 if allowed is None else 2
    _, ids = routing(tokens, experts, k, allowed=allowed)
    pairs = tokens * k
    align = align_pairs(ids, experts, block_m)
    sorted_pairs, block_experts = align.sorted_pairs.long(), align.block_experts.long()
    num_padded = int(align.num_padded.item())
    counts = torch.bincount(ids.flatten(), minlength=experts)

    assert sorted_pairs.numel() == max_padded_rows(pairs, experts, block_m) >= num_padded
    assert sorted_pairs.numel() % block_m == 0 and block_experts.numel() == sorted_pairs.numel() // block_m
    assert num_padded == int(((counts + block_m - 1) // block_m * block_m).sum())
    real = sorted_pairs < pairs
    assert torch.equal(sorted_pairs[real].sort().values, torch.arange(pairs))  # every pair exactly once
    assert torch.all(sorted_pairs[~real] == pairs)  # everything else is marked as padding
    assert not real[num_padded:].any()
    blocks = num_padded // block_m
    assert torch.all(block_experts[blocks:] == -1)
    row_expert = block_experts[:blocks].repeat_interleave(block_m)  # [num_padded] the expert of each used row
    assert torch.equal(row_expert[real[:num_padded]], ids.flatten()[sorted_pairs[:num_padded][real[:num_padded]]])
    assert torch.equal(torch.bincount(block_experts[:blocks], minlength=experts),
                       (counts + block_m - 1) // block_m)  # each expert's run: as few blocks as hold it
    assert torch.all(block_experts[:blocks].diff() >= 0)  # runs in expert order


def test_bad_inputs_raise_clear_errors():
    module = make_experts(8, 32, 16)
    gu, down = module.gate_up_proj.data, module.down_proj.data
    x = torch.randn(3, 32)
    weights, ids = routing(3, 8, 2)
    with pytest.raises(ValueError, match="gate_up_proj must be"):
        fused_experts(x, gu[:, :20], down, weights, ids)
    with pytest.raises(ValueError, match="x must be contiguous"):
        fused_experts(torch.randn(32, 3).t(), gu, down, weights, ids)
    with pytest.raises(ValueError, match="x's dtype"):
        fused_experts(x.half(), gu, down, weights, ids)
    with pytest.raises(ValueError, match="routing weights must be float32"):
        fused_experts(x, gu, down, weights.half(), ids)
    with pytest.raises(ValueError, match=r"weights and ids must both be \[T=3, k\]"):
        fused_experts(x, gu, down, weights[:2], ids[:2])


def test_available(monkeypatch):
    x = torch.zeros(1, 4)
    assert available(x)  # the interpreter runs CPU tensors
    monkeypatch.delenv("TRITON_INTERPRET")
    assert not available(x)  # without it a CPU tensor stays on the eager path


def test_config_table():
    glm = next(iter(CONFIGS))
    assert pick_config(1, *glm).block_m == 16  # decode: one block per routed expert
    assert pick_config(10**6, *glm) == CONFIGS[glm][max(CONFIGS[glm])]
    assert pick_config(1, 8, 48, 64, 2).block_m == 16
