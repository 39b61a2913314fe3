"""LoRA on the stacked routed experts: equal to experts whose weights are W + s * B @ A, on both expert paths
(grouped GEMMs without grad, the per-expert loop with it), with gradients reaching the adapters only."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

import glmv
from glmv.errors import ConfigError
from glmv.lora import LoraConfig, adapted_modules, adapter_parameters, apply_lora
from glmv.lora.experts import LoraExperts

TOL = 1e-5


class PlusLowRank(nn.Module):
    """The parametrization W -> W + s * B @ A (per expert, batched): the plain definition of an expert LoRA."""

    def __init__(self, a: torch.Tensor, b: torch.Tensor, scaling: float):
        super().__init__()
        self.a, self.b, self.scaling = nn.Parameter(a.detach().clone()), nn.Parameter(b.detach().clone()), scaling

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return w + self.scaling * self.b @ self.a


def adapted_pair(tiny, random_adapter, rslora=False):
    """(glmv model with expert LoRA, a plain glmv model whose experts are parametrized W + s B A, same tensors)."""
    _, path = tiny("glm4v_moe")
    ours = glmv.load_model(path, progress=False)
    apply_lora(ours, LoraConfig(r=4, lora_alpha=8, targets=["experts"], use_rslora=rslora))
    random_adapter(ours)
    plain = glmv.load_model(path, progress=False)
    for name, module in adapted_modules(ours).items():
        experts = plain.get_submodule(name)
        for param, spec in module.specs.items():
            delta = PlusLowRank(module.lora_A[param], module.lora_B[param], spec.scaling)
            parametrize.register_parametrization(experts, param, delta)
    for name, p in plain.named_parameters():
        p.requires_grad_(name.endswith((".a", ".b")))
    return ours, plain


@pytest.fixture
def spy(monkeypatch):
    """Counts the calls of each LoraExperts path."""
    calls = {"_grouped": 0, "_looped": 0}
    for path in calls:
        original = getattr(LoraExperts, path)

        def wrapped(self, *args, _original=original, _path=path):
            calls[_path] += 1
            return _original(self, *args)

        monkeypatch.setattr(LoraExperts, path, wrapped)
    return calls


def test_inference_path_equals_adapted_weights(tiny, batch, logits, random_adapter, spy):
    ours, plain = adapted_pair(tiny, random_adapter)
    glmv_logits, _ = logits
    with torch.no_grad():
        got, want = glmv_logits(ours, batch), glmv_logits(plain, batch)
        base = glmv_logits(glmv.load_model(tiny("glm4v_moe")[1], progress=False), batch)
    assert spy["_grouped"] > 0 and spy["_looped"] == 0  # torch._grouped_mm on CPU, adapters included
    diff = (got - want).abs().max().item()
    print(f"grouped path vs W + sBA: {diff:.2e}")
    assert diff <= TOL
    assert (got - base).abs().max() > 1e-2  # the adapters do change the experts' output


def test_training_path_equals_adapted_weights_with_gradients(tiny, batch, logits, random_adapter, spy):
    ours, plain = adapted_pair(tiny, random_adapter, rslora=True)
    ours.train(), plain.train()
    glmv_logits, _ = logits
    got, want = glmv_logits(ours, batch), glmv_logits(plain, batch)
    assert spy["_looped"] > 0 and spy["_grouped"] == 0
    diff = (got - want).abs().max().item()
    assert diff <= TOL
    got.square().mean().backward()
    want.square().mean().backward()
    worst = 0.0
    for name, module in adapted_modules(ours).items():
        reference = plain.get_submodule(name).parametrizations
        for param in module.specs:
            delta = reference[param][0]
            for ours_t, ref_t in ((module.lora_A[param], delta.a), (module.lora_B[param], delta.b)):
                assert ours_t.grad.abs().max() > 0
                worst = max(worst, (ours_t.grad - ref_t.grad).abs().max().item())
    print(f"looped path vs W + sBA: logits {diff:.2e}, gradients {worst:.2e}")
    assert worst <= TOL
    trained = {n for n, p in ours.named_parameters() if p.grad is not None}
    assert trained and trained <= set(adapter_parameters(ours))  # the experts' own weights stay frozen
    assert not ours.language_model.layers[1].mlp.experts.gate_up_proj.requires_grad


def test_grouped_path_falls_back_when_adapters_break_its_row_rule(tiny, batch, logits, random_adapter, spy):
    # r=2 fp32 rows are 8 bytes: torch._grouped_mm's 16-byte stride rule fails, the loop serves the forward
    _, path = tiny("glm4v_moe")
    model = glmv.load_model(path, progress=False)
    apply_lora(model, LoraConfig(r=2, targets=["experts"]))
    with torch.no_grad():
        logits[0](model, batch)
    assert spy["_looped"] > 0 and spy["_grouped"] == 0


def test_experts_refuse_dora_and_dropout(tiny):
    _, path = tiny("glm4v_moe")
    model = glmv.load_model(path, progress=False)
    with pytest.raises(ConfigError, match="DoRA is for linear layers only"):
        apply_lora(model, LoraConfig(targets=["experts"], use_dora=True))
    with pytest.raises(ConfigError, match="lora_dropout must be 0"):
        apply_lora(model, LoraConfig(targets=["experts"], lora_dropout=0.1))
    assert not adapted_modules(model)  # refused before anything changed
