"""The int4 dequant-GEMM Triton kernel against glmv's dequantise-then-matmul reference, run on CPU by Triton's
interpreter (numpy), with weights quantised by glmv.quant.tensors.quantize (compressed-tensors' pack-quantized
layout). GPU speed is benchmarks/bench_int4_gemm.py."""

from __future__ import annotations

import os
from types import SimpleNamespace

os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported: kernels defined afterwards run on CPU

import pytest  # noqa: E402
import torch  # noqa: E402

pytest.importorskip("triton")
pytest.importorskip("compressed_tensors")

from glmv.kernels import int4_gemm  # noqa: E402
from glmv.kernels.int4_gemm import DECODE, PREFILL, Int4Config, available, int4_linear, pick_config  # noqa: E402
from glmv.quant import matmul  # noqa: E402
from glmv.quant.scheme import WeightQuant  # noqa: E402
from glmv.quant.tensors import dequantize, quantize  # noqa: E402

TINY = Int4Config(16, 16, 16, group_m=3)  # smallest dot tile: several programs per axis, groups left partial


def scheme(group: int) -> WeightQuant:
    return WeightQuant("int", 4, "group", group_size=group, packed=True)


def quantized(n: int, k: int, group: int, seed: int = 0, dtype=torch.float32):
    """(packed [N, K/8] int32, scale [N, K/group]) of a random weight scaled so that x @ W^T is O(1)."""
    g = torch.Generator().manual_seed(seed)
    stored = quantize((torch.randn(n, k, generator=g) / k**0.5).to(dtype), scheme(group))
    return stored["weight_packed"], stored["weight_scale"]


def reference(x: torch.Tensor, packed: torch.Tensor, scale: torch.Tensor, group: int) -> torch.Tensor:
    k = x.shape[1]
    return x.float() @ dequantize(packed, scale, scheme(group), k, torch.float32).T


def rows(m: int, k: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(m, k, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("m", [1, 5, 33])
@pytest.mark.parametrize("n", [16, 48])
@pytest.mark.parametrize("k,group", [(64, 32), (64, 64), (128, 32), (128, 64), (128, 128)])
def test_matches_dequantised_matmul(m, n, k, group):
    packed, scale = quantized(n, k, group)
    x = rows(m, k)
    ref = reference(x, packed, scale, group)
    out = int4_linear(x, packed, scale, group)
    assert out.shape == (m, n) and out.dtype == torch.float32
    assert (out - ref).abs().max().item() <= 1e-5
    half = int4_linear(x.half(), packed, scale, group)  # fp16 activations against the fp32 result
    assert half.dtype == torch.float16
    assert (half.float() - ref).abs().max().item() <= 1e-2 * ref.abs().max().item()


@pytest.mark.parametrize("config", [
    TINY,  # K step inside a group: the dot's result is scaled
    TINY._replace(split_k=2),
    TINY._replace(split_k=3),  # uneven splits
    TINY._replace(split_k=16),  # more splits than K steps: some store zeros
    Int4Config(16, 32, 64, group_m=2),  # K step spans two groups: the weight tile is scaled before the dot
    Int4Config(32, 16, 64, group_m=1, split_k=2),
])
def test_tile_configs(config):
    m, n, k, group = 33, 48, 128, 32
    packed, scale = quantized(n, k, group, seed=2)
    x = rows(m, k, seed=3)
    out = int4_linear(x, packed, scale, group, config)
    assert (out - reference(x, packed, scale, group)).abs().max().item() <= 1e-5


@pytest.mark.parametrize("k,group", [(40, 8), (96, 24), (48, 48)])
def test_groups_that_are_not_a_power_of_two_and_k_past_the_last_step(k, group):
    """Groups smaller than the K step or not a power of two take the scale-per-element path; K not a multiple of
    BLOCK_K masks the last step's words (their nibbles read as -8, against zeros of x)."""
    packed, scale = quantized(16, k, group, seed=4)
    x = rows(5, k, seed=5)
    for config in (None, TINY._replace(block_k=32)):
        out = int4_linear(x, packed, scale, group, config)
        assert (out - reference(x, packed, scale, group)).abs().max().item() <= 1e-5


def test_every_nibble_and_negative_words_with_bf16_scales():
    """Random words (every nibble 0..15 in every position, half of the words negative as int32) and bf16 scales.
    The kernel multiplies int and scale in fp32, exactly; compressed-tensors' arithmetic (dequantize) multiplies in
    the scale's dtype, rounding each weight to bf16, so the exact reference dequantises with the scales in fp32."""
    n, k, group = 48, 128, 64
    g = torch.Generator().manual_seed(6)
    packed = torch.randint(-2**31, 2**31 - 1, (n, k // 8), generator=g, dtype=torch.int64).to(torch.int32)
    scale = (torch.rand(n, k // group, generator=g) * 0.1 + 0.01).to(torch.bfloat16)
    x = rows(5, k, seed=7)
    for config in (None, TINY._replace(block_k=128)):  # scaled after the dot, and per element
        out = int4_linear(x, packed, scale, group, config)
        ref = x @ dequantize(packed, scale.float(), scheme(group), k, torch.float32).T
        assert (out - ref).abs().max().item() <= 1e-5 * ref.abs().max().item()
        rounded = x @ dequantize(packed, scale, scheme(group), k, torch.float32).T  # weights rounded to bf16
        assert (out - rounded).abs().max().item() <= 1e-2 * ref.abs().max().item()
    half = int4_linear(x.half(), packed, scale, group)
    assert (half.float() - ref).abs().max().item() <= 1e-2 * ref.abs().max().item()


def test_empty_inputs():
    packed, scale = quantized(16, 64, 32)
    assert int4_linear(torch.zeros(0, 64), packed, scale, 32).shape == (0, 16)
    out = int4_linear(torch.zeros(3, 64).half(), packed[:0], scale[:0], 32)
    assert out.shape == (3, 0) and out.dtype == torch.float16


def test_bad_inputs_raise_clear_errors():
    packed, scale = quantized(16, 64, 32)
    x = rows(3, 64)
    with pytest.raises(ValueError, match="multiple of 8"):
        int4_linear(rows(3, 60), packed, scale, 32)
    with pytest.raises(ValueError, match="of the group size 48"):
        int4_linear(x, packed, scale[:, :1], 48)
    with pytest.raises(ValueError, match=r"packed must be \[N, 8\]"):
        int4_linear(x, packed[:, :4].contiguous(), scale, 32)
    with pytest.raises(ValueError, match=r"scale must be \[16, 2\]"):
        int4_linear(x, packed, scale[:8], 32)
    with pytest.raises(ValueError, match="packed must be int32"):
        int4_linear(x, packed.to(torch.int64), scale, 32)
    with pytest.raises(ValueError, match="x dtype"):
        int4_linear(x.to(torch.int32), packed, scale, 32)
    with pytest.raises(ValueError, match="x must be contiguous"):
        int4_linear(rows(64, 3).t(), packed, scale, 32)
    with pytest.raises(ValueError, match=r"x must be \[M, K\]"):
        int4_linear(x[None], packed, scale, 32)
    with pytest.raises(ValueError, match="powers of two"):
        int4_linear(x, packed, scale, 32, Int4Config(16, 16, 8))


def test_pick_config():
    assert pick_config(1, 2816, 4096, 128)[:3] == DECODE[:3] and pick_config(16, 16, 64, 32).block_m == 16
    assert pick_config(17, 4096, 1408, 128).block_m == PREFILL.block_m
    assert pick_config(1, 64, 4096, 32).block_k == 32  # one group per K step
    assert pick_config(1, 64, 4096, 96).block_k == 32
    assert pick_config(1, 64, 4096, 16).block_k == DECODE.block_k  # tiny groups: scales per element
    assert pick_config(1, 2816, 4096, 128, sm_count=132).split_k == 4  # 44 tiles, 32 K steps
    assert pick_config(1, 4096, 1408, 128, sm_count=132).split_k == 4  # 64 tiles, 11 K steps: 3 per split
    assert pick_config(4096, 4096, 4096, 128, sm_count=132).split_k == 1
    assert pick_config(1, 16, 1 << 16, 128, sm_count=10**4).split_k == int4_gemm.MAX_SPLIT_K


def test_available(monkeypatch):
    x = torch.zeros(1, 8)
    assert available(x)  # the interpreter runs CPU tensors
    monkeypatch.delenv("TRITON_INTERPRET")
    assert not available(x)


def test_fast_matmul_chooses_the_kernel_on_cuda(monkeypatch):
    """fast_matmul's choice, with a stand-in for a CUDA tensor (no GPU here), and the matmul it returns run on CPU."""
    cuda_x = SimpleNamespace(dtype=torch.bfloat16, device=torch.device("cuda"), is_cuda=True)
    monkeypatch.setattr(int4_gemm, "available", lambda x: True)
    fast = matmul.fast_matmul(cuda_x, scheme(32), 16, 64)
    assert fast is matmul.int4_group(32)
    assert matmul.fast_matmul(SimpleNamespace(**{**vars(cuda_x), "dtype": torch.float16}), scheme(32), 16, 64) is fast
    assert matmul.fast_matmul(SimpleNamespace(**{**vars(cuda_x), "dtype": torch.float32}), scheme(32), 16, 64) is None
    assert matmul.fast_matmul(cuda_x, scheme(48), 16, 120) is None  # K is not a multiple of the group
    assert matmul.fast_matmul(cuda_x, WeightQuant("int", 8, "group", group_size=32, packed=True), 16, 64) is None
    assert matmul.fast_matmul(cuda_x, WeightQuant("int", 4, "channel", packed=True), 16, 64) is None
    monkeypatch.setattr(int4_gemm, "available", lambda x: False)
    assert matmul.fast_matmul(cuda_x, scheme(32), 16, 64) is None  # no triton or an older GPU

    packed, scale = quantized(16, 64, 32)
    x = rows(5, 64).half()
    assert torch.equal(fast(x, packed, scale), int4_linear(x, packed, scale, 32))


def test_fast_matmul_on_cpu_is_unchanged():
    """CPU keeps dequantise-then-matmul for packed int4, even where the interpreter could run the kernel."""
    x = torch.zeros(2, 64, dtype=torch.bfloat16)
    assert matmul.fast_matmul(x, scheme(32), 16, 64) is None
    assert matmul.fast_matmul(x, WeightQuant("int", 8, "channel"), 16, 64) is matmul.int8_weight_only
